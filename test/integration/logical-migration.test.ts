/**
 * Online migration with native logical replication, 15 → 18, while pgbench writes to the source as an
 * application role: cutover requests rejected before syncing and while lag is high, a failed cutover
 * (switch hook exits non-zero) that unfreezes the source and resumes syncing, the fence during the
 * freeze, then a successful cutover: pgbench's invariant holds on the target, every committed
 * transaction is there, sequences are not behind, nothing is left on either server; the old source
 * stays fenced until `pgmove unfreeze`, after which every role has its former rights.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { databaseAccessState, migrationFailure, pgmoveCli, pgmoveCliAsync, startMigration, writeSpec } from '../helpers/migration';
import {
  appClient,
  createOnlineTarget,
  createPgbenchSource,
  pgbenchSums,
  replicaIdentities,
  replicationLeftovers,
  startPgbench,
  waitForStatus,
  type OnlineDatabase,
  type PgbenchRun,
} from '../helpers/online';
import { waitFor } from '../../src/dev/ports';
import { requestCutoverUpdate } from '../../workflows/messages';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import type { MigrationStatus } from '../../src/model';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
let sourceDb: OnlineDatabase;
let targetDb: OnlineDatabase;
const pgbenchRuns: PgbenchRun[] = [];

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await stack.startWorker();
  sourceDb = await createPgbenchSource(source, 'shop', 10);
  targetDb = await createOnlineTarget(target, 'shop');
});

afterAll(async () => {
  for (const run of pgbenchRuns) await run.stop();
  await stack.stop();
});

/** A switch hook that fails while `fail-once` exists (removing it), and otherwise waits for `go`. */
function switchHook(): string[] {
  const dir = stack.dir;
  return ['sh', '-c', `if [ -f ${dir}/fail-once ]; then rm ${dir}/fail-once; exit 3; fi; touch ${dir}/frozen; for i in $(seq 1200); do [ -f ${dir}/go ] && { echo "switched to $PGMOVE_TARGET_HOST:$PGMOVE_TARGET_PORT/$PGMOVE_TARGET_DATABASE"; exit 0; }; sleep 0.05; done; exit 4`];
}

