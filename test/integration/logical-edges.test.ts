/**
 * The logical method's edges: method choice on a wal_level=replica source (auto falls back to dump
 * with the reason; forced logical fails in pre-flight with the fix), cutover driven by the plain
 * `temporal` CLI (signal and update), abort during syncing (the source exactly as before), and the
 * retained-WAL guardrail (the migration aborts and drops its slot before the source's disk fills).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { databaseAccessState, migrationFailure, runMigration, startMigration, userObjects } from '../helpers/migration';
import { createOnlineTarget, createPgbenchSource, pgbenchSums, replicaIdentities, replicationLeftovers, waitForStatus, type OnlineDatabase } from '../helpers/online';
import { temporalCli } from '../../src/dev/temporal-server';
import { requestCutoverUpdate, statusQuery } from '../../workflows/messages';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { waitFor } from '../../src/dev/ports';
import type { MigrationSpecInput } from '../../src/spec';
import type { MigrationResult } from '../../workflows/migrate-database';

const stack = new TestStack();
let source: ClusterHandle;
let replicaSource: ClusterHandle;
let target: ClusterHandle;
let sourceDb: OnlineDatabase;
let replicaDb: OnlineDatabase;

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  replicaSource = await stack.startCluster('replica15', DEBIAN_PG15_BIN, { wal_level: 'replica' });
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await stack.startWorker();
  sourceDb = await createPgbenchSource(source, 'app', 1);
  replicaDb = await createPgbenchSource(replicaSource, 'app', 1);
});

afterAll(() => stack.stop());

async function spec(id: string, from: OnlineDatabase, extra: Partial<MigrationSpecInput> = {}): Promise<MigrationSpecInput> {
  const to = await createOnlineTarget(target, id.replace(/-/g, '_'));
  return {
    id,
    source: { uri: from.uri, password: stack.secretFile(`${id}-s`, from.password) },
    target: { uri: to.uri, password: stack.secretFile(`${id}-t`, to.password) },
    logical: { replicaIdentityFull: true, statusInterval: '1s' },
    ...extra,
    // Every test migrates the same source again: writable after each switch (the fence that stays is
    // tested in logical-migration.test.ts).
    cutover: { sourceAfterSwitch: 'writable', ...extra.cutover },
  };
}

function temporal(...args: string[]): { code: number | null; out: string } {
  const result = spawnSync(temporalCli(), [...args, '--address', stack.temporal!.address], { encoding: 'utf8' });
  return { code: result.status, out: result.stdout + result.stderr };
}

test('wal_level=replica: auto falls back to dump and says why; forced logical fails in pre-flight with the fix', async () => {
  const result = await runMigration(stack, await spec('replica-auto', replicaDb));
  expect(result.status.method).toBe('dump');
  expect(result.status.methodReason).toContain('wal_level is replica: logical needs wal_level = logical');
  expect(result.status.methodReason).toContain('ALTER SYSTEM SET wal_level = logical');
  expect(result.status.validation?.ok).toBe(true);

  const forced = await spec('replica-forced', replicaDb, { method: 'logical' });
  const failure = await migrationFailure(await startMigration(stack, forced));
  expect(failure.type).toBe('PreflightFailed');
  expect(failure.message).toContain('wal_level is replica');
  expect(failure.message).toContain('fix: ALTER SYSTEM SET wal_level = logical; then restart the source server');
  expect(await userObjects(target, 'replica_forced')).toEqual([]);
  expect(await replicationLeftovers(replicaSource, 'app')).toEqual([]);
});

test('cutover with the plain temporal CLI: a signal while copying is ignored, the update is answered', async () => {
  const input = await spec('temporal-cli', sourceDb, { method: 'logical' });
  const handle = await startMigration(stack, input);
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true);
  await adminQuery(source, 'app', `SET ROLE app; INSERT INTO events (aid) SELECT g FROM generate_series(1, 500) g`);
  const update = temporal('workflow', 'update', 'execute', '--workflow-id', 'temporal-cli', '--name', 'requestCutover', '--input', '{"approvedBy":"ops-cli"}');
  expect(update.code).toBe(0);
  expect(update.out).toContain('cutover accepted');
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.phase).toBe('completed');
  expect(result.status.cutovers?.[0]?.requestedBy).toBe('ops-cli');
  expect(await pgbenchSums(target, 'temporal_cli')).toEqual(await pgbenchSums(source, 'app'));
  expect(await replicationLeftovers(source, 'app')).toEqual([]);

  // The signal form, on a second migration: ignored (with a warning) before syncing, obeyed when syncing.
  const second = await startMigration(stack, await spec('temporal-signal', sourceDb, { method: 'logical' }));
  const early = temporal('workflow', 'signal', '--workflow-id', 'temporal-signal', '--name', 'cutover', '--input', '{"approvedBy":"too-early"}');
  expect(early.code).toBe(0);
  await waitForStatus(second, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true);
  expect((await second.query(statusQuery)).warnings?.join('\n')).toMatch(/cutover signal ignored: not syncing yet/);
  expect(temporal('workflow', 'signal', '--workflow-id', 'temporal-signal', '--name', 'cutover', '--input', '{"approvedBy":"ops-signal"}').code).toBe(0);
  const done = (await second.result()) as MigrationResult;
  expect(done.status.cutovers?.map((c) => c.requestedBy)).toEqual(['ops-signal']);
  expect(await pgbenchSums(target, 'temporal_signal')).toEqual(await pgbenchSums(source, 'app'));
});

test('abort during syncing: no slot, publication or subscription left; the source exactly as before', async () => {
  const accessBefore = await databaseAccessState(source, 'app');
  const identitiesBefore = await replicaIdentities(source, 'app');
  const handle = await startMigration(stack, await spec('abort-syncing', sourceDb, { method: 'logical' }));
  // Measured once: the subscription exists, and the copy's unit publications have been dropped.
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication !== undefined);
  expect(await replicationLeftovers(source, 'app')).toHaveLength(2); // the slot and the publication
  expect(temporal('workflow', 'signal', '--workflow-id', 'abort-syncing', '--name', 'abort', '--input', '{"reason":"changed our mind"}').code).toBe(0);
  const failure = await migrationFailure(handle);
  expect(failure.type).toBe('Aborted');
  const status = await handle.query(statusQuery);
  expect(status.cleanupOwed).toEqual([]);
  expect(await replicationLeftovers(source, 'app')).toEqual([]);
  expect(await replicationLeftovers(target, 'abort_syncing')).toEqual([]);
  expect(await userObjects(target, 'abort_syncing')).toEqual([]);
  expect(await databaseAccessState(source, 'app')).toEqual(accessBefore);
  expect(await replicaIdentities(source, 'app')).toEqual(identitiesBefore);
  // Writable by the application.
  await adminQuery(source, 'app', `SET ROLE app; INSERT INTO events (aid) VALUES (1)`);
});

test('retained WAL above logical.walLimitBytes: the migration aborts and drops its slot', async () => {
  const handle = await startMigration(stack, await spec('wal-limit', sourceDb, { method: 'logical', logical: { replicaIdentityFull: true, statusInterval: '1s', walWarningBytes: '1MB', walLimitBytes: '8MB' } }));
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true);
  // The target stops applying; the source keeps writing.
  const [sub] = await adminQuery<{ subname: string }>(target, 'wal_limit', 'SELECT subname FROM pg_subscription');
  await adminQuery(target, 'wal_limit', `ALTER SUBSCRIPTION ${sub!.subname} DISABLE`);
  await adminQuery(source, 'app', `SET ROLE app; INSERT INTO events (aid) SELECT g FROM generate_series(1, 20000) g`);
  const warned = await waitForStatus(handle, 'the WAL warning', (s) => (s.replication?.retainedWalBytes ?? 0) > 1024 * 1024);
  expect(warned.replication?.warning).toMatch(/the slot holds .* of WAL on the source \(warning at 1.0 MB, abort at 8.0 MB\)/);
  await adminQuery(source, 'app', `SET ROLE app; INSERT INTO events (aid) SELECT g FROM generate_series(1, 200000) g`);
  const failure = await migrationFailure(handle);
  expect(failure.type).toBe('WalLimitExceeded');
  expect(failure.message).toContain('above logical.walLimitBytes');
  expect(await replicationLeftovers(source, 'app')).toEqual([]);
  expect(await replicationLeftovers(target, 'wal_limit')).toEqual([]);
});

test('a long sync continues as new runs (short histories) and still cuts over with nothing lost', async () => {
  const input = await spec('long-sync', sourceDb, { method: 'logical', logical: { replicaIdentityFull: true, statusInterval: '100ms', historyEventsPerRun: 100 } });
  const handle = await startMigration(stack, input);
  const firstRun = (await handle.describe()).runId;
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing');
  await adminQuery(source, 'app', `SET ROLE app; INSERT INTO events (aid) SELECT g FROM generate_series(1, 300) g`);
  // Two more runs at least, each with a history under the limit (plus the few events of a run's end).
  const runs = await waitFor('two continued runs', async () => {
    const list = [];
    for await (const run of stack.client!.workflow.list({ query: `WorkflowId = 'long-sync'` })) list.push(run);
    return list.length >= 3 ? list : undefined;
  }, 120_000, 500);
  expect(runs.some((r) => r.runId !== firstRun)).toBe(true);
  const continued = runs.filter((r) => r.status.name === 'CONTINUED_AS_NEW');
  expect(continued.length).toBeGreaterThanOrEqual(2);
  for (const run of continued) expect(run.historyLength).toBeGreaterThanOrEqual(100);
  for (const run of continued) expect(run.historyLength).toBeLessThan(130);
  const status = await handle.query(statusQuery);
  expect(status.phase).toBe('syncing');
  expect(status.totals.tables).toBeGreaterThan(0); // the status came along
  await adminQuery(source, 'app', `SET ROLE app; INSERT INTO events (aid) SELECT g FROM generate_series(1, 300) g`);
  await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'after-continue-as-new' }] });
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.validation?.ok).toBe(true);
  expect(await pgbenchSums(target, 'long_sync')).toEqual(await pgbenchSums(source, 'app'));
  expect(await replicationLeftovers(source, 'app')).toEqual([]);
});

test('schema drift: a new table rejects the request, a changed column refuses the cutover; unlogged tables and large objects come over inside the freeze (hook strategy)', async () => {
  const log = `${stack.dir}/hooks.log`;
  await adminQuery(source, 'app', `SET ROLE migrator;
    CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, note text);
    SELECT lo_from_bytea(0, convert_to(repeat('large object ', 1000), 'UTF8'));`);
  const handle = await startMigration(stack, await spec('drift', sourceDb, {
    method: 'logical',
    cutover: { freeze: 'hook', freezeHook: ['sh', '-c', `echo freeze >> ${log}`], unfreezeHook: ['sh', '-c', `echo unfreeze >> ${log}`] },
  }));
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true);
  // Written after the copy: only the cutover can bring these over.
  await adminQuery(source, 'app', `SET ROLE migrator; INSERT INTO scratch SELECT g, 'row ' || g FROM generate_series(1, 1000) g; CREATE TABLE late_table (id int PRIMARY KEY);`);
  const warned = await waitForStatus(handle, 'the new table in the status', (s) => (s.replication?.newTables ?? []).includes('public.late_table'));
  expect(warned.replication?.warning).toContain('public.late_table');

  // A new table: the request is rejected up front, nothing is frozen.
  const rejected = await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'drift-0' }] }).catch((error: Error) => error);
  expect((rejected as WorkflowUpdateFailedError).cause?.message).toContain('tables were created on the source since the start and are not replicated: public.late_table');
  await adminQuery(source, 'app', `SET ROLE migrator; DROP TABLE late_table;`);
  await waitForStatus(handle, 'the new table gone from the status', (s) => s.replication?.newTables.length === 0);

  // A changed column: found inside the freeze, the cutover is refused and the source unfrozen (by the hook).
  await adminQuery(source, 'app', `SET ROLE migrator; ALTER TABLE pgbench_branches ADD COLUMN note text;`);
  await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'drift-1' }] });
  const refused = await waitForStatus(handle, 'the refused cutover', (s) => s.phase === 'syncing' && s.cutovers?.[0]?.outcome === 'failed');
  expect(refused.cutovers![0]!.error).toContain('columns changed on the source after the start: public.pgbench_branches');
  expect(readFileSync(log, 'utf8').split('\n').filter(Boolean)).toEqual(['freeze', 'unfreeze']);

  await adminQuery(source, 'app', `SET ROLE migrator; ALTER TABLE pgbench_branches DROP COLUMN note;`);
  await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'drift-2' }] });
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.validation?.ok).toBe(true);
  expect(result.status.validation?.largeObjects).toMatchObject({ source: 1, target: 1, ok: true });
  const [rows] = await adminQuery<{ n: string }>(target, 'drift', 'SELECT count(*)::text AS n FROM scratch');
  expect(rows!.n).toBe('1000');
  expect(readFileSync(log, 'utf8').split('\n').filter(Boolean)).toEqual(['freeze', 'unfreeze', 'freeze', 'unfreeze']);
  expect(await replicationLeftovers(source, 'app')).toEqual([]);
});

test('autoCutover: true cuts over on its own once the lag is small', async () => {
  const handle = await startMigration(stack, await spec('auto-cutover', sourceDb, { method: 'logical', cutover: { autoCutover: true } }));
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.cutovers?.map((c) => [c.requestedBy, c.outcome])).toEqual([['autoCutover', 'switched']]);
  expect(result.status.validation?.ok).toBe(true);
  expect(await pgbenchSums(target, 'auto_cutover')).toEqual(await pgbenchSums(source, 'app'));
});
