/**
 * A worker lost during the cutover's write freeze costs seconds, not a minute: with pgbench writing to
 * the source, the worker running the cutover is SIGKILLed inside the freeze (fenced, draining: a lock
 * held on a target table for a moment keeps the apply, and so the drain, waiting until the kill). Its heartbeat timeout (`cutover.freezeHeartbeat`, 5 s) lets
 * Temporal retry the cutover on the other worker, which resumes the freeze and switches: the freeze, from
 * the fence on the source to the switch hook (the application writes to the target from then on), stays
 * within 10 s. When no worker takes the retry up within `cutover.resumeFrozenWithin`, the retry unfreezes
 * the source and returns to syncing instead, and a second request switches.
 */
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { Client } from 'pg';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { startMigration } from '../helpers/migration';
import { createOnlineTarget, createPgbenchSource, pgbenchSums, replicationLeftovers, startPgbench, waitForStatus, type OnlineDatabase, type PgbenchRun } from '../helpers/online';
import { waitFor } from '../../src/dev/ports';
import { stopWorkerProcess, type WorkerHandle } from '../../src/dev/worker-process';
import { requestCutoverUpdate } from '../../workflows/messages';
import type { MigrationResult } from '../../workflows/migrate-database';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
let sourceDb: OnlineDatabase;
const runs: PgbenchRun[] = [];

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  sourceDb = await createPgbenchSource(source, 'shop', 5);
  await stack.startWorker();
  await stack.startWorker();
});

afterAll(async () => {
  for (const run of runs) await run.stop();
  await stack.stop();
});

jest.setTimeout(900_000);

async function start(id: string, cutover: Record<string, unknown>): Promise<{ handle: WorkflowHandle; database: string; switchedFile: string }> {
  const database = id.replace(/-/g, '_');
  const to = await createOnlineTarget(target, database);
  runs.push(startPgbench(stack, source, 'shop', 2, 100));
  const switchedFile = join(stack.dir, `${id}-switched`);
  const handle = await startMigration(stack, {
    id,
    source: { uri: sourceDb.uri, password: stack.secretFile(`${id}-s`, sourceDb.password) },
    target: { uri: to.uri, password: stack.secretFile(`${id}-t`, to.password) },
    method: 'logical',
    jobs: 2,
    logical: { replicaIdentityFull: true, statusInterval: '1s' },
    timeouts: { heartbeat: '30s' },
    // The hook records when the switch happened (the application writes to the target from then on).
    cutover: { sourceAfterSwitch: 'writable', switchHook: ['sh', '-c', `date +%s.%N >> ${switchedFile}`], ...cutover },
  });
  return { handle, database, switchedFile };
}

async function requestCutover(handle: WorkflowHandle): Promise<void> {
  await waitFor('cutover accepted', async () => {
    await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true, 300_000);
    return handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'test' }] }).then(() => true, () => false);
  }, 300_000, 500);
}

/** Waits until the source carries the fence (the freeze record in the database comment); returns when it was seen. */
async function fenced(): Promise<number> {
  await waitFor('the cutover to fence the source', async () => {
    const [fence] = await adminQuery<{ fenced: boolean }>(source, 'shop', `SELECT coalesce(shobj_description(oid, 'pg_database'), '') LIKE 'pgmove freeze marker:%' AS fenced FROM pg_database WHERE datname = 'shop'`);
    return fence?.fenced === true;
  }, 300_000, 10);
  return Date.now();
}

/** Holds ACCESS EXCLUSIVE on the target's pgbench_history: the apply of pgbench's writes (and a cutover's drain) waits. */
async function holdApply(database: string): Promise<{ release: () => Promise<void> }> {
  const client = new Client({ host: target.host, port: target.port, database, user: 'postgres', password: target.superuserPassword });
  await client.connect();
  await client.query('BEGIN; LOCK TABLE pgbench_history IN ACCESS EXCLUSIVE MODE');
  return { release: async () => void (await client.query('COMMIT'), await client.end()) };
}

