/**
 * A cluster migration, 15 → 18: five databases sharing roles, concurrency 2, three with the dump method
 * and two online (logical) that cut over together. The first cluster cutover is called off by its
 * switch hook (exit 1): both online databases resume syncing with their sources writable. The second
 * switches both. Afterwards every database is equal (independent comparison), roles exist RDS-safe
 * with their memberships and attributes, owners, grants, default privileges, database settings and
 * grants follow, the parent continued as new at least once, and no replication object is left.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import type { WorkflowHandle } from '@temporalio/client';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { compareDatabases, type DbRef } from '../helpers/compare';
import { replicationLeftovers } from '../helpers/online';
import { databaseAccessState, pgmoveCliAsync } from '../helpers/migration';
import { APP_RW_PASSWORD, createAppDatabase, createSharedRoles, roleState, waitForCluster } from '../helpers/cluster';
import { clusterStatusQuery, requestCutoverUpdate } from '../../workflows/messages';
import type { ClusterResult } from '../../workflows/migrate-cluster';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
const DUMP_DATABASES = ['accounts', 'analysis', 'filestore'];
const ref = (cluster: ClusterHandle, database: string): DbRef => ({ host: cluster.host, port: cluster.port, user: cluster.superuser, password: cluster.superuserPassword, database });

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await createSharedRoles(source);
  for (const [i, database] of [...DUMP_DATABASES, 'jobs', 'metrics'].entries()) await createAppDatabase(source, database, 1000 + i * 500);
  await adminQuery(source, 'postgres', `REVOKE CONNECT ON DATABASE accounts FROM PUBLIC; GRANT CONNECT ON DATABASE accounts TO app_rw;
    ALTER DATABASE metrics SET work_mem = '8MB'; COMMENT ON DATABASE analysis IS 'analysis db'`);
  await stack.startWorker({ PGMOVE_TEST_SOURCE_PASSWORD: source.superuserPassword, PGMOVE_TEST_APP_RW_PASSWORD: APP_RW_PASSWORD });
});

afterAll(() => stack.stop());

test('five databases with shared roles, dump and logical, one cluster cutover that is called off and one that switches', async () => {
  const flag = join(stack.dir, 'switch-allowed');
  const hookLog = join(stack.dir, 'switch-hook.log');
  const handle: WorkflowHandle = await stack.client!.workflow.start('migrateCluster', {
    taskQueue: stack.taskQueue,
    workflowId: 'cluster-main',
    args: [
      {
        id: 'cluster-main',
        source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/postgres`, password: 'env:PGMOVE_TEST_SOURCE_PASSWORD' },
        target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/postgres`, password: stack.secretFile('target', target.superuserPassword) },
        concurrency: 2,
        defaults: { method: 'dump', jobs: 2, logical: { statusInterval: '1s' }, cutover: { maxLagBytes: '64MB' } },
        databases: [...DUMP_DATABASES, { name: 'jobs', method: 'logical' }, { name: 'metrics', method: 'logical', targetName: 'metrics_new' }],
        roles: { passwords: { app_rw: 'env:PGMOVE_TEST_APP_RW_PASSWORD' } },
        cutover: { mode: 'together', switchHook: ['sh', '-c', `test -f '${flag}' && echo "$PGMOVE_TARGET_DATABASES" >> '${hookLog}'`], readyTimeout: '90s' },
        historyEventsPerRun: 100,
      },
    ],
  });

  // The dump databases complete; the online ones wait for the cutover, streaming.
  await waitForCluster(handle, 'dump databases completed, online ones syncing', (s) =>
    s.databases.length === 5 && s.databases.every((r) => (r.method === 'logical' ? r.phase === 'syncing' && r.cutoverBlocker === '' : r.status === 'completed')),
  );
  await adminQuery(source, 'jobs', `INSERT INTO items (name) SELECT 'late-' || g FROM generate_series(1, 100) g`);
  await adminQuery(source, 'metrics', `UPDATE items SET name = name || '-changed' WHERE id % 10 = 0`);

  // Attempt 1: the switch hook refuses (no flag): none switches, both resume syncing, sources writable.
  const first = await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'test' }] });
  expect(first.accepted).toBe(true);
  const calledOff = await waitForCluster(handle, 'first cluster cutover called off, both syncing again', (s) =>
    s.cutovers?.[0]?.outcome === 'failed' && s.phase === 'databases' && s.databases.filter((r) => r.method === 'logical').every((r) => r.phase === 'syncing' && r.cutoverBlocker === ''),
  );
  expect(calledOff.cutovers![0]!.error).toMatch(/switch hook/);
  expect(existsSync(hookLog)).toBe(false);
  for (const database of ['jobs', 'metrics']) {
    const client = new Client({ host: source.host, port: source.port, database, user: 'app_rw', password: APP_RW_PASSWORD });
    await client.connect();
    try {
      await client.query(`INSERT INTO items (name) VALUES ('after-called-off')`);
    } finally {
      await client.end();
    }
  }

  // Attempt 2 switches both.
  writeFileSync(flag, 'yes');
  await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'test', reason: 'second try' }] });
  const result = (await handle.result()) as ClusterResult;
  expect(result.outcome).toBe('completed');
  expect(result.status.databases.map((r) => [r.database, r.status])).toEqual([...DUMP_DATABASES, 'jobs', 'metrics'].map((d) => [d, 'completed']));
  expect(result.status.databases.map((r) => r.method)).toEqual(['dump', 'dump', 'dump', 'logical', 'logical']);
  expect(result.status.runs).toBeGreaterThanOrEqual(2);
  expect(result.status.cutovers!.map((c) => c.outcome)).toEqual(['failed', 'switched']);
  expect(readFileSync(hookLog, 'utf8').trim().split('\n')).toEqual(['jobs,metrics_new']);

  // The switched sources stay fenced; one `pgmove unfreeze` of the cluster releases every database
  // (before the comparison: the fence's read-only default is a database setting of the source).
  for (const database of ['jobs', 'metrics']) expect((await databaseAccessState(source, database)).settings).toContain('default_transaction_read_only=on');
  const released = await pgmoveCliAsync(stack, ['unfreeze', 'cluster-main']);
  expect(released.stdout).toContain('cluster-main.jobs: source writable again');
  expect(released.stdout).toContain('cluster-main.metrics: source writable again');
  expect(released.stdout).toContain('cluster-main.accounts: nothing to do');
  expect(released.code).toBe(0);
  for (const database of ['jobs', 'metrics']) {
    expect((await databaseAccessState(source, database)).settings ?? []).not.toContain('default_transaction_read_only=on');
    const app = new Client({ host: source.host, port: source.port, database, user: 'app_rw', password: APP_RW_PASSWORD });
    await app.connect();
    await app.query('SELECT 1 FROM items LIMIT 1 FOR UPDATE'); // a write lock: refused in a read-only transaction
    await app.end();
  }

  // Data: every database equal, by an independent comparison.
  for (const [sourceDb, targetDb] of [...DUMP_DATABASES.map((d) => [d, d]), ['jobs', 'jobs'], ['metrics', 'metrics_new']]) {
    expect({ database: sourceDb, differences: await compareDatabases(ref(source, sourceDb!), ref(target, targetDb!)) }).toEqual({ database: sourceDb, differences: [] });
  }
  for (const database of ['jobs', 'metrics']) expect(await replicationLeftovers(source, database)).toEqual([]);
  expect(await replicationLeftovers(target, 'jobs')).toEqual([]);

  // Roles: RDS-safe attributes, memberships, passwords only from references.
  expect(await roleState(target, 'app_owner')).toMatchObject({ login: false, memberOf: [] });
  expect(await roleState(target, 'app_rw')).toMatchObject({ login: true, connlimit: 20, memberOf: ['app_owner'] });
  expect(await roleState(target, 'app_ro')).toMatchObject({ login: false, memberOf: ['reporting+admin'] });
  expect(await roleState(target, 'reporting')).toMatchObject({ login: false, inherit: false, createdb: true, comment: 'reporting group' });
  expect(await roleState(target, 'ops admin')).toMatchObject({ superuser: false, replication: false, comment: null });
  expect(result.status.globals).toMatchObject({ rolesNeedingPassword: expect.arrayContaining(['app_ro', 'ops admin']), attributesDropped: { 'ops admin': ['SUPERUSER', 'REPLICATION'] } });
  expect(await adminQuery(target, 'postgres', `SELECT setconfig FROM pg_db_role_setting WHERE setrole = 'app_ro'::regrole AND setdatabase = 0`)).toEqual([{ setconfig: ['statement_timeout=30s'] }]);

  // Owners, grants and default privileges followed the objects; database settings and grants too.
  const [owned] = await adminQuery<{ owner: string; ro: boolean; rw: boolean; defaults: number }>(
    target,
    'accounts',
    `SELECT pg_get_userbyid(relowner) AS owner, has_table_privilege('app_ro', 'items', 'SELECT') AS ro,
            has_table_privilege('app_rw', 'items', 'INSERT') AS rw, (SELECT count(*)::int FROM pg_default_acl) AS defaults
       FROM pg_class WHERE relname = 'items'`,
  );
  expect(owned).toEqual({ owner: 'app_owner', ro: true, rw: true, defaults: 1 });
  const [databases] = await adminQuery<Record<string, unknown>>(
    target,
    'postgres',
    `SELECT has_database_privilege('app_ro', 'accounts', 'CONNECT') AS ro_connect, has_database_privilege('app_rw', 'accounts', 'CONNECT') AS rw_connect,
            (SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = 'metrics_new') AND setrole = 0) AS metrics_settings,
            (SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'analysis') AS analysis_comment,
            (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'jobs') AS jobs_owner`,
  );
  expect(databases).toEqual({ ro_connect: false, rw_connect: true, metrics_settings: ['work_mem=8MB'], analysis_comment: 'analysis db', jobs_owner: 'app_owner' });
  // The online databases got the source's grants and comment as they were before the switch, not its fence.
  const [online] = await adminQuery<Record<string, unknown>>(
    target,
    'postgres',
    `SELECT has_database_privilege('app_rw', 'jobs', 'CONNECT') AS jobs_rw, has_database_privilege('app_rw', 'metrics_new', 'CONNECT') AS metrics_rw,
            (SELECT count(*)::int FROM pg_database WHERE datname IN ('jobs', 'metrics_new') AND shobj_description(oid, 'pg_database') LIKE 'pgmove%') AS marked`,
  );
  expect(online).toEqual({ jobs_rw: true, metrics_rw: true, marked: 0 });
  const locale = `SELECT pg_encoding_to_char(encoding) AS encoding, datcollate, datctype, datlocprovider FROM pg_database WHERE datname = $1`;
  expect(await adminQuery(target, 'postgres', locale, ['metrics_new'])).toEqual(await adminQuery(source, 'postgres', locale, ['metrics']));
  // app_rw's password came from its reference (as a SCRAM verifier): it logs in on the target.
  const login = new Client({ host: target.host, port: target.port, database: 'accounts', user: 'app_rw', password: APP_RW_PASSWORD });
  await login.connect();
  expect((await login.query<{ n: string }>('SELECT count(*)::text AS n FROM items')).rows[0]!.n).toBe('1000');
  await login.end();

  // The status query still answers after the end, with the table.
  const status = await handle.query(clusterStatusQuery);
  expect(status.kind).toBe('cluster');
  expect(status.phase).toBe('completed');

});
