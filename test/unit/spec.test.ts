import { durationMs, migrationIdFor, parseSpec } from '../../src/spec';
import { specProblems } from '../helpers/spec-problems';

const valid = {
  source: { uri: 'postgresql://app@10.0.0.5:5432/metastore', password: 'env:SOURCE_PASSWORD' },
  target: { uri: 'postgresql://app@new-host/metastore', password: 'file:/run/secrets/target' },
};

const problems = (input: unknown): string[] => specProblems(parseSpec, input);

test('a minimal spec gets every default', () => {
  const spec = parseSpec(valid);
  expect(spec).toMatchObject({ method: 'auto', jobs: 4, dryRun: false, freezeSource: true, dump: { noOwner: true }, timeouts: { copy: '4h' } });
});

test('every problem is reported with its field path', () => {
  const found = problems({
    source: { uri: 'postgresql://app:secret@host/db', password: 'hunter2' },
    target: { uri: 'mysql://x/y' },
    jobs: 0,
    exclude: { tables: ['no_schema'] },
    timeouts: { copy: 'forever' },
    extra: true,
  });
  expect(found).toEqual(
    expect.arrayContaining([
      expect.stringMatching(/^source\.uri: contains a password/),
      expect.stringMatching(/^source\.password: must be a reference like env:/),
      expect.stringMatching(/^target\.uri: must start with postgresql:\/\//),
      expect.stringMatching(/^jobs: /),
      expect.stringMatching(/^exclude\.tables\.0: must be schema-qualified/),
      expect.stringMatching(/^timeouts\.copy: must be a duration/),
      expect.stringMatching(/unknown field\(s\) "extra"/),
    ]),
  );
  expect(found.join('\n')).not.toContain('hunter2');
  expect(found.join('\n')).not.toContain('secret@');
});

test('a URI without a database is refused', () => {
  expect(problems({ ...valid, target: { uri: 'postgresql://app@host' } })).toEqual([expect.stringMatching(/^target\.uri: must name a host and a database/)]);
});

test('the workflow id comes from the spec, or from both endpoints', () => {
  expect(migrationIdFor(parseSpec({ ...valid, id: 'metastore-to-rds' }))).toBe('metastore-to-rds');
  expect(migrationIdFor(parseSpec(valid))).toBe('pgmove-10.0.0.5-metastore-to-new-host-metastore');
});

test('durations', () => {
  expect(durationMs('4h')).toBe(4 * 3600 * 1000);
  expect(durationMs('30s')).toBe(30000);
  expect(() => durationMs('soon')).toThrow('not a duration');
});

test('URI parameters: sslmode allowed, password never', () => {
  expect(parseSpec({ ...valid, target: { uri: 'postgresql://app@rds.example/metastore?sslmode=require' } }).target.uri).toContain('sslmode=require');
  expect(problems({ ...valid, target: { uri: 'postgresql://app@host/db?password=hunter2' } })).toEqual([expect.stringMatching(/^target\.uri: only sslmode/)]);
});

test('dump.extraArgs cannot smuggle connections or filters', () => {
  expect(problems({ ...valid, dump: { extraArgs: ['--dbname=postgresql://u:pw@h/db'] } })).toEqual([expect.stringMatching(/^dump\.extraArgs\.0: connection, output and filter options/)]);
  expect(parseSpec({ ...valid, dump: { extraArgs: ['--no-comments'] } }).dump.extraArgs).toEqual(['--no-comments']);
});

test('include lists schemas or tables, not both', () => {
  expect(problems({ ...valid, include: { schemas: ['public'], tables: ['public.orders'] } })).toEqual([expect.stringMatching(/^include: list either schemas or tables/)]);
});

test('timeouts.stall defaults to 5m, is a duration, and at least 5s', () => {
  expect(parseSpec(valid).timeouts.stall).toBe('5m');
  expect(parseSpec({ ...valid, timeouts: { stall: '20s' } }).timeouts).toMatchObject({ stall: '20s', copy: '4h' });
  expect(problems({ ...valid, timeouts: { stall: 'soon' } })).toEqual([expect.stringMatching(/^timeouts\.stall: must be a duration like 30s/)]);
  expect(problems({ ...valid, timeouts: { stall: '2s' } })).toEqual([expect.stringMatching(/^timeouts\.stall: must be at least 5s .*the default is 5m/)]);
});

test('the id becomes the workflow id: letters, digits, ".", "_" and "-" only', () => {
  expect(problems({ ...valid, id: 'orders to rds' })).toEqual(['id: must be letters, digits, ".", "_" or "-" (it becomes the workflow id)']);
});

test('freeze: hook needs both hooks, and a hook names a program', () => {
  expect(problems({ ...valid, cutover: { freeze: 'hook', freezeHook: ['pause-app'] } })).toEqual([
    'cutover.freeze: freeze: hook needs both cutover.freezeHook and cutover.unfreezeHook (the source must always be unfrozen)',
  ]);
  expect(problems({ ...valid, cutover: { switchHook: [] } })).toEqual(['cutover.switchHook: must name a program, e.g. ["kubectl", "apply", "-f", "db-secret.yaml"]']);
});

test('cutover.freezeHeartbeat is at least 3s; autoCutover.at is an ISO time', () => {
  expect(problems({ ...valid, cutover: { freezeHeartbeat: '1s' } })).toEqual([
    'cutover.freezeHeartbeat: must be at least 3s (the worker sends heartbeats at most every 2 s); the default is 5s',
  ]);
  expect(problems({ ...valid, cutover: { autoCutover: { at: 'tonight at 2' } } })).toEqual(['cutover.autoCutover.at: must be an ISO time like 2026-11-24T02:00:00Z']);
});

test('byte sizes: a number or a size with a unit; the WAL warning not above the limit', () => {
  expect(problems({ ...valid, cutover: { maxLagBytes: '16 megabytes' } })).toEqual(
    expect.arrayContaining([expect.stringMatching(/^cutover\.maxLagBytes: must be a size like 1048576, 512kB, 64MB or 10GB/)]),
  );
  expect(problems({ ...valid, logical: { walWarningBytes: '30GB', walLimitBytes: '20GB' } })).toEqual(['logical.walWarningBytes: must not be above logical.walLimitBytes']);
});

test('dump.extraArgs are long pg_dump options', () => {
  expect(problems({ ...valid, dump: { extraArgs: ['-O'] } })).toEqual(['dump.extraArgs.0: must be a long pg_dump option like --no-comments']);
});
