/**
 * A cluster migration stopped half-way, and one that syncs for long. Three databases (one dump, two
 * logical): aborted (`pgmove abort`) while all three copy, and cancelled (`temporal workflow cancel`,
 * here the client's cancel) while the logical ones sync and the dump one copies. Either way every child
 * runs its own cleanup to the end (it ends `aborted`, not terminated, with nothing owed): no slot,
 * publication or subscription, no fence (an application role writes on every source), and the target
 * databases and roles the migration created are dropped. Then a cluster whose online child lags for
 * about 90 status intervals (its apply blocked by a lock on the target while the source is written):
 * the parent's history does not grow with the lag figure, the parent continues as new while its
 * children run (historyEventsPerRun: 50), and the cluster cutover after that still completes.
 */
import { Client } from 'pg';
import { CancelledFailure, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { migrationFailure, pgmoveCliAsync } from '../helpers/migration';
import { replicationLeftovers } from '../helpers/online';
import { APP_RW_PASSWORD, createAppDatabase, createSharedRoles, waitForCluster } from '../helpers/cluster';
import { waitFor } from '../../src/dev/ports';
import { clusterStatusQuery, requestCutoverUpdate, statusQuery } from '../../workflows/messages';
import type { ClusterResult } from '../../workflows/migrate-cluster';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
const clients: Client[] = [];

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await createSharedRoles(source);
  for (const database of ['copy_dump', 'copy_log1', 'copy_log2', 'sync_dump', 'sync_log1', 'sync_log2', 'long_dump', 'long_lag']) await createAppDatabase(source, database, 2000);
  await stack.startWorker({ PGMOVE_TEST_SOURCE_PASSWORD: source.superuserPassword });
});

afterAll(async () => {
  for (const client of clients) await client.end().catch(() => undefined);
  await stack.stop();
});

function clusterSpec(id: string, databases: unknown[], extra: Record<string, unknown> = {}) {
  return {
    id,
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/postgres`, password: 'env:PGMOVE_TEST_SOURCE_PASSWORD' },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/postgres`, password: stack.secretFile(`${id}-target`, target.superuserPassword) },
    concurrency: 3,
    defaults: { method: 'dump', jobs: 1, logical: { statusInterval: '1s' } },
    databases,
    ...extra,
  };
}

async function connect(cluster: ClusterHandle, database: string, user = cluster.superuser, password = cluster.superuserPassword): Promise<Client> {
  const client = new Client({ host: cluster.host, port: cluster.port, database, user, password, application_name: 'cluster-abort-test' });
  client.on('error', () => undefined);
  await client.connect();
  clients.push(client);
  return client;
}

async function targetState(): Promise<{ databases: string[]; roles: string[] }> {
  const databases = (await adminQuery<{ datname: string }>(target, 'postgres', 'SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1')).map((r) => r.datname);
  const roles = (await adminQuery<{ rolname: string }>(target, 'postgres', `SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1`)).map((r) => r.rolname);
  return { databases, roles };
}

/**
 * Holds a database's copy: takes ACCESS EXCLUSIVE on the target's `events` as soon as pre-data has
 * created it (before the copy reaches it), so the child stays in its copy until the lock goes.
 */
async function holdCopy(database: string): Promise<Client> {
  await waitFor(`target database ${database}`, async () => (await adminQuery(target, 'postgres', 'SELECT 1 FROM pg_database WHERE datname = $1', [database])).length > 0, 180_000, 20);
  const locker = await connect(target, database);
  await waitFor(`${database}.events on the target`, async () => (await locker.query<{ t: string | null }>(`SELECT to_regclass('public.events') AS t`)).rows[0]!.t !== null, 180_000, 5);
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE public.events IN ACCESS EXCLUSIVE MODE');
  return locker;
}

async function release(locker: Client): Promise<void> {
  await locker.query('ROLLBACK');
  await locker.end();
}

/** Waits until every child of the cluster has seen the abort (its copy may wait on a test lock until then). */
async function childrenAborting(ids: string[]): Promise<void> {
  for (const id of ids) {
    await waitFor(`${id} to take the abort`, async () => (await stack.client!.workflow.getHandle(id).query(statusQuery)).abortReason !== undefined, 120_000, 200);
  }
}

