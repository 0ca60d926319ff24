/**
 * The fixture database (every object kind, odd identifiers, a few hundred thousand rows) migrated
 * offline from PostgreSQL 15 to 18 and to 15, started as an operator would, checked with an
 * independent comparison — and no password anywhere in history, logs or argv.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { databaseAccessState, pgmoveCliAsync, runMigration, watchArgvForSecrets, writeSpec } from '../helpers/migration';
import { compareDatabases, type DbRef } from '../helpers/compare';
import { runSqlFile } from '../../src/dev/pg-cluster';
import { temporalCli } from '../../src/dev/temporal-server';
import { statusQuery } from '../../workflows/messages';
import type { MigrationStatus } from '../../src/model';

const stack = new TestStack();
let source: ClusterHandle;
let target18: ClusterHandle;
let target15: ClusterHandle;

const ref = (cluster: ClusterHandle, database: string): DbRef => ({
  host: cluster.host,
  port: cluster.port,
  user: cluster.superuser,
  password: cluster.superuserPassword,
  database,
});

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target18 = await stack.startCluster('target18', PROJECT_PG18_BIN);
  target15 = await stack.startCluster('target15', DEBIAN_PG15_BIN);
  // The worker gets the source password through its environment (env: reference).
  await stack.startWorker({ PGMOVE_TEST_SOURCE_PASSWORD: source.superuserPassword });
  await adminQuery(source, 'postgres', 'CREATE DATABASE fixture');
  runSqlFile(source, 'fixture', join(__dirname, '..', 'fixtures', 'source.sql'));
  // Roles are global objects (migrated by a later phase); the operator creates the one the grants name.
  for (const target of [target18, target15]) {
    await adminQuery(target, 'postgres', 'CREATE DATABASE fixture');
    await adminQuery(target, 'postgres', 'CREATE ROLE fixture_reader NOLOGIN');
  }
  await adminQuery(target18, 'postgres', 'CREATE DATABASE fixture_snapshot');
  await adminQuery(target15, 'postgres', 'CREATE DATABASE fixture_subset');
});

afterAll(() => stack.stop());

function spec(id: string, target: ClusterHandle, database: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/fixture`, password: 'env:PGMOVE_TEST_SOURCE_PASSWORD' },
    method: 'dump',
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/${database}`, password: stack.secretFile(`${id}-target`, target.superuserPassword) },
    jobs: 3,
    // Small thresholds so the fixture's big table is split into key ranges and small tables batch.
    copy: { splitTablesLargerThanMB: 4, batchSmallTablesUpToMB: 1 },
    ...extra,
  };
}

/** Every string and decoded payload in an object tree (workflow history). */
function allText(value: unknown, out: string[] = []): string[] {
  if (value instanceof Uint8Array) out.push(Buffer.from(value).toString('utf8'));
  else if (typeof value === 'string') out.push(value);
  else if (value && typeof value === 'object') for (const v of Object.values(value)) allText(v, out);
  return out;
}

test('15 → 18 with `pgmove start --wait`: equal, validated, source unfrozen, no secret leaked', async () => {
  const accessBefore = await databaseAccessState(source, 'fixture');
  const secrets = [source.superuserPassword, target18.superuserPassword];
  const argv = watchArgvForSecrets(secrets);
  // Source and target share this machine, so `auto` would not compare during the copy: asked for here.
  const specFile = writeSpec(stack, 'to18', spec('fixture-to-18', target18, 'fixture', { validate: { duringCopy: true } }));
  const cli = await pgmoveCliAsync(stack, ['start', '-f', specFile, '--wait']);
  const sampled = argv.stop();
  expect(cli.stderr).toBe('');
  expect(cli.code).toBe(0);
  expect(cli.stdout).toContain('validation passed');

  // Independent comparison (test/helpers/compare.ts shares no code with pgmove).
  expect(await compareDatabases(ref(source, 'fixture'), ref(target18, 'fixture'))).toEqual([]);

  const handle = stack.client!.workflow.getHandle('fixture-to-18');
  const status: MigrationStatus = await handle.query(statusQuery);
  expect(status.phase).toBe('completed');
  expect(status.totals.tablesDone).toBe(status.totals.tables);
  expect(status.totals.tables).toBeGreaterThan(20);
  expect(status.validation?.ok).toBe(true);
  // Tables were compared right after their copy (the split one with its last range), not again by validation.
  expect(status.validation?.tablesComparedDuringCopy).toBeGreaterThan(20);
  expect(status.validation?.tablesComparedDuringCopy).toBeLessThanOrEqual(status.validation!.tablesChecked!);
  expect(status.validation?.summary).toContain('compared right after their copy');
  expect(await adminQuery(target18, 'fixture', `SELECT nspname FROM pg_namespace WHERE nspname = 'pgmove_scratch'`)).toEqual([]);
  expect(status.cleanupOwed).toEqual([]);
  for (const phase of ['preflight', 'freeze', 'preData', 'copy', 'postData', 'sequences', 'validate', 'cleanup'] as const) {
    expect(status.timings[phase]?.seconds).toBeGreaterThanOrEqual(0);
  }
  const description = await handle.describe();
  expect(description.searchAttributes.MigrationPhase).toEqual(['completed']);

  // The freeze was undone exactly.
  expect(await databaseAccessState(source, 'fixture')).toEqual(accessBefore);

  // No password in the history (payloads decoded), the worker's log, or any process's argv.
  const history = allText(await handle.fetchHistory()).join('\n');
  expect(history).toContain('env:PGMOVE_TEST_SOURCE_PASSWORD');
  const logs = stack.workers.map((w) => readFileSync(w.logFile, 'utf8')).join('\n');
  expect(logs).toContain('unit copied');
  for (const secret of secrets) {
    expect(history).not.toContain(secret);
    expect(logs).not.toContain(secret);
    expect(cli.stdout).not.toContain(secret);
  }
  expect(sampled.samples).toBeGreaterThan(10);
  expect(sampled.leaks).toEqual([]);
});

