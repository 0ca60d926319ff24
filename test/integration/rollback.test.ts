/**
 * cutover.rollbackWindow (issue 17): after the switch the target's changes stream back to the old source.
 * pgbench writes to the source, the cutover switches, pgbench writes to the target, then:
 *  - `pgmove rollback` (the worker SIGKILLed while the rollback's switch hook runs): the old source holds
 *    every write made on the target, pgbench's invariants hold there, it is writable again and the target
 *    is fenced;
 *  - `pgmove finalize` (the worker SIGKILLed while the window is open): the reverse stream is dropped, the
 *    old source stays fenced and holds everything written on the target until then.
 * No slot, publication or subscription is left on either server. A PostgreSQL 15 source whose role may not
 * create subscriptions is refused at the start, with the fix.
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { migrationFailure, pgmoveCliAsync, startMigration } from '../helpers/migration';
import { compareDatabases } from '../helpers/compare';
import { appClient, createOnlineTarget, createPgbenchSource, pgbenchSums, replicationLeftovers, startPgbench, STATEMENT_LOGGING_SETTINGS, waitForStatus, type OnlineDatabase, type PgbenchRun } from '../helpers/online';
import { waitFor } from '../../src/dev/ports';
import { stopWorkerProcess, type WorkerHandle } from '../../src/dev/worker-process';
import { requestCutoverUpdate } from '../../workflows/messages';
import { renderStatusMarkdown } from '../../workflows/status-markdown';
import type { WorkflowHandle } from '@temporalio/client';
import type { MigrationResult } from '../../workflows/migrate-database';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
let sourceDb: OnlineDatabase;
let worker: WorkerHandle;
const runs: PgbenchRun[] = [];

beforeAll(async () => {
  await stack.startTemporal();
  // PostgreSQL 16+ on both sides: a non-superuser may own the reverse subscription (pg_create_subscription).
  source = await stack.startCluster('source18', PROJECT_PG18_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  worker = await stack.startWorker();
  sourceDb = await createPgbenchSource(source, 'shop', 5);
  await adminQuery(source, 'postgres', `GRANT pg_create_subscription TO migrator; GRANT SET ON PARAMETER ${STATEMENT_LOGGING_SETTINGS.join(', ')} TO migrator`);
  // The target's migration role publishes and fences the target for a rollback.
  await createOnlineTarget(target, 'rollback_roles');
  await adminQuery(target, 'postgres', 'ALTER ROLE migrator REPLICATION; GRANT pg_signal_backend TO migrator');
});

afterAll(async () => {
  for (const run of runs) await run.stop();
  await stack.stop();
});

jest.setTimeout(900_000);

async function start(id: string, cutover: Record<string, unknown>): Promise<{ handle: WorkflowHandle; database: string }> {
  const database = id.replace(/-/g, '_');
  const to = await createOnlineTarget(target, database);
  const handle = await startMigration(stack, {
    id,
    source: { uri: sourceDb.uri, password: stack.secretFile(`${id}-s`, sourceDb.password) },
    target: { uri: to.uri, password: stack.secretFile(`${id}-t`, to.password) },
    method: 'logical',
    jobs: 2,
    // pgbench_history has no key: REPLICA IDENTITY FULL on the source, and for the window on the target.
    logical: { statusInterval: '1s', replicaIdentityFull: true },
    timeouts: { heartbeat: '5s' },
    cutover: { rollbackWindow: '1h', ...cutover },
  });
  return { handle, database };
}

/** pgbench on the source, the cutover once syncing; returns when the window is open and the reverse stream streams. */
async function cutOverUnderLoad(handle: WorkflowHandle): Promise<void> {
  const onSource = startPgbench(stack, source, 'shop', 2, 100);
  runs.push(onSource);
  await waitFor('cutover accepted', async () => {
    await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true, 300_000);
    return handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'test' }] }).then(() => true, () => false);
  }, 300_000, 500);
  await waitForStatus(handle, 'the rollback window', (s) => s.phase === 'rollbackWindow' && s.rollback?.reverse?.streaming === true, 300_000);
  // The freeze ended pgbench's sessions on the source.
  await onSource.stop();
}