test('15 → 18 online under pgbench: rejected early, failed cutover resumes, fenced, then switched with nothing lost', async () => {
  const accessBefore = await databaseAccessState(source, 'shop');
  const identitiesBefore = await replicaIdentities(source, 'shop');
  const bench = startPgbench(stack, source, 'shop');
  pgbenchRuns.push(bench);
  writeFileSync(join(stack.dir, 'fail-once'), '');
  const specFile = writeSpec(stack, 'online', {
    id: 'online-15-18',
    source: { uri: sourceDb.uri, password: stack.secretFile('s', sourceDb.password) },
    target: { uri: targetDb.uri, password: stack.secretFile('t', targetDb.password) },
    method: 'auto',
    jobs: 2,
    logical: { replicaIdentityFull: true, statusInterval: '1s' },
    cutover: { maxLagBytes: '1MB', switchHook: switchHook() },
  });
  const started = pgmoveCli(stack, ['start', '-f', specFile]);
  expect(started.code).toBe(0);
  const id = started.stdout.trim();
  const handle = stack.client!.workflow.getHandle(id);

  // While copying, a cutover is rejected with the reason.
  await waitForStatus(handle, 'copying', (s) => s.phase === 'copy');
  const early = await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'too early' }] }).catch((error: Error) => error);
  expect(early).toBeInstanceOf(WorkflowUpdateFailedError);
  expect((early as WorkflowUpdateFailedError).cause?.message).toMatch(/^cutover rejected: not syncing yet \(phase: (copy|postData)\)$/);

  const syncing = await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true);
  expect(syncing.method).toBe('logical');
  expect(syncing.methodReason).toContain('auto: the source allows logical replication');
  expect(await replicaIdentities(source, 'shop')).toMatchObject({ pgbench_history: 'f' });

  // Lag above cutover.maxLagBytes: the stream is paused on the target while pgbench writes.
  await adminQuery(target, 'shop', `ALTER SUBSCRIPTION ${await subscriptionName()} DISABLE`);
  // Paused for sure (the apply worker notices DISABLE late, and may confirm meanwhile), and behind.
  await waitForStatus(handle, 'stream paused, lag above 1MB', (s) => s.replication?.streaming === false && s.replication.lagBytes > 1024 * 1024);
  const lagging = pgmoveCli(stack, ['cutover', id]);
  expect(lagging.code).toBe(1);
  expect(lagging.stdout).toMatch(/rejected: lag .* is above cutover.maxLagBytes/);
  await adminQuery(target, 'shop', `ALTER SUBSCRIPTION ${await subscriptionName()} ENABLE`);
  await waitForStatus(handle, 'lag back under 1MB', (s) => s.replication!.streaming && s.replication!.lagBytes <= 256 * 1024);

  // First cutover: the switch hook fails → the source is unfrozen and the migration syncs again.
  const first = pgmoveCli(stack, ['cutover', id, '--approved-by', 'test', '--reason', 'first try']);
  expect(first.stdout).toContain('accepted');
  const failed = await waitForStatus(handle, 'first cutover failed', (s) => s.phase === 'syncing' && s.cutovers?.[0]?.outcome === 'failed');
  expect(failed.cutovers![0]!.error).toContain('switchHook failed');
  expect(await databaseAccessState(source, 'shop')).toEqual(accessBefore);
  const benchAfterFirst = await bench.done; // the freeze ended pgbench's sessions
  expect(benchAfterFirst.output).toMatch(/terminat|abort/i);
  const bench2 = startPgbench(stack, source, 'shop');
  pgbenchRuns.push(bench2);
  await waitFor('pgbench writing again after the failed cutover', async () => (await pgbenchSums(source, 'shop')).historyRows !== (await pgbenchSums(target, 'shop')).historyRows || undefined, 30_000);
  await waitForStatus(handle, 'lag under 256kB', (s) => s.phase === 'syncing' && s.replication!.streaming && s.replication!.lagBytes <= 256 * 1024);

  // Second cutover: the hook holds the freeze open until `go`, so the fence can be tested meanwhile.
  const held = await appClient(source, 'shop');
  const second = pgmoveCliAsync(stack, ['cutover', id, '--approved-by', 'test', '--wait']);
  await waitFor('the switch hook to run (source frozen)', async () => existsSync(join(stack.dir, 'frozen')), 120_000, 20);
  await expect(held.query(`SET default_transaction_read_only = off; INSERT INTO events (aid) VALUES (-1)`)).rejects.toThrow();
  await expect(appClient(source, 'shop')).rejects.toThrow(/permission denied for database|not permitted/);
  writeFileSync(join(stack.dir, 'go'), '');
  const done = await second;
  expect(done.code).toBe(0);
  await bench2.done;

  const status: MigrationStatus = await handle.query('status');
  expect(status.phase).toBe('completed');
  expect(status.validation?.ok).toBe(true);
  const switched = status.cutovers!.find((c) => c.outcome === 'switched')!;
  expect(switched.freezeToReadyMs).toBeGreaterThan(0);
  expect(switched.switchHookOutput).toBe(`switched to 127.0.0.1:${target.port}/shop`);

  // Every transaction the source committed is on the target, and pgbench's invariant holds there.
  const [s, t] = [await pgbenchSums(source, 'shop'), await pgbenchSums(target, 'shop')];
  expect(t).toEqual(s);
  expect(t.accounts).toBe(t.history);
  expect(t.tellers).toBe(t.history);
  expect(t.branches).toBe(t.history);
  expect(Number(t.historyRows)).toBeGreaterThan(0);
  const [seq] = await adminQuery<{ last: string }>(target, 'shop', `SELECT last_value::text AS last FROM events_id_seq`);
  expect(BigInt(seq!.last)).toBeGreaterThanOrEqual(BigInt(t.eventsMax));

  // Nothing left behind.
  expect(await replicationLeftovers(source, 'shop')).toEqual([]);
  expect(await replicationLeftovers(target, 'shop')).toEqual([]);
  expect(await replicaIdentities(source, 'shop')).toEqual(identitiesBefore);
  await held.end().catch(() => undefined);

  // The old source stays fenced after the switch (cutover.sourceAfterSwitch defaults to frozen): an
  // application still pointing at it is refused instead of writing where nobody reads.
  expect(status.warnings?.join('\n')).toContain(`pgmove unfreeze ${id}`);
  await expect(appClient(source, 'shop')).rejects.toThrow(/permission denied for database|not permitted/);
  expect((await databaseAccessState(source, 'shop')).settings).toContain('default_transaction_read_only=on');
  // Another migration of the fenced source is refused at its freeze; neither its cleanup nor its
  // `pgmove unfreeze` lifts a fence that is not its own.
  const otherTarget = await createOnlineTarget(target, 'shop_again');
  const other = await startMigration(stack, {
    id: 'shop-again',
    source: { uri: sourceDb.uri, password: stack.secretFile('s2', sourceDb.password) },
    target: { uri: otherTarget.uri, password: stack.secretFile('t2', otherTarget.password) },
    method: 'dump',
  });
  expect((await migrationFailure(other)).message).toContain(`still fenced by pgmove migration ${id}`);
  expect((await databaseAccessState(source, 'shop')).settings).toContain('default_transaction_read_only=on');
  const wrong = await pgmoveCliAsync(stack, ['unfreeze', 'shop-again']);
  expect(wrong.stderr).toContain(`run pgmove unfreeze ${id}`);
  expect(wrong.code).toBe(1);
  expect((await databaseAccessState(source, 'shop')).settings).toContain('default_transaction_read_only=on');
  // `pgmove unfreeze` releases it: exactly as before the migration, and writable by the application.
  const released = await pgmoveCliAsync(stack, ['unfreeze', id]);
  expect(released.stdout).toContain(`${id}: source writable again`);
  expect(released.code).toBe(0);
  expect(await databaseAccessState(source, 'shop')).toEqual(accessBefore);
  const app = await appClient(source, 'shop');
  await app.query(`INSERT INTO events (aid) VALUES (-2)`);
  await app.end();
  // A second release finds nothing recorded and changes nothing.
  const again = await pgmoveCliAsync(stack, ['unfreeze', id]);
  expect(again.stdout).toContain(`${id}: nothing to do`);
  expect(await databaseAccessState(source, 'shop')).toEqual(accessBefore);
});

async function subscriptionName(): Promise<string> {
  const [row] = await adminQuery<{ subname: string }>(target, 'shop', `SELECT subname FROM pg_subscription`);
  return row!.subname;
}