/** What a stopped cluster must leave: every child cleaned up by itself, sources writable, the target as before. */
async function expectEverythingUndone(handle: WorkflowHandle, databases: string[], before: { databases: string[]; roles: string[] }): Promise<void> {
  const status = await handle.query(clusterStatusQuery);
  expect(status.phase).toBe('aborted');
  expect(status.databases.map((r) => [r.database, r.status])).toEqual(databases.map((d) => [d, 'aborted']));
  for (const database of databases) {
    const child = stack.client!.workflow.getHandle(`${handle.workflowId}.${database}`);
    // Its own cleanup ran to the end: failed as aborted (not terminated), nothing owed, nothing failed.
    expect((await child.describe()).status.name).toBe('FAILED');
    const childStatus = await child.query(statusQuery);
    expect(childStatus.phase).toBe('aborted');
    expect(childStatus.cleanupOwed).toEqual([]);
    expect(childStatus.cleanupFailed ?? []).toEqual([]);
    expect(await replicationLeftovers(source, database)).toEqual([]);
    // No fence: the application role connects and writes.
    const app = await connect(source, database, 'app_rw', APP_RW_PASSWORD);
    await app.query(`INSERT INTO items (name) VALUES ('written after the abort')`);
    await app.end();
  }
  expect(await replicationLeftovers(target, 'postgres')).toEqual([]);
  // The databases and roles the migration created are gone.
  expect(await targetState()).toEqual(before);
}

test('abort while three databases copy (dump + logical): every child cleans up, created databases and roles are dropped', async () => {
  const databases = ['copy_dump', 'copy_log1', 'copy_log2'];
  const before = await targetState();
  const handle = await stack.client!.workflow.start('migrateCluster', {
    taskQueue: stack.taskQueue,
    workflowId: 'abort-copy',
    args: [clusterSpec('abort-copy', ['copy_dump', { name: 'copy_log1', method: 'logical' }, { name: 'copy_log2', method: 'logical' }])],
  });
  const lockers = await Promise.all(databases.map(holdCopy));
  await waitForCluster(handle, 'all three copying', (s) => s.databases.length === 3 && s.databases.every((r) => r.phase === 'copy'));
  expect((await targetState()).roles).toContain('app_owner');

  const cli = await pgmoveCliAsync(stack, ['abort', 'abort-copy', '--reason', 'test abort during the copy']);
  expect(cli.code).toBe(0);
  await childrenAborting(databases.map((d) => `abort-copy.${d}`));
  for (const locker of lockers) await release(locker);
  const failure = await migrationFailure(handle);
  expect(failure.type).toBe('Aborted');
  await expectEverythingUndone(handle, databases, before);
});