test('15 → 15 started and queried with the plain temporal CLI', async () => {
  const specFile = writeSpec(stack, 'to15', spec('fixture-to-15', target15, 'fixture'));
  const address = stack.temporal!.address;
  const start = spawnSync(temporalCli(), ['workflow', 'start', '--address', address, '--task-queue', stack.taskQueue, '--type', 'migrateDatabase', '--workflow-id', 'fixture-to-15', '--input-file', specFile], { encoding: 'utf8' });
  expect(start.status).toBe(0);
  const result = spawnSync(temporalCli(), ['workflow', 'result', '--address', address, '--workflow-id', 'fixture-to-15'], { encoding: 'utf8', timeout: 600_000 });
  expect(result.status).toBe(0);
  const query = spawnSync(temporalCli(), ['workflow', 'query', '--address', address, '--workflow-id', 'fixture-to-15', '--type', 'status', '--output', 'json'], { encoding: 'utf8' });
  expect(query.status).toBe(0);
  expect(query.stdout).toContain('"phase": "completed"');
  // validate.duringCopy auto, source and target on one host: validation compared every table itself.
  expect(query.stdout).toContain('"tablesComparedDuringCopy": 0');
  expect(await compareDatabases(ref(source, 'fixture'), ref(target15, 'fixture'))).toEqual([]);
});

test('freezeSource: false copies at one snapshot while the source keeps taking writes', async () => {
  const accessBefore = await databaseAccessState(source, 'fixture');
  await adminQuery(source, 'fixture', 'CREATE TABLE public.live_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())');
  const handle = await stack.client!.workflow.start('migrateDatabase', {
    taskQueue: stack.taskQueue,
    workflowId: 'fixture-snapshot',
    args: [spec('fixture-snapshot', target18, 'fixture_snapshot', { freezeSource: false })],
  });
  // An application writing all along (bounded: it stops when the migration ends).
  let writes = 0;
  let done = false;
  const result = handle.result().finally(() => (done = true));
  const writer = (async () => {
    while (!done && writes < 100_000) {
      await adminQuery(source, 'fixture', 'INSERT INTO public.live_writes DEFAULT VALUES');
      writes += 1;
    }
  })();
  await result;
  await writer;
  expect(writes).toBeGreaterThan(5);
  const status = await handle.query(statusQuery);
  expect(status.validation?.ok).toBe(true);
  expect(status.timings.freeze).toBeUndefined();
  expect(status.preflight?.notes.join('\n')).toContain('one exported snapshot');
  expect(await databaseAccessState(source, 'fixture')).toEqual(accessBefore);
  // Everything but the table the application kept writing is equal; that one holds a prefix.
  const differences = await compareDatabases(ref(source, 'fixture'), ref(target18, 'fixture_snapshot'));
  expect(differences.filter((d) => !d.object.includes('live_writes'))).toEqual([]);
  const [copied] = await adminQuery<{ n: number; max: number }>(target18, 'fixture_snapshot', 'SELECT count(*)::int AS n, coalesce(max(id), 0)::int AS max FROM public.live_writes');
  expect(copied!.n).toBe(copied!.max);
  expect(copied!.n).toBeLessThan(writes);
});

test('include.tables naming plain tables and a partitioned parent copies exactly those tables, every row', async () => {
  const result = await runMigration(stack, { ...spec('fixture-subset', target15, 'fixture_subset', { include: { schemas: [], tables: ['public.sensors', 'public.measurements', 'public.no_pk_log'] } }), method: 'dump' });
  expect(result.status.validation?.ok).toBe(true);
  const tablesOf = async (cluster: ClusterHandle, database: string) =>
    (await adminQuery<{ t: string }>(cluster, database, `SELECT c.oid::regclass::text AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)).map((r) => r.t);
  const wanted = ['measurements', 'measurements_2023', 'measurements_2024', 'measurements_default', 'no_pk_log', 'sensors'];
  expect(await tablesOf(target15, 'fixture_subset')).toEqual(wanted);
  // Before the filter matched a plain table by its own name, sensors and no_pk_log were created empty.
  expect(result.status.validation?.tablesChecked).toBe(5);
  expect(result.status.validation?.rowsChecked).toBeGreaterThan(10);
  for (const table of wanted) {
    const count = async (cluster: ClusterHandle, database: string) => (await adminQuery<{ n: string }>(cluster, database, `SELECT count(*) AS n FROM public.${table}`))[0]!.n;
    expect(await count(target15, 'fixture_subset')).toBe(await count(source, 'fixture'));
  }
});
