/**
 * SIGKILL the worker during the copy at the slot's snapshot, during syncing, and during the cutover
 * (while the switch hook runs): a new worker finishes each migration with equal data, and no slot,
 * publication or subscription is left on either server.
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestStack, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { startMigration } from '../helpers/migration';
import { createOnlineTarget, createPgbenchSource, pgbenchSums, replicationLeftovers, startPgbench, waitForStatus, type OnlineDatabase, type PgbenchRun } from '../helpers/online';
import { waitFor } from '../../scripts/lib/ports';
import { stopWorkerProcess, type WorkerHandle } from '../../scripts/lib/worker-process';
import { requestCutoverUpdate, statusQuery } from '../../workflows/messages';
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
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  worker = await stack.startWorker();
  sourceDb = await createPgbenchSource(source, 'shop', 10);
});

afterAll(async () => {
  for (const run of runs) await run.stop();
  await stack.stop();
});

async function start(id: string, extra: Record<string, unknown> = {}): Promise<WorkflowHandle> {
  const to = await createOnlineTarget(target, id.replace(/-/g, '_'));
  const bench = startPgbench(stack, source, 'shop', 2, 100);
  runs.push(bench);
  return startMigration(stack, {
    id,
    source: { uri: sourceDb.uri, password: stack.secretFile(`${id}-s`, sourceDb.password) },
    target: { uri: to.uri, password: stack.secretFile(`${id}-t`, to.password) },
    method: 'logical',
    jobs: 2,
    logical: { replicaIdentityFull: true, statusInterval: '1s' },
    timeouts: { heartbeat: '5s' },
    ...extra,
    // pgbench writes to the same source in every test: writable after each switch.
    cutover: { sourceAfterSwitch: 'writable', ...(extra.cutover as object | undefined) },
  });
}

async function crashWorker(): Promise<void> {
  await stopWorkerProcess(worker, 'SIGKILL');
  worker = await stack.startWorker();
}

async function expectEqualAndClean(handle: WorkflowHandle, database: string): Promise<MigrationResult> {
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

async function cutoverWhenSynced(handle: WorkflowHandle): Promise<void> {
  await waitFor('cutover accepted', async () => {
    await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true);
    return handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'test' }] }).then(() => true, () => false);
  }, 300_000, 500);
}

// Each test waits for syncing, kills a worker and waits again: room for a loaded 2-core machine.
jest.setTimeout(900_000);

test('killed during the copy at the slot snapshot: the copy restarts at a new slot, equal data', async () => {
  const handle = await start('crash-copy');
  // The slot exists from the moment the copy at its snapshot starts (scale 10 takes seconds to copy).
  await waitFor('the copy at the slot snapshot to start', async () => {
    const status = await handle.query(statusQuery);
    return status.phase === 'copy' && (await replicationLeftovers(source, 'shop')).some((o) => o.startsWith('slot '));
  }, 120_000, 20);
  await crashWorker();
  await cutoverWhenSynced(handle);
  await expectEqualAndClean(handle, 'crash_copy');
  // The kill hit the copy: it ran a second attempt (at a new slot).
  const history = await handle.fetchHistory();
  const copyEvents = history.events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'copyAtSlot').map((e) => e.eventId!.toString());
  const attempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes && copyEvents.includes(e.activityTaskStartedEventAttributes.scheduledEventId!.toString())).map((e) => e.activityTaskStartedEventAttributes!.attempt);
  expect(attempts).toEqual([2]);
});

test('killed while syncing: the stream lives in PostgreSQL, the new worker re-attaches', async () => {
  const handle = await start('crash-syncing');
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true);
  await crashWorker();
  await cutoverWhenSynced(handle);
  await expectEqualAndClean(handle, 'crash_syncing');
});

test('killed during the cutover: the retry finishes it, the source is unfrozen, equal data', async () => {
  const go = join(stack.dir, 'crash-go');
  const frozen = join(stack.dir, 'crash-frozen');
  const hook = ['sh', '-c', `touch ${frozen}; for i in $(seq 1200); do [ -f ${go} ] && exit 0; sleep 0.05; done; exit 4`];
  const handle = await start('crash-cutover', { cutover: { switchHook: hook } });
  await cutoverWhenSynced(handle);
  await waitFor('the switch hook to run', async () => existsSync(frozen), 120_000, 20);
  rmSync(frozen);
  await crashWorker();
  // The retried attempt freezes (already frozen: recorded on the source) and runs the hook again.
  await waitFor('the retried switch hook to run', async () => existsSync(frozen), 120_000, 20);
  writeFileSync(go, '');
  const result = await expectEqualAndClean(handle, 'crash_cutover');
  expect(result.status.cutovers?.map((c) => c.outcome)).toEqual(['switched']);
});
