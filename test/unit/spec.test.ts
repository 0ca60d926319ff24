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
