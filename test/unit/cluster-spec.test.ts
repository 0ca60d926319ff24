/** The cluster spec: defaults merged into each database's spec, every error naming the database and field. */
import { childSpecFor, isClusterSpec, parseClusterSpec, withDatabase } from '../../src/cluster-spec';
import { specProblems } from '../helpers/spec-problems';

const base = {
  id: 'analytics',
  source: { uri: 'postgresql://admin@old:5432/postgres', password: 'env:SOURCE_PASSWORD' },
  target: { uri: 'postgresql://admin@new:5432/postgres?sslmode=require', password: 'file:/run/secrets/target' },
};

const problems = (input: unknown): string[] => specProblems(parseClusterSpec, input);

test('a database entry overrides the shared defaults, objects merged field by field', () => {
  const spec = parseClusterSpec({
    ...base,
    defaults: { method: 'dump', timeouts: { copy: '4h' }, retries: { maximumAttempts: 5 }, dump: { extraArgs: ['--no-comments'] } },
    databases: ['accounts', { name: 'results201709', targetName: 'results_2017', jobs: 1, timeouts: { copy: '12h' } }],
  });
  const child = childSpecFor(spec, { name: 'results201709', targetName: 'results_2017', jobs: 1, timeouts: { copy: '12h' } }) as Record<string, unknown>;
  expect(child).toMatchObject({
    id: 'analytics.results201709',
    method: 'dump',
    jobs: 1,
    timeouts: { copy: '12h' },
    retries: { maximumAttempts: 5 },
    dump: { noOwner: false, extraArgs: ['--no-comments'] },
    source: { uri: 'postgresql://admin@old:5432/results201709', password: 'env:SOURCE_PASSWORD' },
    target: { uri: 'postgresql://admin@new:5432/results_2017?sslmode=require', password: 'file:/run/secrets/target' },
  });
  expect(isClusterSpec(spec)).toBe(true);
  expect(isClusterSpec({ source: {}, target: {} })).toBe(false);
});

test('errors name the database and the field', () => {
  expect(problems({ ...base, databases: [{ name: 'jobs', jobs: 0 }] })).toEqual([expect.stringMatching(/^databases\[jobs\] \(after defaults\): jobs: /)]);
  expect(problems({ ...base, databases: ['a'], defaults: { method: 'teleport' } })[0]).toMatch(/^databases\[postgres\] \(after defaults\): method: /);
  expect(problems({ ...base, databases: [{ name: 'a', dryRun: true }] })[0]).toMatch(/set once for the whole cluster/);
  expect(problems({ ...base, databases: ['a'], exceptDatabases: ['b'] })[0]).toMatch(/^exceptDatabases: only with databases: all/);
  expect(problems({ ...base, databases: [] })[0]).toMatch(/^databases: list at least one database/);
  expect(problems({ ...base, source: { uri: 'postgresql://admin:pw@old/postgres' }, databases: ['a'] }).join('\n')).toMatch(/password/);
  expect(problems({ ...base, databases: ['a'], roles: { passwords: { app: 'hunter2' } } })[0]).toMatch(/^roles\.passwords\.app: must be a reference/);
});

test('mode together takes one switch hook for the cluster, not one per database', () => {
  expect(problems({ ...base, databases: ['a'], defaults: { cutover: { switchHook: ['true'] } } })[0]).toMatch(/top-level cutover\.switchHook/);
  expect(problems({ ...base, databases: ['a'], defaults: { cutover: { switchHook: ['true'] } }, cutover: { mode: 'perDatabase' } })).toEqual([]);
  expect(problems({ ...base, databases: 'all', exceptDatabases: ['scratch'], cutover: { switchHook: ['helm', 'upgrade'] } })).toEqual([]);
});

test('a rollback window is refused in a cluster spec (it switches one database back)', () => {
  expect(problems({ ...base, databases: ['a'], defaults: { cutover: { rollbackWindow: '24h' } } })[0]).toMatch(/^cutover\.rollbackWindow: a rollback window is for single-database migrations/);
  expect(problems({ ...base, databases: [{ name: 'a', cutover: { rollbackWindow: '1h' } }] })[0]).toMatch(/single-database migrations/);
});

test('withDatabase keeps user, host, port and parameters', () => {
  expect(withDatabase('postgresql://u@h:6432/postgres?sslmode=verify-full', 'my db')).toBe('postgresql://u@h:6432/my%20db?sslmode=verify-full');
});