/** pgbench on the target until it has committed `transactions` more; returns the run (still writing). */
async function writeOnTarget(database: string, transactions: number): Promise<PgbenchRun> {
  const before = Number((await pgbenchSums(target, database)).historyRows);
  const run = startPgbench(stack, target, database, 2, 100);
  runs.push(run);
  await waitFor(`${transactions} pgbench transactions on the target`, async () => Number((await pgbenchSums(target, database)).historyRows) >= before + transactions, 300_000, 200);
  return run;
}

const ref = (c: ClusterHandle, database: string) => ({ host: c.host, port: c.port, user: c.superuser, password: c.superuserPassword, database });

async function appCanConnect(cluster: ClusterHandle, database: string): Promise<boolean> {
  return appClient(cluster, database).then(async (client) => (await client.end(), true), () => false);
}

test('rollback under pgbench, the worker killed during its switch hook: the source holds every write made on the target and is live again', async () => {
  const marker = join(stack.dir, 'rollback-hook-ran');
  const go = join(stack.dir, 'rollback-hook-go');
  // The forward switch passes at once; the rollback's waits for the test (so the worker can be killed in it).
  const hook = ['sh', '-c', `[ "$PGMOVE_DIRECTION" = rollback ] || exit 0; touch ${marker}; for i in $(seq 1200); do [ -f ${go} ] && exit 0; sleep 0.05; done; exit 4`];
  const { handle, database } = await start('rollback-main', { switchHook: hook, sourceAfterSwitch: 'frozen' });

  const early = await pgmoveCliAsync(stack, ['rollback', 'rollback-main']);
  expect(early.stdout).toMatch(/rejected: the migration has not cut over yet/);

  await cutOverUnderLoad(handle);
  const cutover = (await waitForStatus(handle, 'the cutover attempt', (s) => s.cutovers?.[0]?.outcome === 'switched')).cutovers![0]!;
  console.log(`cutover with a rollback window: write freeze ${cutover.freezeToReadyMs} ms until the target was ready, of which ${cutover.steps?.reverseStream} ms creating the reverse stream`);
  // The forward stream is gone; the reverse one runs: its subscription on the source, slot and publication on the target.
  expect(await replicationLeftovers(source, 'shop')).toEqual([expect.stringMatching(/^subscription pgmove_rollback_main_[0-9a-f]{8}_rb$/)]);
  expect((await replicationLeftovers(target, database)).map((o) => o.split(' ')[0])).toEqual(['publication', 'slot']);
  expect(await appCanConnect(source, 'shop')).toBe(false);

  const onTarget = await writeOnTarget(database, 300);
  const status = await waitForStatus(handle, 'the reverse stream measured', (s) => (s.rollback?.reverse?.lagBytes ?? 1) >= 0 && s.rollback?.state === 'open');
  expect(renderStatusMarkdown(status)).toMatch(/rollback window\*\*: open until .*pgmove rollback rollback-main/);

  const asked = await pgmoveCliAsync(stack, ['rollback', 'rollback-main', '--reason', 'planner regression']);
  expect(asked.stdout).toMatch(/^accepted: rollback accepted/);
  await waitFor('the rollback switch hook to run', async () => existsSync(marker), 120_000, 20);
  rmSync(marker);
  await stopWorkerProcess(worker, 'SIGKILL');
  worker = await stack.startWorker();
  // The retry finds the switch under way (recorded on the target) and runs the hook again.
  await waitFor('the retried rollback switch hook', async () => existsSync(marker), 120_000, 20);
  writeFileSync(go, '');
  const result = (await handle.result()) as MigrationResult;
  await onTarget.stop();

  expect(result.status.phase).toBe('completed');
  expect(result.status.rollback?.state).toBe('rolledBack');
  expect(result.status.rollback?.attempts?.map((a) => a.outcome)).toEqual(['switched']);
  expect(result.status.validation?.ok).toBe(true);
  const [onSource, onTargetSums] = [await pgbenchSums(source, 'shop'), await pgbenchSums(target, database)];
  expect(onSource).toEqual(onTargetSums);
  expect(onSource.accounts).toBe(onSource.history);
  // The target is fenced until released; then every row, sequence and schema object it had at the rollback is on the source.
  expect(await appCanConnect(target, database)).toBe(false);
  const released = await pgmoveCliAsync(stack, ['unfreeze', 'rollback-main']);
  expect(released.stdout).toContain('rollback-main: target writable again');
  expect(await appCanConnect(target, database)).toBe(true);
  expect(await compareDatabases(ref(target, database), ref(source, 'shop'))).toEqual([]);
  // The source takes the application's writes again, its sequences past the target's.
  const app = await appClient(source, 'shop');
  try {
    const next = (await app.query<{ id: string }>('INSERT INTO events (aid) VALUES (1) RETURNING id::text AS id')).rows[0]!.id;
    expect(BigInt(next)).toBeGreaterThan(BigInt(onTargetSums.eventsMax));
  } finally {
    await app.end();
  }
  expect(await replicationLeftovers(source, 'shop')).toEqual([]);
  expect(await replicationLeftovers(target, database)).toEqual([]);
});