/** The worker process whose identity the running cutover activity carries. */
async function workerRunningCutover(handle: WorkflowHandle): Promise<WorkerHandle> {
  return waitFor('the cutover activity to report its worker', async () => {
    const pending = (await handle.describe()).raw.pendingActivities ?? [];
    const identity = pending.find((a) => a.activityType?.name === 'cutover')?.lastWorkerIdentity;
    const pid = identity ? Number(identity.split('@')[0]) : NaN;
    if (!Number.isInteger(pid)) return undefined;
    const group = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[2]);
    return stack.workers.find((worker) => worker.pid === group);
  }, 30_000, 20);
}

async function expectSwitchedEqual(handle: WorkflowHandle, database: string): Promise<MigrationResult> {
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.phase).toBe('completed');
  expect(result.status.validation?.ok).toBe(true);
  const [s, t] = [await pgbenchSums(source, 'shop'), await pgbenchSums(target, database)];
  expect(t).toEqual(s);
  expect(t.accounts).toBe(t.history);
  expect(await replicationLeftovers(source, 'shop')).toEqual([]);
  expect(await replicationLeftovers(target, database)).toEqual([]);
  return result;
}

test('the cutover worker SIGKILLed inside the freeze: the other worker finishes it, the write freeze stays within 10 s', async () => {
  const { handle, database, switchedFile } = await start('freeze-crash', {});
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true, 300_000);
  const apply = await holdApply(database);
  await requestCutover(handle);
  const fencedAt = await fenced();
  const victim = await workerRunningCutover(handle);
  const killedAt = Date.now();
  await stopWorkerProcess(victim, 'SIGKILL');
  await apply.release();
  await waitFor('the switch hook to run', async () => existsSync(switchedFile), 120_000, 20);
  const switchedAt = Number(readFileSync(switchedFile, 'utf8').trim().split('\n')[0]) * 1000;
  const result = await expectSwitchedEqual(handle, database);
  const freezeMs = switchedAt - fencedAt;
  console.log(`write freeze with a worker SIGKILLed ${killedAt - fencedAt} ms into it: ${freezeMs} ms from the fence to the switch; attempt ${JSON.stringify(result.status.cutovers)}`);
  expect(freezeMs).toBeLessThan(10_000);
  expect(result.status.cutovers?.map((c) => c.outcome)).toEqual(['switched']);
  // The retried attempt measured the freeze from the lost attempt's fence, and says so.
  expect(result.status.cutovers?.[0]?.steps?.lostWorker).toBeGreaterThan(0);
  expect(result.status.cutovers?.[0]?.freezeToSwitchedMs).toBeLessThan(10_000);
  const history = await handle.fetchHistory();
  const cutoverIds = history.events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'cutover').map((e) => e.eventId!.toString());
  const attempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes && cutoverIds.includes(e.activityTaskStartedEventAttributes.scheduledEventId!.toString())).map((e) => e.activityTaskStartedEventAttributes!.attempt);
  expect(attempts).toEqual([2]);
});

test('no worker takes the retry up within cutover.resumeFrozenWithin: the retry unfreezes the source and returns to syncing; the next request switches', async () => {
  // One worker only: its retry starts after it is back, later than resumeFrozenWithin (3 s).
  for (const worker of stack.workers.splice(0)) await stopWorkerProcess(worker, 'SIGKILL');
  await stack.startWorker();
  const { handle, database, switchedFile } = await start('freeze-late', { resumeFrozenWithin: '3s' });
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true, 300_000);
  const apply = await holdApply(database);
  await requestCutover(handle);
  await fenced();
  await stopWorkerProcess(stack.workers.pop()!, 'SIGKILL');
  await apply.release();
  await stack.startWorker();
  const back = await waitForStatus(handle, 'syncing again after the abandoned cutover', (s) => s.phase === 'syncing' && (s.cutovers ?? []).some((c) => c.outcome === 'failed'), 300_000);
  expect(back.cutovers?.[0]?.error).toContain('cutover.resumeFrozenWithin');
  expect(existsSync(switchedFile)).toBe(false);
  // The source takes writes again (pgbench's app role can connect and write).
  const [fence] = await adminQuery<{ comment: string | null }>(source, 'shop', `SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = 'shop'`);
  expect(fence?.comment ?? '').not.toContain('pgmove freeze marker');
  await requestCutover(handle);
  const result = await expectSwitchedEqual(handle, database);
  expect(result.status.cutovers?.map((c) => c.outcome)).toEqual(['failed', 'switched']);
});
