/**
 * `temporal workflow terminate` runs no cleanup: a run terminated in pre-flight (after the privilege
 * hack), during the copy (source fenced), in post-data (slot, publication, REPLICA IDENTITY FULL),
 * while syncing (subscription streaming) and inside the cutover (fenced, draining) leaves its objects
 * behind. `pgmove recover ID` finds them from the records on the servers and undoes them: the source's
 * roles and memberships, pg_hba.conf, slots, publications, replica identities, database settings and
 * comment are as before the migration started, and the target holds nothing pgmove created. A
 * `--dry-run` first only prints; one case recovers with `-f spec` after the history was deleted.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { createBigDatabase, databaseAccessState, migrationFailure, pgmoveCliAsync, startMigration, userObjects, writeSpec } from '../helpers/migration';
import { createPlainRole, elevationLeftovers, requirePasswordsEverywhere, sha256 } from '../helpers/elevation';
import { replicaIdentities, replicationLeftovers, waitForStatus } from '../helpers/online';
import { waitFor } from '../../src/dev/ports';
import { stopWorkerProcess, type WorkerHandle } from '../../src/dev/worker-process';
import { requestCutoverUpdate } from '../../workflows/messages';
import type { MigrationSpecInput } from '../../src/spec';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
let worker: WorkerHandle;
let hba: string;

jest.setTimeout(600_000);

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  worker = await stack.startWorker();
  hba = join(source.dataDir, 'pg_hba.conf');
  await requirePasswordsEverywhere(source);
  await createPlainRole(source, 'dumper', 'dumper-pw');
  await createBigDatabase(source, 'elevdb', 5_000);
  await createBigDatabase(source, 'shop', 400_000);
  // A table without a key (REPLICA IDENTITY FULL while replicating), a partitioned table (its parent's
  // index is built in post-data), a table whose rows take 15 s to copy into t_copy (a CHECK that sleeps
  // there), a database comment and setting: all must come back as they were.
  await adminQuery(
    source,
    'shop',
    `CREATE TABLE nokey (a int, b text); INSERT INTO nokey SELECT g, 'n' || g FROM generate_series(1, 100) g;
     CREATE TABLE parted (id int PRIMARY KEY, k int) PARTITION BY RANGE (id);
     CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000); INSERT INTO parted SELECT g, g % 7 FROM generate_series(0, 999) g;
     CREATE INDEX parted_k ON parted (k);
     CREATE FUNCTION slow_on_copy_target(v int) RETURNS boolean LANGUAGE plpgsql AS $$
       BEGIN IF current_database() = 't_copy' THEN PERFORM pg_sleep(0.005); END IF; RETURN true; END $$;
     CREATE TABLE slow (id int PRIMARY KEY, v int CHECK (slow_on_copy_target(v))); INSERT INTO slow SELECT g, g FROM generate_series(1, 3000) g;
     COMMENT ON DATABASE shop IS 'the shop, before pgmove'; ALTER DATABASE shop SET work_mem = '8MB'`,
  );
  for (const db of ['t_preflight', 't_copy', 't_postdata', 't_syncing', 't_cutover']) await adminQuery(target, 'postgres', `CREATE DATABASE ${db}`);
  await adminQuery(target, 'postgres', `COMMENT ON DATABASE t_postdata IS 'an empty target, commented'`);
});

afterAll(() => stack.stop());

function spec(id: string, sourceDb: string, targetDb: string, extra: Partial<MigrationSpecInput> = {}): MigrationSpecInput {
  return {
    id,
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/${sourceDb}`, password: stack.secretFile('s', source.superuserPassword) },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/${targetDb}`, password: stack.secretFile('t', target.superuserPassword) },
    jobs: 1,
    copy: { splitTablesLargerThanMB: 100000, batchSmallTablesUpToMB: 1 },
    logical: { replicaIdentityFull: true, statusInterval: '1s' },
    timeouts: { heartbeat: '5s' },
    ...extra,
  };
}

/** Every role's attributes and memberships on the source. */
async function rolesAndMemberships(): Promise<string[]> {
  const rows = await adminQuery<{ line: string }>(
    source,
    'postgres',
    `SELECT format('%s super=%s repl=%s createdb=%s createrole=%s bypassrls=%s login=%s member of {%s}', r.rolname, r.rolsuper, r.rolreplication, r.rolcreatedb,
                   r.rolcreaterole, r.rolbypassrls, r.rolcanlogin,
                   (SELECT string_agg(g.rolname, ',' ORDER BY g.rolname) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid)) AS line
       FROM pg_roles r WHERE r.rolname NOT LIKE 'pg\\_%' ORDER BY r.rolname`,
  );
  return rows.map((r) => r.line);
}