test('cancel while two databases sync and one copies: every child cleans up, created databases and roles are dropped', async () => {
  const databases = ['sync_dump', 'sync_log1', 'sync_log2'];
  const before = await targetState();
  const handle = await stack.client!.workflow.start('migrateCluster', {
    taskQueue: stack.taskQueue,
    workflowId: 'cancel-sync',
    args: [clusterSpec('cancel-sync', ['sync_dump', { name: 'sync_log1', method: 'logical' }, { name: 'sync_log2', method: 'logical' }])],
  });
  const locker = await holdCopy('sync_dump');
  await waitForCluster(handle, 'the online databases syncing, the dump one copying', (s) =>
    s.databases.length === 3 && s.databases[0]!.phase === 'copy' && s.databases.slice(1).every((r) => r.phase === 'syncing'),
  );

  await handle.cancel();
  await childrenAborting(databases.map((d) => `cancel-sync.${d}`));
  await release(locker);
  const error = await handle.result().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(WorkflowFailedError);
  expect((error as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
  await expectEverythingUndone(handle, databases, before);
  const status = await handle.query(clusterStatusQuery);
  expect(status.errors.join('\n')).toMatch(/cancelled/);
});

/** Every run of a workflow id: run id, how it closed, its history length. */
async function runsOf(workflowId: string): Promise<{ runId: string; status: string; events: number; closeTime?: Date }[]> {
  const runs: { runId: string; status: string; events: number; closeTime?: Date }[] = [];
  for await (const execution of stack.client!.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
    const history = await stack.client!.workflow.getHandle(workflowId, execution.runId).fetchHistory();
    runs.push({ runId: execution.runId, status: execution.status.name, events: history.events?.length ?? 0, closeTime: execution.closeTime });
  }
  return runs;
}

const totalEvents = async (workflowId: string) => (await runsOf(workflowId)).reduce((sum, run) => sum + run.events, 0);

test('a child lagging for ~90 status intervals: the parent history stays bounded, it continues as new while children run, the cutover then completes', async () => {
  const id = 'long-sync';
  const historyEventsPerRun = 50;
  const handle = await stack.client!.workflow.start('migrateCluster', {
    taskQueue: stack.taskQueue,
    workflowId: id,
    args: [
      clusterSpec(id, ['long_dump', { name: 'long_lag', method: 'logical' }], {
        historyEventsPerRun,
        defaults: { method: 'dump', jobs: 1, logical: { statusInterval: '1s' }, cutover: { maxLagBytes: '64kB' } },
      }),
    ],
  });
  await waitForCluster(handle, 'dump completed, online database syncing and ready', (s) => s.databases[0]?.status === 'completed' && s.databases[1]?.phase === 'syncing' && s.databases[1].cutoverBlocker === '');

  // The apply waits on a lock on the target while the source keeps writing: the lag grows all the time.
  const locker = await connect(target, 'long_lag');
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE public.items IN ACCESS EXCLUSIVE MODE');
  const writer = await connect(source, 'long_lag');
  let writing = true;
  const writes = (async () => {
    while (writing) {
      await writer.query(`INSERT INTO items (name, payload) SELECT 'lag-' || g, jsonb_build_object('pad', repeat('x', 2000)) FROM generate_series(1, 10) g`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  })();
  const child = stack.client!.workflow.getHandle(`${id}.long_lag`);
  await waitForCluster(handle, 'the lagging database reported not ready', (s) => /lag .*above cutover\.maxLagBytes/.test(s.databases[1]?.cutoverBlocker ?? ''));

  // The window: ~90 status intervals of a lag figure that changes at every measurement.
  const eventsBefore = await totalEvents(id);
  const lags = new Set<number>();
  const windowStart = Date.now();
  await waitFor(
    '90 s of lagging',
    async () => {
      const lag = (await child.query(statusQuery)).replication?.lagBytes;
      if (lag !== undefined) lags.add(lag);
      return Date.now() - windowStart >= 90_000;
    },
    180_000,
    1000,
  );
  const eventsAfter = await totalEvents(id);
  writing = false;
  await writes;
  console.log(`parent events over ${Math.round((Date.now() - windowStart) / 1000)} s of lag: ${eventsAfter - eventsBefore} (${eventsBefore} → ${eventsAfter}); distinct lag figures seen: ${lags.size}`);
  expect(lags.size).toBeGreaterThanOrEqual(20);
  // A lag figure is no state change: the parent's history does not grow with it.
  expect(eventsAfter - eventsBefore).toBeLessThanOrEqual(10);

  // Caught up, the database is ready again; the cluster cutover runs in the parent's latest run.
  await release(locker);
  await waitForCluster(handle, 'ready again', (s) => s.databases[1]?.cutoverBlocker === '', 120_000);
  const answer = await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'test' }] });
  expect(answer.accepted).toBe(true);
  const result = (await handle.result()) as ClusterResult;
  expect(result.status.databases.map((r) => [r.database, r.status])).toEqual([
    ['long_dump', 'completed'],
    ['long_lag', 'completed'],
  ]);
  expect(result.status.cutovers?.at(-1)?.outcome).toBe('switched');

  const runs = await runsOf(id);
  const childClosed = (await child.describe()).closeTime!;
  console.log(`parent runs: ${runs.map((r) => `${r.status} ${r.events} events`).join('; ')}; status.runs ${result.status.runs}`);
  expect(result.status.runs).toBe(runs.length);
  // It continued as new while its online child ran (the child ended only with the cutover, later).
  expect(runs.filter((r) => r.status === 'CONTINUED_AS_NEW' && r.closeTime! < childClosed).length).toBeGreaterThanOrEqual(1);
  // Every run stays within historyEventsPerRun plus what lands while it may not continue yet: a child
  // start in flight (initiated, started, its first reports) and the workflow tasks around it — a fixed
  // few dozen events, however long the children run (71 seen on a loaded machine).
  for (const run of runs) expect(run.events).toBeLessThanOrEqual(historyEventsPerRun + 35);
});
