/**
 * Cluster migrations at their edges: one database failing pre-flight fails the whole migration before
 * anything is written (allOrNothing), or is reported and skipped (bestEffort); an abort while an online
 * database syncs removes everything the migration created (databases, roles, replication objects) and
 * leaves what it did not create alone; aborting one child touches only that database; a dry run writes
 * nothing; with cutover.mode perDatabase each database is cut over on its own.
 */
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { migrationFailure, pgmoveCliAsync, writeSpec } from '../helpers/migration';
import { compareDatabases } from '../helpers/compare';
import { replicationLeftovers } from '../helpers/online';
import { createAppDatabase, createSharedRoles, roleState, waitForCluster } from '../helpers/cluster';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { abortSignal, clusterStatusQuery, requestCutoverUpdate } from '../../workflows/messages';
import type { ClusterResult } from '../../workflows/migrate-cluster';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await createSharedRoles(source);
  for (const database of ['alpha', 'beta', 'gamma']) await createAppDatabase(source, database, 500);
  // A target database that already holds data: pre-flight must refuse to migrate into it.
  await adminQuery(target, 'postgres', 'CREATE DATABASE beta');
  await adminQuery(target, 'beta', 'CREATE TABLE precious (id int); INSERT INTO precious VALUES (42)');
  await stack.startWorker({ PGMOVE_TEST_SOURCE_PASSWORD: source.superuserPassword });
});

afterAll(() => stack.stop());

function clusterSpec(id: string, extra: Record<string, unknown>) {
  return {
    id,
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/postgres`, password: 'env:PGMOVE_TEST_SOURCE_PASSWORD' },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/postgres`, password: stack.secretFile(`${id}-target`, target.superuserPassword) },
    defaults: { method: 'dump', jobs: 1, logical: { statusInterval: '1s' } },
    ...extra,
  };
}

async function targetState(): Promise<{ databases: string[]; roles: string[] }> {
  const databases = (await adminQuery<{ datname: string }>(target, 'postgres', 'SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1')).map((r) => r.datname);
  const roles = (await adminQuery<{ rolname: string }>(target, 'postgres', `SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1`)).map((r) => r.rolname);
  return { databases, roles };
}

test('allOrNothing: one database failing pre-flight fails the migration before anything is written', async () => {
  const before = await targetState();
  const handle = await stack.client!.workflow.start('migrateCluster', {
    taskQueue: stack.taskQueue,
    workflowId: 'cluster-all-or-nothing',
    args: [clusterSpec('cluster-all-or-nothing', { databases: ['alpha', 'beta', 'gamma'] })],
  });
  const failure = await migrationFailure(handle);
  expect(failure.type).toBe('PreflightFailed');
  expect(failure.message).toMatch(/nothing was written/);
  expect(failure.message).toMatch(/beta: .*target is empty.*precious/s);
  expect(failure.message).not.toMatch(/alpha:/);
  expect(await targetState()).toEqual(before);
  expect(await adminQuery(target, 'beta', 'SELECT id FROM precious')).toEqual([{ id: 42 }]);
  const status = await handle.query(clusterStatusQuery);
  expect(status.databases.map((r) => r.status)).toEqual(['pending', 'skipped', 'pending']);
  expect(status.globals).toBeUndefined();
});

test('bestEffort: the failing database is reported and skipped, the others migrate (started with pgmove start --wait)', async () => {
  const specFile = writeSpec(stack, 'best-effort', clusterSpec('cluster-best-effort', { databases: ['alpha', 'beta', 'gamma'], onPreflightFailure: 'bestEffort', roles: { migrate: false }, defaults: { method: 'dump', dump: { noPrivileges: true } } }));
  const cli = await pgmoveCliAsync(stack, ['start', '-f', specFile, '--wait']);
  expect(cli.stderr).toBe('');
  expect(cli.code).toBe(0);
  expect(cli.stdout).toMatch(/^cluster-best-effort\n/);
  expect(cli.stdout).toMatch(/cluster migration cluster-best-effort: completed/);
  expect(cli.stdout).toMatch(/\bbeta +beta +dump +skipped +skipped .*target is empty/);
  const result = (await stack.client!.workflow.getHandle('cluster-best-effort').result()) as ClusterResult;
  expect(result.status.databases.map((r) => [r.database, r.status])).toEqual([['alpha', 'completed'], ['beta', 'skipped'], ['gamma', 'completed']]);
  expect(result.status.databases[1]!.error).toMatch(/target is empty/);
  expect(result.status.warnings.join('\n')).toMatch(/skipped after a failed pre-flight .*beta/);
  for (const database of ['alpha', 'gamma']) {
    const ref = (c: ClusterHandle) => ({ host: c.host, port: c.port, user: c.superuser, password: c.superuserPassword, database });
    expect(await compareDatabases(ref(source), ref(target))).toEqual([]);
  }
  expect(await adminQuery(target, 'beta', 'SELECT id FROM precious')).toEqual([{ id: 42 }]);
  // Roles were not asked for: none was created.
  expect(await roleState(target, 'app_owner')).toBeUndefined();
  for (const database of ['alpha', 'gamma']) await adminQuery(target, 'postgres', `DROP DATABASE ${database}`);
});

