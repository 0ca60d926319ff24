/**
 * Method dms. Pre-flight runs against a real PostgreSQL source and refuses DMS's silent-loss traps
 * before anything is created. The DMS activities run (as a worker runs them, in an activity context)
 * against a real moto server over HTTP: the API sequence create → start → describe → stop → delete.
 * moto moves no data and reports canned task statistics (and implements no DescribeTableStatistics),
 * so nothing here claims data was migrated by DMS: no data check is made against the target.
 */
import {
  DescribeEndpointsCommand,
  DescribeReplicationInstancesCommand,
  DescribeReplicationSubnetGroupsCommand,
  DescribeReplicationTasksCommand,
} from '@aws-sdk/client-database-migration-service';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { createNetwork, REGION, startMoto, type Moto } from '../helpers/aws';
import { migrationFailure, startMigration, userObjects } from '../helpers/migration';
import { waitForStatus } from '../helpers/online';
import { abortSignal, statusQuery } from '../../workflows/messages';
import { preflight } from '../../activities/preflight';
import { createDmsResources, startDmsTask, stopDmsTask, waitDmsFullLoad, type DmsInput, type DmsProgress } from '../../activities/dms';
import { cleanupAwsResources } from '../../activities/cleanup-aws';
import { parseSpec, type MigrationSpecInput } from '../../src/spec';
import type { PreflightReport } from '../../src/model';

const stack = new TestStack();
let moto: Moto;
let source: ClusterHandle;
let target: ClusterHandle;
let network: { vpcId: string; subnetIds: string[] };

beforeAll(async () => {
  moto = await startMoto(stack);
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await adminQuery(source, 'postgres', 'CREATE DATABASE lobs');
  await adminQuery(
    source,
    'lobs',
    `CREATE TABLE docs (id int PRIMARY KEY, body text, meta jsonb);
     INSERT INTO docs SELECT g, repeat('x', CASE WHEN g = 7 THEN 100000 ELSE 100 END), '{"a": 1}' FROM generate_series(1, 50) g;
     CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL);
     INSERT INTO blobs VALUES (1, '\\x0102');
     CREATE TABLE audit_log (at timestamptz, note varchar(40));
     INSERT INTO audit_log VALUES (now(), 'no primary key here');
     CREATE TABLE skip_me (id int PRIMARY KEY);`,
  );
  await adminQuery(target, 'postgres', 'CREATE DATABASE lobs');
  network = await createNetwork(moto.aws);
  process.env.PGMOVE_TEST_SOURCE_PW = source.superuserPassword;
  process.env.PGMOVE_TEST_TARGET_PW = target.superuserPassword;
  process.env.PGMOVE_AWS_POLL_MS = '100';
  await stack.startWorker({ ...moto.workerEnv, PGMOVE_TEST_SOURCE_PW: source.superuserPassword, PGMOVE_TEST_TARGET_PW: target.superuserPassword });
});

afterAll(async () => {
  await stack.stop().finally(() => moto?.stop());
});

function spec(dms: Record<string, unknown>): MigrationSpecInput {
  return {
    id: 'lobs-dms',
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/lobs`, password: 'env:PGMOVE_TEST_SOURCE_PW' },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/lobs`, password: 'env:PGMOVE_TEST_TARGET_PW' },
    method: 'dms',
    exclude: { tables: ['public.skip_me'] },
    aws: { region: REGION, endpoint: moto.server.endpoint },
    dms: { subnetIds: network.subnetIds, pollInterval: '100ms', ...dms },
  } as MigrationSpecInput;
}

/** Runs an activity as a worker would (activity context, heartbeats), in this process. */
function run<A extends unknown[], R>(fn: (...args: A) => Promise<R>, ...args: A): Promise<R> {
  return new MockActivityEnvironment().run(fn, ...args) as Promise<R>;
}

async function preflightFailure(input: MigrationSpecInput): Promise<ApplicationFailure> {
  const error = await new MockActivityEnvironment().run(preflight, input).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(ApplicationFailure);
  return error as ApplicationFailure;
}