/** What a migration may leave on the servers and the worker. */
async function leftoverState(id: string, sourceDb: string, targetDb: string) {
  return {
    sourceRoles: await rolesAndMemberships(),
    hbaSha256: sha256(hba),
    hbaSideFiles: elevationLeftovers(source),
    sourceReplication: await replicationLeftovers(source, sourceDb),
    replicaIdentities: await replicaIdentities(source, sourceDb),
    sourceDatabase: await databaseAccessState(source, sourceDb),
    targetObjects: await userObjects(target, targetDb),
    targetReplication: await replicationLeftovers(target, targetDb),
    targetDatabase: await databaseAccessState(target, targetDb),
    scratchFiles: existsSync(join(stack.dir, 'work', id)),
  };
}
type State = Awaited<ReturnType<typeof leftoverState>>;

/** Like a lost node: the worker dies (nothing of the run continues), then the run is terminated. */
async function terminate(handle: WorkflowHandle): Promise<void> {
  await stopWorkerProcess(worker, 'SIGKILL');
  await handle.terminate('test: terminated mid-run');
  worker = await stack.startWorker();
}

async function recover(id: string, args: string[] = []): Promise<string> {
  const result = await pgmoveCliAsync(stack, ['recover', id, ...args]);
  if (result.code !== 0) throw new Error(`pgmove recover ${[id, ...args].join(' ')} exited ${result.code}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

/** --dry-run changes nothing; the real run restores everything; returns both outputs. */
async function recoverToBefore(id: string, sourceDb: string, targetDb: string, before: State, args: string[] = []): Promise<{ dry: string; done: string }> {
  const during = await leftoverState(id, sourceDb, targetDb);
  expect(during).not.toEqual(before);
  const dry = await recover(id, ['--dry-run', ...args]);
  expect(dry).toContain('dry run: nothing was changed');
  expect(dry).not.toMatch(/\bundone\b/);
  expect(await leftoverState(id, sourceDb, targetDb)).toEqual(during);
  const done = await recover(id, args);
  expect(done).not.toMatch(/would undo|failed/);
  expect(await leftoverState(id, sourceDb, targetDb)).toEqual(before);
  expect(await userObjects(target, targetDb)).toEqual([]);
  return { dry, done };
}

async function sessionsWaitingOnLocks(cluster: ClusterHandle, database: string): Promise<boolean> {
  const rows = await adminQuery<{ n: number }>(cluster, 'postgres', `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'`, [database]);
  return rows[0]!.n > 0;
}

async function sessionsCopying(cluster: ClusterHandle, database: string): Promise<boolean> {
  const rows = await adminQuery<{ n: number }>(cluster, 'postgres', `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query ILIKE 'COPY %'`, [database]);
  return rows[0]!.n > 0;
}

/** A session of the test holding `sql`'s lock until released. */
async function holdLock(cluster: ClusterHandle, database: string, sql: string): Promise<{ release: () => Promise<void> }> {
  const client = new Client({ host: cluster.host, port: cluster.port, database, user: cluster.superuser, password: cluster.superuserPassword });
  client.on('error', () => undefined);
  await client.connect();
  await client.query('BEGIN');
  await client.query(sql);
  return { release: () => client.end() };
}

const line = (item: string, action: string) => new RegExp(`^\\s+${item}\\s+${action}\\s`, 'm');

test('terminated in pre-flight after the privilege hack: the role and pg_hba.conf as before', async () => {
  const id = 'recover-preflight';
  const before = await leftoverState(id, 'elevdb', 't_preflight');
  // Pre-flight reads the target's extensions: it waits behind this lock, after the elevation.
  const lock = await holdLock(target, 't_preflight', 'LOCK TABLE pg_catalog.pg_extension IN ACCESS EXCLUSIVE MODE');
  try {
    const input = spec(id, 'elevdb', 't_preflight', { method: 'dump', freezeSource: true });
    input.source = {
      uri: `postgresql://dumper@127.0.0.1:${source.port}/elevdb`,
      password: stack.secretFile('dumper', 'dumper-pw'),
      privilegeElevation: { backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') },
    };
    const handle = await startMigration(stack, input);
    await waitForStatus(handle, 'pre-flight after the elevation', (s) => s.phase === 'preflight' && s.privilegeElevation?.elevated === true);
    await waitFor('pre-flight to wait on the target', () => sessionsWaitingOnLocks(target, 't_preflight'), 60_000, 50);
    await terminate(handle);
  } finally {
    await lock.release();
  }
  expect((await rolesAndMemberships()).find((r) => r.startsWith('dumper '))).toContain('super=t ');
  const { dry, done } = await recoverToBefore(id, 'elevdb', 't_preflight', before);
  expect(dry).toMatch(line('privilege elevation', 'would undo'));
  expect(dry).toContain('SUPERUSER granted to dumper');
  expect(done).toMatch(line('privilege elevation', 'undone'));
  expect(done).toMatch(line('target objects', 'nothing found'));
});

test('terminated during the copy (offline, source fenced): fence lifted, target reset, scratch files removed', async () => {
  const id = 'recover-copy';
  const before = await leftoverState(id, 'shop', 't_copy');
  const handle = await startMigration(stack, spec(id, 'shop', 't_copy', { method: 'dump', freezeSource: true }));
  await waitForStatus(handle, 'the copy', (s) => s.phase === 'copy', 180_000);
  await waitFor('a COPY into the target', () => sessionsCopying(target, 't_copy'), 60_000, 50);
  await terminate(handle);
  expect((await databaseAccessState(source, 'shop')).comment).toMatch(/^pgmove freeze marker: /);
  const { dry, done } = await recoverToBefore(id, 'shop', 't_copy', before);
  for (const [item, server] of [['fence', 'source'], ['target objects', 'target'], ['scratch files', 'worker']]) {
    expect(dry).toMatch(line(item!, 'would undo'));
    expect(done).toMatch(line(item!, 'undone'));
    expect(done).toContain(`${server}:`);
  }
});

test('terminated in post-data (logical): slot, publication and replica identity restored, target reset; a second recover finds nothing', async () => {
  const id = 'recover-postdata';
  const before = await leftoverState(id, 'shop', 't_postdata');
  const handle = await startMigration(stack, spec(id, 'shop', 't_postdata', { method: 'logical' }));
  await waitForStatus(handle, 'the copy', (s) => s.phase === 'copy', 180_000);
  // The copy fills the partition; post-data's index on the partitioned parent waits behind this lock.
  const lock = await holdLock(target, 't_postdata', 'LOCK TABLE ONLY parted IN ROW EXCLUSIVE MODE');
  try {
    await waitForStatus(handle, 'post-data', (s) => s.phase === 'postData', 180_000);
    await waitFor('post-data to wait on the target', () => sessionsWaitingOnLocks(target, 't_postdata'), 60_000, 50);
    await terminate(handle);
  } finally {
    await lock.release();
  }
  expect((await replicaIdentities(source, 'shop')).nokey).toBe('f');
  const { dry, done } = await recoverToBefore(id, 'shop', 't_postdata', before);
  expect(dry).toMatch(line('replication slot', 'would undo'));
  expect(dry).toContain('replica identity public.nokey FULL → DEFAULT');
  for (const item of ['replication slot', 'publication', 'target objects']) expect(done).toMatch(line(item, 'undone'));
  const again = await recover(id);
  expect(again).not.toMatch(/undone|would undo|failed/);
  expect(await leftoverState(id, 'shop', 't_postdata')).toEqual(before);
});

test('terminated while syncing, history deleted: refused while running, then recovered with -f spec', async () => {
  const id = 'recover-syncing';
  const input = spec(id, 'shop', 't_syncing', { method: 'logical' });
  const before = await leftoverState(id, 'shop', 't_syncing');
  const handle = await startMigration(stack, input);
  await waitForStatus(handle, 'streaming', (s) => s.phase === 'syncing' && s.replication?.streaming === true, 180_000);
  const running = await pgmoveCliAsync(stack, ['recover', id]);
  expect(running.code).toBe(1);
  expect(running.stderr).toContain('still running');
  await terminate(handle);
  // Another migration into the left-behind target is refused before it writes, naming the recover to run.
  const again = await startMigration(stack, { ...spec('recover-syncing-again', 'shop', 't_syncing', { method: 'logical' }), dryRun: true });
  const refusal = await migrationFailure(again);
  expect(refusal.message).toContain('target not claimed by another migration');
  expect(refusal.message).toContain(`pgmove recover ${id}`);
  await stack.client!.workflowService.deleteWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: id } });
  await waitFor('the history to be gone', () => handle.describe().then(() => false, (error: unknown) => error instanceof WorkflowNotFoundError), 60_000, 200);
  const withoutSpec = await pgmoveCliAsync(stack, ['recover', id]);
  expect(withoutSpec.code).toBe(1);
  expect(withoutSpec.stderr).toContain(`pgmove recover ${id} -f spec.yaml`);
  const file = writeSpec(stack, id, input);
  const { done } = await recoverToBefore(id, 'shop', 't_syncing', before, ['-f', file]);
  expect(done).toContain(`spec from ${file}`);
  expect(done).toMatch(line('subscription', 'undone'));
});