test('abort while an online database syncs: everything the migration created is gone, the rest untouched; one child aborts alone', async () => {
  // A pre-existing, empty target database and role of the same names as the source's: not ours.
  await adminQuery(target, 'postgres', 'CREATE DATABASE gamma');
  await adminQuery(target, 'postgres', 'CREATE ROLE reporting NOLOGIN');
  const before = await targetState();
  const handle = await stack.client!.workflow.start('migrateCluster', {
    taskQueue: stack.taskQueue,
    workflowId: 'cluster-abort',
    args: [clusterSpec('cluster-abort', { databases: [{ name: 'alpha', method: 'logical' }, { name: 'gamma', method: 'logical' }], concurrency: 2 })],
  });
  await waitForCluster(handle, 'both syncing', (s) => s.databases.length === 2 && s.databases.every((r) => r.phase === 'syncing'));
  expect((await targetState()).databases).toContain('alpha');

  // One child aborted on its own: only its database's replication objects go; the other keeps streaming.
  await stack.client!.workflow.getHandle('cluster-abort.gamma').signal(abortSignal, { reason: 'only gamma' });
  await waitForCluster(handle, 'gamma aborted', (s) => s.databases[1]!.status === 'aborted');
  // Slots are server-wide: gamma's is gone, alpha's (and its publication) stay.
  expect(await replicationLeftovers(source, 'gamma')).toEqual([expect.stringMatching(/^slot pgmove_cluster_abort_alpha_/)]);
  expect(await replicationLeftovers(source, 'alpha')).toEqual([expect.stringMatching(/^publication pgmove_cluster_abort_alpha_/), expect.stringMatching(/^slot pgmove_cluster_abort_alpha_/)]);
  expect(await replicationLeftovers(target, 'gamma')).toEqual([expect.stringMatching(/^subscription pgmove_cluster_abort_alpha_/)]);
  await adminQuery(source, 'alpha', `INSERT INTO items (name) VALUES ('still streaming')`);
  await waitForCluster(handle, 'alpha still syncing', (s) => s.databases[0]!.phase === 'syncing' && s.databases[0]!.status === 'running');

  await handle.signal(abortSignal, { reason: 'test abort' });
  const failure = await migrationFailure(handle);
  expect(failure.type).toBe('Aborted');
  const status = await handle.query(clusterStatusQuery);
  expect(status.phase).toBe('aborted');
  expect(status.databases.map((r) => r.status)).toEqual(['aborted', 'aborted']);
  for (const database of ['alpha', 'gamma']) expect(await replicationLeftovers(source, database)).toEqual([]);
  // Created databases and roles are dropped; the pre-existing gamma database and reporting role stay.
  expect(await targetState()).toEqual(before);
  expect(await roleState(target, 'reporting')).toMatchObject({ comment: null });
});

test('dryRun: every database is pre-flighted and reported, nothing is written', async () => {
  const before = await targetState();
  const handle = await stack.client!.workflow.start('migrateCluster', {
    taskQueue: stack.taskQueue,
    workflowId: 'cluster-dry-run',
    args: [clusterSpec('cluster-dry-run', { databases: 'all', exceptDatabases: ['beta'], dryRun: true, defaults: { method: 'auto' } })],
  });
  const result = (await handle.result()) as ClusterResult;
  expect(result.outcome).toBe('dryRun');
  expect(result.status.phase).toBe('dryRunCompleted');
  // databases: all = every source database accepting connections but postgres and the excepted ones.
  expect(result.status.databases.map((r) => [r.database, r.method, r.status])).toEqual([
    ['alpha', 'logical', 'pending'],
    ['gamma', 'logical', 'pending'],
  ]);
  expect(await targetState()).toEqual(before);
});

test('cutover.mode perDatabase: the cluster refuses one cutover, each database is cut over on its own', async () => {
  const handle = await stack.client!.workflow.start('migrateCluster', {
    taskQueue: stack.taskQueue,
    workflowId: 'cluster-per-database',
    args: [clusterSpec('cluster-per-database', { databases: [{ name: 'alpha', method: 'logical', targetName: 'alpha_per_db' }], roles: { migrate: false }, defaults: { method: 'dump', dump: { noPrivileges: true }, logical: { statusInterval: '1s' } }, cutover: { mode: 'perDatabase' } })],
  });
  // Ready for a cutover: syncing alone is reported before the first stream measurement.
  await waitForCluster(handle, 'alpha syncing, nothing blocking a cutover', (s) => s.databases[0]?.phase === 'syncing' && s.databases[0].cutoverBlocker === '');
  await expect(handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'test' }] })).rejects.toThrow(WorkflowUpdateFailedError);
  const cli = await pgmoveCliAsync(stack, ['cutover', 'cluster-per-database.alpha']);
  expect(cli.stdout).toMatch(/^accepted: /);
  const result = (await handle.result()) as ClusterResult;
  expect(result.status.databases.map((r) => [r.database, r.method, r.status])).toEqual([['alpha', 'logical', 'completed']]);
  // The switched source stays fenced until released; the child's id releases that database.
  const released = await pgmoveCliAsync(stack, ['unfreeze', 'cluster-per-database.alpha']);
  expect(released.stdout).toContain('cluster-per-database.alpha: source writable again');
  expect(released.code).toBe(0);
  const ref = (c: ClusterHandle, database: string) => ({ host: c.host, port: c.port, user: c.superuser, password: c.superuserPassword, database });
  expect(await compareDatabases(ref(source, 'alpha'), ref(target, 'alpha_per_db'))).toEqual([]);
});