test('finalize after the worker was killed in the window: the reverse stream is dropped, the source kept everything until then and stays fenced', async () => {
  const { handle, database } = await start('rollback-finalize', { sourceAfterSwitch: 'frozen' });
  await cutOverUnderLoad(handle);
  const onTarget = await writeOnTarget(database, 200);
  await stopWorkerProcess(worker, 'SIGKILL');
  worker = await stack.startWorker();
  await onTarget.stop();
  // The new worker measures the stream again; the source catches up with everything written on the target.
  const caughtUp = await waitForStatus(handle, 'the source to catch up', (s) => s.rollback?.reverse?.streaming === true && s.rollback.reverse.lagBytes === 0, 300_000);
  expect(caughtUp.phase).toBe('rollbackWindow');
  await waitFor('equal sums on both servers', async () => JSON.stringify(await pgbenchSums(source, 'shop')) === JSON.stringify(await pgbenchSums(target, database)), 120_000, 200);

  const asked = await pgmoveCliAsync(stack, ['finalize', 'rollback-finalize', '--wait']);
  expect(asked.stdout).toMatch(/accepted: finalize accepted/);
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.phase).toBe('completed');
  expect(result.status.rollback?.state).toBe('finalized');
  expect(result.status.rollback?.endedBecause).toMatch(/finalized by/);
  expect(await replicationLeftovers(source, 'shop')).toEqual([]);
  expect(await replicationLeftovers(target, database)).toEqual([]);
  expect(await appCanConnect(source, 'shop')).toBe(false);
  const after = await pgmoveCliAsync(stack, ['rollback', 'rollback-finalize']);
  expect(after.stdout + after.stderr).toMatch(/rejected|not running|completed/);
  // Released for the next test's migration, as an operator would. Sequences are not streamed: the old
  // source's events sequence is where the cutover left it, behind the rows the target sent back.
  expect((await pgmoveCliAsync(stack, ['unfreeze', 'rollback-finalize'])).code).toBe(0);
  await adminQuery(source, 'shop', `SELECT setval('events_id_seq', (SELECT max(id) FROM events))`);
  expect(await appCanConnect(source, 'shop')).toBe(true);
});

