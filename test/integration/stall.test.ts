/**
 * Hangs are seen and handled, not waited out: another session holds ACCESS EXCLUSIVE on a table while
 * the copy reaches it. `pgmove status` names the blocking pid within 60 s; with a short timeouts.stall
 * the attempt is failed and retried; once the lock is released the migration completes, validates and
 * the databases compare equal.
 */
import { Client } from 'pg';
import { TestStack, PROJECT_PG18_BIN, DEBIAN_PG15_BIN, adminQuery, type ClusterHandle } from '../helpers/stack';
import { createBigDatabase, pgmoveCli, startMigration } from '../helpers/migration';
import { compareDatabases, type DbRef } from '../helpers/compare';
import { waitFor } from '../../src/dev/ports';
import { statusQuery } from '../../workflows/messages';
import type { MigrationSpecInput } from '../../src/spec';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
const clients: Client[] = [];

const ref = (cluster: ClusterHandle, database: string): DbRef => ({
  host: cluster.host,
  port: cluster.port,
  user: cluster.superuser,
  password: cluster.superuserPassword,
  database,
});

async function open(cluster: ClusterHandle, database: string, applicationName: string): Promise<Client> {
  const client = new Client({ ...ref(cluster, database), application_name: applicationName });
  clients.push(client);
  await client.connect();
  return client;
}

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await stack.startWorker();
  // big (its own unit, copied first with jobs 1) and a batch with small_a, the table that gets locked.
  for (const database of ['stall_source_lock', 'stall_target_lock']) {
    await createBigDatabase(source, database, 400_000);
    await adminQuery(target, 'postgres', `CREATE DATABASE ${database}`);
  }
});

afterAll(async () => {
  for (const client of clients) await client.end().catch(() => undefined);
  await stack.stop();
});

function spec(database: string, extra: Partial<MigrationSpecInput> = {}): MigrationSpecInput {
  return {
    id: `stall-${database}`,
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/${database}`, password: stack.secretFile(`${database}-source`, source.superuserPassword) },
    method: 'dump',
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/${database}`, password: stack.secretFile(`${database}-target`, target.superuserPassword) },
    jobs: 1,
    ...extra,
  };
}

/**
 * Takes ACCESS EXCLUSIVE on public.small_a (on `lockOn`) once the copy has started: the target then has
 * a "pgmove copy" session, busy with big (jobs 1, largest unit first), so small_a's batch comes after.
 */
async function lockSmallTableDuringCopy(lockOn: ClusterHandle, database: string): Promise<{ locker: Client; pid: number }> {
  const watcher = await open(target, database, 'stall-test-watcher');
  await waitFor(
    'the copy to start',
    async () => (await watcher.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgmove copy'`)).rowCount! > 0,
    300_000,
    25,
  );
  const locker = await open(lockOn, database, 'stall-test-locker');
  await locker.query('BEGIN READ WRITE'); // the frozen source defaults to read-only transactions
  await locker.query('LOCK TABLE public.small_a IN ACCESS EXCLUSIVE MODE');
  // The copy of small_a has not happened yet: the lock is what it will wait for (on the target, only
  // the locker itself can read the table now).
  const count = 'SELECT count(*)::int AS n FROM public.small_a';
  const copied = lockOn === target ? (await locker.query<{ n: number }>(count)).rows : await adminQuery<{ n: number }>(target, database, count);
  expect(copied[0]!.n).toBe(0);
  const pid = (await locker.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  return { locker, pid };
}

async function expectCompletedAndEqual(database: string): Promise<void> {
  const handle = stack.client!.workflow.getHandle(`stall-${database}`);
  await handle.result();
  const status = await handle.query(statusQuery);
  expect(status.phase).toBe('completed');
  expect(status.validation?.ok).toBe(true);
  expect(await compareDatabases(ref(source, database), ref(target, database))).toEqual([]);
}

test('a lock on a SOURCE table: pgmove status names the blocking pid within 60 s; released, the migration completes equal', async () => {
  const database = 'stall_source_lock';
  await startMigration(stack, spec(database));
  const { locker, pid } = await lockSmallTableDuringCopy(source, database);
  const lockedAt = Date.now();
  const shown = await waitFor(
    'pgmove status to name the blocker',
    async () => {
      const { stdout } = pgmoveCli(stack, ['status', `stall-${database}`]);
      return stdout.includes(`held by pid ${pid}`) ? stdout : undefined;
    },
    90_000,
    1000,
  );
  const seconds = (Date.now() - lockedAt) / 1000;
  console.log(`blocker named after ${seconds.toFixed(1)} s:\n${shown.split('\n').filter((l) => l.startsWith('stalled')).join('\n')}`);
  expect(seconds).toBeLessThan(60);
  const line = shown.split('\n').find((l) => l.startsWith('stalled'))!;
  expect(line).toMatch(/^stalled {3}copy(Planned)?Unit stalled \d+ s: source session \d+ waits for a lock on public\.small_a held by pid \d+ \(user postgres, application stall-test-locker, idle in transaction since .*query: SELECT pg_backend_pid\(\) AS pid\)$/);
  await locker.query('ROLLBACK');
  await expectCompletedAndEqual(database);
});

test('a lock on a TARGET table with timeouts.stall 20s: the attempt is failed and retried, named in the status; released, it completes equal', async () => {
  const database = 'stall_target_lock';
  // Without a freeze the copy runs at one snapshot in a single activity (copyAtSnapshot).
  await startMigration(stack, spec(database, { freezeSource: false, timeouts: { stall: '20s' } }));
  const { locker, pid } = await lockSmallTableDuringCopy(target, database);
  const lockedAt = Date.now();
  await waitFor(
    'pgmove status to name the blocker',
    async () => pgmoveCli(stack, ['status', `stall-${database}`]).stdout.includes(`held by pid ${pid}`),
    90_000,
    1000,
  );
  expect((Date.now() - lockedAt) / 1000).toBeLessThan(60);
  // After timeouts.stall the attempt fails with the blocker in its message, and Temporal retries it.
  const retried = await waitFor(
    'the stalled attempt to be failed and retried',
    async () => {
      const { stdout } = pgmoveCli(stack, ['status', `stall-${database}`]);
      return /running {3}copyAtSnapshot \(attempt [2-9]\)/.test(stdout) && stdout.includes('last failure') ? stdout : undefined;
    },
    180_000,
    1000,
  );
  const running = retried.split('\n').find((l) => l.startsWith('running   copyAtSnapshot'))!;
  expect(running).toMatch(new RegExp(`last failure: copy stalled \\d+ s: target session \\d+ waits for a lock on public\\.small_a held by pid ${pid} .*failing this attempt after timeouts.stall \\(20 s\\)`));
  await locker.query('ROLLBACK');
  await expectCompletedAndEqual(database);
});