test('terminated inside the cutover (source fenced, draining): fence lifted, nothing switched, target reset', async () => {
  const id = 'recover-cutover';
  const before = await leftoverState(id, 'shop', 't_cutover');
  const handle = await startMigration(stack, spec(id, 'shop', 't_cutover', { method: 'logical', cutover: { drainTimeout: '10m' } }));
  await waitForStatus(handle, 'streaming', (s) => s.phase === 'syncing' && s.replication?.streaming === true, 180_000);
  // The apply worker waits behind this lock for the row below: the cutover's drain cannot end.
  const lock = await holdLock(target, 't_cutover', 'LOCK TABLE small_a IN ACCESS EXCLUSIVE MODE');
  try {
    await adminQuery(source, 'shop', `INSERT INTO small_a (name) VALUES ('written before the cutover')`);
    await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'test' }] });
    await waitFor('the source to be fenced by the cutover', async () => (await databaseAccessState(source, 'shop')).comment?.startsWith('pgmove freeze marker: '), 120_000, 50);
    await terminate(handle);
  } finally {
    await lock.release();
  }
  const { done } = await recoverToBefore(id, 'shop', 't_cutover', before);
  for (const item of ['fence', 'subscription', 'replication slot', 'publication', 'target objects']) expect(done).toMatch(line(item, 'undone'));
});