test('dms pre-flight (real source): a table without primary key and a LOB larger than the limit are refused, with the size to set', async () => {
  const failure = await preflightFailure(spec({ lobMaxSizeKB: 32 }));
  expect(failure.nonRetryable).toBe(true);
  expect(failure.message).toMatch(/without a primary key, whose UPDATEs and DELETEs DMS CDC would skip silently: public\.audit_log/);
  expect(failure.message).toMatch(/LOB values larger than dms\.lobMaxSizeKB \(32 KB\).*public\.docs\.body \(98 KB\)/);
  expect(failure.message).toMatch(/set dms\.lobMaxSizeKB: 99/);
});

test('dms pre-flight: full LOB mode refuses NOT NULL LOB columns; sized limited mode with the no-PK table excluded passes', async () => {
  const full = await preflightFailure(spec({ lobMode: 'full', tablesWithoutPrimaryKey: 'exclude' }));
  expect(full.message).toMatch(/NOT NULL LOB columns.*public\.blobs\.data/);
  const ok = await run(preflight, spec({ lobMaxSizeKB: 128, tablesWithoutPrimaryKey: 'exclude' }));
  const report: PreflightReport = ok.report;
  expect(report.method).toBe('dms');
  expect(report.dms).toMatchObject({ excludedTables: ['public.audit_log'], maxLobBytes: 100000, maxLobColumn: 'public.docs.body', lobColumns: 3 });
});

test('dms API sequence against moto: create (idempotent), start, describe progress, stop, delete — moto moves no data, so no data is checked', async () => {
  const input: DmsInput = { spec: parseSpec(spec({ lobMaxSizeKB: 128, tablesWithoutPrimaryKey: 'exclude' })), migrationId: 'lobs-dms', excludedTables: ['public.audit_log'] };
  const created = await run(createDmsResources, input);
  expect(created.resources.map((r) => `${r.kind}:${r.id}`)).toEqual([
    'replicationSubnetGroup:pgmove-lobs-dms-dms-subnets',
    'replicationInstance:pgmove-lobs-dms-dms',
    'dmsEndpoint:pgmove-lobs-dms-dms-source',
    'dmsEndpoint:pgmove-lobs-dms-dms-target',
    'replicationTask:pgmove-lobs-dms-dms-task',
  ]);
  // A retry after a crash finds everything again: nothing is created twice.
  const again = await run(createDmsResources, input);
  expect(again.taskArn).toBe(created.taskArn);
  const dms = moto.aws.dms;
  expect((await dms.send(new DescribeReplicationInstancesCommand({}))).ReplicationInstances?.map((i) => [i.ReplicationInstanceIdentifier, i.ReplicationInstanceStatus])).toEqual([['pgmove-lobs-dms-dms', 'available']]);
  expect((await dms.send(new DescribeReplicationSubnetGroupsCommand({}))).ReplicationSubnetGroups).toHaveLength(1);
  const endpoints = (await dms.send(new DescribeEndpointsCommand({}))).Endpoints ?? [];
  expect(endpoints.map((e) => [e.EndpointType?.toLowerCase(), e.EngineName, e.ServerName, e.Port, e.DatabaseName, e.Username]).sort()).toEqual([
    ['source', 'postgres', '127.0.0.1', source.port, 'lobs', 'postgres'],
    ['target', 'postgres', '127.0.0.1', target.port, 'lobs', 'postgres'],
  ]);
  const [task] = (await dms.send(new DescribeReplicationTasksCommand({}))).ReplicationTasks ?? [];
  expect(task?.MigrationType).toBe('full-load-and-cdc');
  const rules = (JSON.parse(task!.TableMappings!) as { rules: { 'rule-action': string; 'object-locator': Record<string, string> }[] }).rules;
  expect(rules.map((r) => `${r['rule-action']} ${r['object-locator']['schema-name']}.${r['object-locator']['table-name']}`)).toEqual(['include %.%', 'exclude public.skip_me', 'exclude public.audit_log']);
  expect(JSON.parse(task!.ReplicationTaskSettings!)).toMatchObject({ TargetMetadata: { LimitedSizeLobMode: true, LobMaxSize: 128 }, FullLoadSettings: { TargetTablePrepMode: 'DO_NOTHING' } });

  expect((await run(startDmsTask, input)).status).toBe('running');
  const watcher = new MockActivityEnvironment();
  const beats: DmsProgress[] = [];
  watcher.on('heartbeat', (details: DmsProgress) => beats.push(details));
  const loaded = (await watcher.run(waitDmsFullLoad, input)) as DmsProgress;
  // These are moto's canned statistics (it loads nothing): they show the describe path, not a migration.
  expect(loaded).toMatchObject({ status: 'running', fullLoadPercent: 100, tablesErrored: 0 });
  expect(beats.some((b) => b.status === 'running')).toBe(true);
  expect((await run(stopDmsTask, input)).status).toBe('stopped');

  const cleanup = await run(cleanupAwsResources, { migrationId: 'lobs-dms', aws: input.spec.aws, dmsOnly: true });
  expect(cleanup.deleted.map((r) => r.kind)).toEqual(['replicationTask', 'dmsEndpoint', 'dmsEndpoint', 'replicationInstance', 'replicationSubnetGroup']);
  expect((await dms.send(new DescribeReplicationTasksCommand({}))).ReplicationTasks ?? []).toEqual([]);
  expect((await dms.send(new DescribeEndpointsCommand({}))).Endpoints ?? []).toEqual([]);
  expect((await dms.send(new DescribeReplicationInstancesCommand({}))).ReplicationInstances ?? []).toEqual([]);
  expect((await dms.send(new DescribeReplicationSubnetGroupsCommand({}))).ReplicationSubnetGroups ?? []).toEqual([]);
});