test('a rollback whose switch hook fails: the source is fenced again, the target unfenced, the reverse stream resumes and the window stays open', async () => {
  const hook = ['sh', '-c', '[ "$PGMOVE_DIRECTION" = rollback ] && { echo "the load balancer refused" >&2; exit 3; }; exit 0'];
  const { handle, database } = await start('rollback-hook-fails', { switchHook: hook, sourceAfterSwitch: 'frozen', hookTimeout: '30s' });
  await cutOverUnderLoad(handle);
  const first = await writeOnTarget(database, 100);
  await first.stop();
  expect((await pgmoveCliAsync(stack, ['rollback', 'rollback-hook-fails'])).stdout).toMatch(/^accepted/);
  const failed = await waitForStatus(handle, 'the failed rollback, back in the window', (s) => s.phase === 'rollbackWindow' && s.rollback?.attempts?.[0]?.outcome === 'failed' && s.rollback.reverse?.streaming === true, 300_000);
  expect(failed.rollback?.attempts?.[0]?.error).toMatch(/the load balancer refused/);
  expect(failed.errors.join('\n')).toMatch(/rollback failed, the target unfenced, the window stays open/);
  expect(await appCanConnect(target, database)).toBe(true);
  expect(await appCanConnect(source, 'shop')).toBe(false);
  // The stream carries on: what the target writes now reaches the source.
  const second = await writeOnTarget(database, 100);
  await second.stop();
  await waitFor('the source to catch up again', async () => JSON.stringify(await pgbenchSums(source, 'shop')) === JSON.stringify(await pgbenchSums(target, database)), 120_000, 200);
  expect((await pgmoveCliAsync(stack, ['finalize', 'rollback-hook-fails'])).stdout).toMatch(/^accepted/);
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.rollback?.state).toBe('finalized');
  expect(await replicationLeftovers(source, 'shop')).toEqual([]);
  expect(await replicationLeftovers(target, database)).toEqual([]);
  expect((await pgmoveCliAsync(stack, ['unfreeze', 'rollback-hook-fails'])).code).toBe(0);
});

test('the window ends by itself: the reverse stream is dropped and the migration completes on the target', async () => {
  const { handle, database } = await start('rollback-window-ends', { rollbackWindow: '20s', sourceAfterSwitch: 'writable' });
  await cutOverUnderLoad(handle);
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.rollback?.state).toBe('finalized');
  expect(result.status.rollback?.endedBecause).toBe('the window (20s) ended');
  expect(Date.parse(result.status.timings.rollbackWindow!.endedAt!) - Date.parse(result.status.rollback!.openedAt)).toBeGreaterThanOrEqual(20_000);
  expect(await replicationLeftovers(source, 'shop')).toEqual([]);
  expect(await replicationLeftovers(target, database)).toEqual([]);
  // sourceAfterSwitch: writable — the old source is released when the window ends.
  expect(await appCanConnect(source, 'shop')).toBe(true);
});

test('a PostgreSQL 15 source whose role may not create subscriptions: refused at the start, with the fix', async () => {
  const old = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  const db = await createPgbenchSource(old, 'legacy', 1);
  const to = await createOnlineTarget(target, 'rollback_refused');
  const handle = await startMigration(stack, {
    id: 'rollback-refused',
    source: { uri: db.uri, password: stack.secretFile('refused-s', db.password) },
    target: { uri: to.uri, password: stack.secretFile('refused-t', to.password) },
    method: 'logical',
    logical: { replicaIdentityFull: true },
    cutover: { rollbackWindow: '2h' },
  });
  const failure = await migrationFailure(handle);
  expect(failure.message).toMatch(/before PostgreSQL 16 only a superuser creates subscriptions/);
  // Nothing was written: the target is still empty.
  expect(await adminQuery(target, 'rollback_refused', `SELECT 1 FROM pg_class WHERE relnamespace = 'public'::regnamespace`)).toEqual([]);
});

test('a target whose role can neither keep a slot nor fence it: refused at the start, each with its fix', async () => {
  await adminQuery(target, 'postgres', `CREATE ROLE plain_owner LOGIN PASSWORD 'plain-owner-pw'`);
  await adminQuery(target, 'postgres', 'CREATE DATABASE rollback_plain OWNER plain_owner');
  const handle = await startMigration(stack, {
    id: 'rollback-plain-target',
    source: { uri: sourceDb.uri, password: stack.secretFile('plain-s', sourceDb.password) },
    target: { uri: `postgresql://plain_owner@${target.host}:${target.port}/rollback_plain`, password: stack.secretFile('plain-t', 'plain-owner-pw') },
    method: 'logical',
    logical: { replicaIdentityFull: true },
    cutover: { rollbackWindow: '2h' },
  });
  const failure = await migrationFailure(handle);
  expect(failure.message).toContain('rollback window: on the target: plain_owner may not create a replication slot');
  expect(failure.message).toContain('ALTER ROLE "plain_owner" REPLICATION;');
  expect(failure.message).toContain('plain_owner cannot fence the target for a rollback (it cannot end other sessions)');
  expect(failure.message).toContain('GRANT pg_signal_backend TO "plain_owner";');
});