test('dms workflow against moto: pre-data, DMS resources, full load followed, post-data, syncing (moto runs no DMS engine: no slot, not streaming), abort deletes every DMS resource and resets the target — no data check', async () => {
  const handle = await startMigration(stack, { ...spec({ lobMaxSizeKB: 128, tablesWithoutPrimaryKey: 'exclude' }), id: 'lobs-dms-wf', logical: { statusInterval: '1s' } } as MigrationSpecInput);
  const syncing = await waitForStatus(handle, 'syncing with a measurement', (s) => s.phase === 'syncing' && s.replication !== undefined, 120_000);
  expect(syncing.method).toBe('dms');
  expect(Object.keys(syncing.timings)).toEqual(expect.arrayContaining(['preflight', 'preData', 'copy', 'postData', 'syncing']));
  expect(syncing.replication).toMatchObject({ streaming: false, warning: 'no DMS replication slot on the source yet' });
  expect(syncing.dms?.resources.map((r) => r.kind)).toEqual(['replicationSubnetGroup', 'replicationInstance', 'dmsEndpoint', 'dmsEndpoint', 'replicationTask']);
  expect(syncing.dms?.task?.status).toBe('running');
  expect((await moto.aws.dms.send(new DescribeReplicationTasksCommand({}))).ReplicationTasks?.map((t) => [t.ReplicationTaskIdentifier, t.Status])).toEqual([['pgmove-lobs-dms-wf-dms-task', 'running']]);
  // pgmove's own pre-data and post-data ran on the target (DMS only moves rows).
  expect(await userObjects(target, 'lobs')).toEqual(expect.arrayContaining(['audit_log', 'blobs', 'blobs_pkey', 'docs', 'docs_pkey']));

  await handle.signal(abortSignal, { reason: 'test: abort while syncing' });
  expect((await migrationFailure(handle)).type).toBe('Aborted');
  expect((await moto.aws.dms.send(new DescribeReplicationTasksCommand({}))).ReplicationTasks ?? []).toEqual([]);
  expect((await moto.aws.dms.send(new DescribeEndpointsCommand({}))).Endpoints ?? []).toEqual([]);
  expect((await moto.aws.dms.send(new DescribeReplicationInstancesCommand({}))).ReplicationInstances ?? []).toEqual([]);
  expect((await moto.aws.dms.send(new DescribeReplicationSubnetGroupsCommand({}))).ReplicationSubnetGroups ?? []).toEqual([]);
  expect(await userObjects(target, 'lobs')).toEqual([]);
  // The AWS cleanup deleted the DMS resources: nothing is listed as owed any more.
  expect((await handle.query(statusQuery)).cleanupOwed).toEqual([]);
});
