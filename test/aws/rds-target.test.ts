/**
 * target.provision (rds) against a real moto server over HTTP, with a real Temporal dev server and
 * worker processes. moto's RDS runs no PostgreSQL: the data path goes to a local PostgreSQL 18 through
 * target.endpointOverride, and the test (which may read moto's secrets) sets the local master role's
 * password to the one RDS generated in Secrets Manager — pgmove itself only ever holds its reference.
 */
import { readFileSync } from 'node:fs';
import { CreateDBInstanceCommand, DescribeDBInstancesCommand, DescribeDBSnapshotsCommand, DescribeDBParametersCommand, DescribeDBSubnetGroupsCommand, ListTagsForResourceCommand } from '@aws-sdk/client-rds';
import { CreateSecurityGroupCommand } from '@aws-sdk/client-ec2';
import { GetSecretValueCommand } from '@aws-sdk/client-secrets-manager';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { migrationFailure, pgmoveCli, startMigration } from '../helpers/migration';
import { STATEMENT_LOGGING_SETTINGS, createOnlineTarget, createPgbenchSource, waitForStatus, type OnlineDatabase } from '../helpers/online';
import { compareDatabases, type DbRef } from '../helpers/compare';
import { allText, awsInventory, createNetwork, managedSecrets, securityGroupsNamed, startMoto, type Moto } from '../helpers/aws';
import { waitFor } from '../../src/dev/ports';
import { stopWorkerProcess } from '../../src/dev/worker-process';
import { abortSignal } from '../../workflows/messages';
import { ident, literal } from '../../src/pg/sql';
import type { MigrationResult } from '../../workflows/migrate-database';
import type { MigrationSpecInput } from '../../src/spec';
import type { DeprovisionResult } from '../../src/aws/model';

const stack = new TestStack();
let moto: Moto;
let source: ClusterHandle;
let target: ClusterHandle;
let sourceDb: OnlineDatabase;
let network: { vpcId: string; subnetIds: string[] };

beforeAll(async () => {
  moto = await startMoto(stack);
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  sourceDb = await createPgbenchSource(source, 'shop', 1);
  // What RDS would create (database shop, master user = the source's user): here, locally.
  await createOnlineTarget(target, 'shop');
  network = await createNetwork(moto.aws);
  await stack.startWorker(moto.workerEnv);
});

afterAll(async () => {
  await stack.stop().finally(() => moto?.stop());
});

const ref = (cluster: ClusterHandle, database: string): DbRef => ({ host: cluster.host, port: cluster.port, user: cluster.superuser, password: cluster.superuserPassword, database });

function rdsSpec(id: string, provision: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): MigrationSpecInput {
  return {
    id,
    source: { uri: sourceDb.uri, password: stack.secretFile(`${id}-source`, sourceDb.password) },
    target: {
      provision: {
        type: 'rds',
        engineVersion: '16.4',
        instanceClass: 'db.t4g.micro',
        allocatedStorageGB: 20,
        subnetIds: network.subnetIds,
        allowedCidrs: ['10.20.0.0/16'],
        parameters: { work_mem: '65536' },
        tags: { team: 'data' },
        connectTimeout: '3m',
        ...provision,
      },
      endpointOverride: { host: '127.0.0.1', port: target.port },
    },
    aws: { region: 'us-east-1', endpoint: moto.server.endpoint },
    method: 'auto',
    jobs: 2,
    timeouts: { heartbeat: '5s' },
    logical: { statusInterval: '1s', replicaIdentityFull: true },
    // The next test migrates the same source again: writable after the switch.
    cutover: { autoCutover: true, sourceAfterSwitch: 'writable' },
    ...extra,
  } as MigrationSpecInput;
}

/** Manual DB snapshots of an instance (a final snapshot is one). */
async function snapshotsOf(identifier: string): Promise<string[]> {
  const snapshots = (await moto.aws.rds.send(new DescribeDBSnapshotsCommand({ DBInstanceIdentifier: identifier, SnapshotType: 'manual' })).catch(() => undefined))?.DBSnapshots ?? [];
  return snapshots.map((s) => s.DBSnapshotIdentifier!).sort();
}

async function instanceOf(identifier: string) {
  return (await moto.aws.rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: identifier })).catch(() => undefined))?.DBInstances?.[0];
}

/** The test's stand-in for RDS creating the master user: the local role gets the generated password. */
async function adoptGeneratedPassword(identifier: string, role: string): Promise<string> {
  const instance = await waitFor(`instance ${identifier} in moto`, async () => (await moto.aws.rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: identifier })).catch(() => undefined))?.DBInstances?.[0]);
  const secret = await moto.aws.secrets.send(new GetSecretValueCommand({ SecretId: instance.MasterUserSecret!.SecretArn! }));
  const password = (JSON.parse(secret.SecretString!) as { password: string }).password;
  await adminQuery(target, 'postgres', `ALTER ROLE ${ident(role)} PASSWORD ${literal(password)}`);
  return password;
}

test('rds target end to end: resources with the right properties, worker SIGKILLed while provisioning creates no duplicates, password only in Secrets Manager, data equal', async () => {
  const handle = await startMigration(stack, rdsSpec('shop-to-rds'));
  const identifier = 'pgmove-shop-to-rds';

  // The instance exists; the activity now waits for the data path (whose password is not set yet).
  await waitFor('the DB instance to be created', () => instanceOf(identifier), 120_000);
  const before = await awsInventory(moto.aws, identifier);
  await stopWorkerProcess(stack.workers[0]!, 'SIGKILL');
  await stack.startWorker(moto.workerEnv);
  // The retry (after the heartbeat timeout) describes first and finds everything the first attempt made.
  await waitFor('the provisioning retry', async () => {
    const pending = (await handle.describe()).raw.pendingActivities ?? [];
    return pending.some((a) => a.activityType?.name === 'provisionTarget' && (a.attempt ?? 1) >= 2);
  }, 120_000, 250);
  const password = await adoptGeneratedPassword(identifier, 'migrator');

  const result = (await handle.result()) as MigrationResult;
  expect(result.outcome).toBe('completed');
  expect(result.status.method).toBe('logical');
  expect(result.status.validation?.ok).toBe(true);

  // No duplicates: exactly what the first attempt created, one managed secret.
  const after = await awsInventory(moto.aws, identifier);
  expect(after).toEqual(before);
  expect(after).toEqual([`instance ${identifier}`, `parameter-group ${identifier}-params`, `security-group ${identifier}-sg`, `subnet-group ${identifier}-subnets`]);
  expect(await managedSecrets(moto.aws)).toHaveLength(1);
  expect(result.status.provisioned?.resources.filter((r) => r.reused).map((r) => r.kind).sort()).toEqual(['dbInstance', 'dbParameterGroup', 'dbSubnetGroup', 'securityGroup']);

  // Properties: parameter values, the ingress rule, the subnet group, tags.
  const params = (await moto.aws.rds.send(new DescribeDBParametersCommand({ DBParameterGroupName: `${identifier}-params`, Source: 'user' }))).Parameters ?? [];
  expect(Object.fromEntries(params.map((p) => [p.ParameterName, p.ParameterValue]))).toMatchObject({ 'rds.logical_replication': '1', work_mem: '65536' });
  const [sg] = await securityGroupsNamed(moto.aws, `${identifier}-sg`);
  expect(sg?.VpcId).toBe(network.vpcId);
  expect(sg?.IpPermissions?.map((p) => ({ proto: p.IpProtocol, from: p.FromPort, to: p.ToPort, cidrs: p.IpRanges?.map((r) => r.CidrIp) }))).toEqual([{ proto: 'tcp', from: 5432, to: 5432, cidrs: ['10.20.0.0/16'] }]);
  expect(sg?.Tags).toEqual(expect.arrayContaining([{ Key: 'pgmove:migration-id', Value: 'shop-to-rds' }, { Key: 'team', Value: 'data' }]));
  const subnetGroup = (await moto.aws.rds.send(new DescribeDBSubnetGroupsCommand({ DBSubnetGroupName: `${identifier}-subnets` }))).DBSubnetGroups![0]!;
  expect(subnetGroup.Subnets?.map((s) => s.SubnetIdentifier).sort()).toEqual([...network.subnetIds].sort());
  const instance = (await instanceOf(identifier))!;
  expect(instance).toMatchObject({ DBInstanceClass: 'db.t4g.micro', Engine: 'postgres', DBName: 'shop', MasterUsername: 'migrator', DBParameterGroups: [expect.objectContaining({ DBParameterGroupName: `${identifier}-params` })] });
  expect(instance.VpcSecurityGroups?.map((g) => g.VpcSecurityGroupId)).toEqual([sg?.GroupId]);
  const tags = (await moto.aws.rds.send(new ListTagsForResourceCommand({ ResourceName: instance.DBInstanceArn }))).TagList;
  expect(tags).toEqual(expect.arrayContaining([{ Key: 'pgmove:migration-id', Value: 'shop-to-rds' }, { Key: 'pgmove:managed-by', Value: 'pgmove' }, { Key: 'team', Value: 'data' }]));
  // The switch is recorded on the instance itself: cleanup refuses it even without the history.
  expect(result.status.cutovers?.some((c) => c.outcome === 'switched')).toBe(true);
  expect(tags?.find((t) => t.Key === 'pgmove:switched-at')?.Value).toMatch(/^\d{4}-\d\d-\d\dT/);
  // The instance is the product: kept after success.
  expect(instance.DBInstanceStatus).toBe('available');
  expect(result.status.provisioned?.passwordRef).toBe(`aws-secretsmanager:${instance.MasterUserSecret!.SecretArn}#password`);

  // The password lives only in Secrets Manager: not in the history, not in the status.
  const history = await handle.fetchHistory();
  const text = allText(history).join('\n');
  expect(text).toContain(instance.MasterUserSecret!.SecretArn!); // the reference travels…
  expect(text).not.toContain(password); // …the value never does
  expect(JSON.stringify(result)).not.toContain(password);
  for (const worker of stack.workers) expect(readFileSync(worker.logFile, 'utf8')).not.toContain(password);

  // `pgmove status` shows the instance and what was created for it, with the reference, never the password.
  const shown = pgmoveCli(stack, ['status', 'shop-to-rds']);
  expect(shown.stdout).toContain(`RDS instance ${identifier} (us-east-1) at ${instance.Endpoint!.Address}:5432, data path 127.0.0.1:${target.port}`);
  expect(shown.stdout).toMatch(/aws +securityGroup sg-\S+ — pgmove-shop-to-rds-sg: tcp\/5432 from 10\.20\.0\.0\/16 \(reused from an earlier attempt\)/);
  expect(shown.stdout).toMatch(/aws +dbParameterGroup pgmove-shop-to-rds-params — rds\.logical_replication=1, work_mem=65536/);
  expect(shown.stdout).not.toContain(password);

  // Data equal on the database behind the endpoint override.
  expect(await compareDatabases(ref(source, 'shop'), ref(target, 'shop'))).toEqual([]);
});

test('abort after provisioning: every resource this migration created is deleted, a similar-named untagged one is left alone', async () => {
  const identifier = 'pgmove-shop-abort';
  // Someone else's resources with similar names, without pgmove's tag.
  const foreignSg = await moto.aws.ec2.send(new CreateSecurityGroupCommand({ GroupName: `${identifier}-sg-manual`, Description: 'not pgmove', VpcId: network.vpcId }));
  await moto.aws.rds.send(new CreateDBInstanceCommand({ DBInstanceIdentifier: `${identifier}-2`, Engine: 'postgres', DBInstanceClass: 'db.t4g.micro', AllocatedStorage: 20, MasterUsername: 'someone', MasterUserPassword: 'someones-password' }));
  await adminQuery(target, 'postgres', `CREATE ROLE abortowner LOGIN PASSWORD 'placeholder-pw'; GRANT pg_create_subscription TO abortowner; GRANT SET ON PARAMETER ${STATEMENT_LOGGING_SETTINGS.join(', ')} TO abortowner`);
  await adminQuery(target, 'postgres', `CREATE DATABASE shopabort OWNER abortowner`);

  const handle = await startMigration(stack, rdsSpec('shop-abort', { databaseName: 'shopabort', masterUsername: 'abortowner' }, { method: 'logical', cutover: { autoCutover: false } }));
  await adoptGeneratedPassword(identifier, 'abortowner');
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing', 120_000);
  expect(await awsInventory(moto.aws, identifier)).toEqual([
    `instance ${identifier}`,
    `instance ${identifier}-2`,
    `parameter-group ${identifier}-params`,
    `security-group ${identifier}-sg`,
    `security-group ${identifier}-sg-manual`,
    `subnet-group ${identifier}-subnets`,
  ]);
  await handle.signal(abortSignal, { reason: 'test: abort after provisioning' });
  const failure = await migrationFailure(handle);
  expect(failure.type).toBe('Aborted');

  // Only the untagged look-alikes remain, and the aborted instance's secret went with it.
  expect(await awsInventory(moto.aws, identifier)).toEqual([`instance ${identifier}-2`, `security-group ${identifier}-sg-manual`]);
  expect((await securityGroupsNamed(moto.aws, `${identifier}-sg-manual`))[0]?.GroupId).toBe(foreignSg.GroupId);
  const status = (await handle.query('status')) as { awsCleanup?: { deleted: { kind: string }[]; kept: string[] } };
  expect(status.awsCleanup?.deleted.map((r) => r.kind)).toEqual(['dbInstance', 'dbParameterGroup', 'dbSubnetGroup', 'securityGroup']);
  // Deleted after a final snapshot, which the status names.
  const snapshots = await snapshotsOf(identifier);
  expect(snapshots).toEqual([expect.stringMatching(new RegExp(`^${identifier}-final-\\d{14}$`))]);
  expect(status.awsCleanup?.kept).toContain(`DB snapshot ${snapshots[0]} (final snapshot of the deleted instance)`);
});

test('`pgmove cleanup ID`: a target the migration switched to is never deleted — refused by the CLI (history) and by the activity (tags)', async () => {
  const identifier = 'pgmove-shop-to-rds';
  const owned = [`instance ${identifier}`, `parameter-group ${identifier}-params`, `security-group ${identifier}-sg`, `subnet-group ${identifier}-subnets`];
  expect(await awsInventory(moto.aws, identifier)).toEqual(owned);

  const keep = pgmoveCli(stack, ['cleanup', 'shop-to-rds']);
  expect(keep.code).toBe(0);
  expect(keep.stdout).toMatch(/kept\s+the RDS instance and its groups \(the migration completed: it is the product\)/);
  expect(await awsInventory(moto.aws, identifier)).toEqual(owned);

  for (const args of [['--delete-target'], ['--delete-target', '--dry-run'], ['--delete-target', '--no-final-snapshot']]) {
    const refused = pgmoveCli(stack, ['cleanup', 'shop-to-rds', ...args]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('refusing --delete-target: migration shop-to-rds completed, so its RDS instance is the product and pgmove never deletes it');
    expect(refused.stderr).toContain('Run `pgmove cleanup shop-to-rds` without --delete-target');
  }
  expect(await awsInventory(moto.aws, identifier)).toEqual(owned);

  // Defence in depth: the cleanupMigration workflow started by hand (as with the temporal CLI), asked to
  // delete the instance, reads the instance's switch tag and refuses it and the groups it uses.
  const direct = (await stack.client!.workflow.execute('cleanupMigration', {
    taskQueue: stack.taskQueue,
    workflowId: 'shop-to-rds-cleanup-by-hand',
    args: [{ migrationId: 'shop-to-rds', aws: { region: 'us-east-1', endpoint: moto.server.endpoint }, dmsOnly: false }],
  })) as DeprovisionResult;
  expect(direct.deleted).toEqual([]);
  expect(direct.finalSnapshots ?? []).toEqual([]);
  expect(direct.skipped.join('\n')).toMatch(/dbInstance pgmove-shop-to-rds \(refused: the migration switched to it at \S+ \(tag pgmove:switched-at\); it is the product/);
  expect(direct.skipped.filter((s) => s.includes('used by the kept DB instance'))).toHaveLength(3);
  expect(await awsInventory(moto.aws, identifier)).toEqual(owned);
  expect(await snapshotsOf(identifier)).toEqual([]);
});

test("`pgmove cleanup ID --delete-target` of an aborted migration's kept target: a final snapshot, then only its own resources deleted", async () => {
  const identifier = 'pgmove-shop-kept';
  await adminQuery(target, 'postgres', `CREATE ROLE keptowner LOGIN PASSWORD 'placeholder-pw'; GRANT pg_create_subscription TO keptowner; GRANT SET ON PARAMETER ${STATEMENT_LOGGING_SETTINGS.join(', ')} TO keptowner`);
  await adminQuery(target, 'postgres', `CREATE DATABASE shopkept OWNER keptowner`);
  const handle = await startMigration(
    stack,
    rdsSpec('shop-kept', { databaseName: 'shopkept', masterUsername: 'keptowner', keepTargetOnAbort: true }, { method: 'logical', cutover: { autoCutover: false } }),
  );
  await adoptGeneratedPassword(identifier, 'keptowner');
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing', 120_000);
  await handle.signal(abortSignal, { reason: 'test: abort, keeping the target' });
  expect((await migrationFailure(handle)).type).toBe('Aborted');
  const owned = [`instance ${identifier}`, `parameter-group ${identifier}-params`, `security-group ${identifier}-sg`, `subnet-group ${identifier}-subnets`];
  expect(await awsInventory(moto.aws, identifier)).toEqual(owned);
  // Neither completed nor switched: no product mark on the instance.
  const keys = (await instanceOf(identifier))?.TagList?.map((t) => t.Key) ?? [];
  expect(keys).toContain('pgmove:migration-id');
  expect(keys).not.toContain('pgmove:completed');
  expect(keys).not.toContain('pgmove:switched-at');

  const dry = pgmoveCli(stack, ['cleanup', 'shop-kept', '--delete-target', '--dry-run']);
  expect(dry.code).toBe(0);
  for (const line of [`would delete  dbInstance ${identifier}`, `would delete  dbParameterGroup ${identifier}-params`, `would delete  dbSubnetGroup ${identifier}-subnets`, 'would delete  securityGroup sg-']) {
    expect(dry.stdout).toContain(line);
  }
  expect(dry.stdout).toMatch(new RegExp(`would snapshot ${identifier}-final-\\d{14}`));
  expect(await awsInventory(moto.aws, identifier)).toEqual(owned);
  expect(await snapshotsOf(identifier)).toEqual([]);

  const done = pgmoveCli(stack, ['cleanup', 'shop-kept', '--delete-target']);
  expect(done.code).toBe(0);
  expect(done.stdout).toContain(`deleted  dbInstance ${identifier}`);
  expect(await awsInventory(moto.aws, identifier)).toEqual([]);
  const snapshots = await snapshotsOf(identifier);
  expect(snapshots).toEqual([expect.stringMatching(new RegExp(`^${identifier}-final-\\d{14}$`))]);
  expect(done.stdout).toContain(`final snapshot ${snapshots[0]}`);
  // The switched migration's instance and the abort test's untagged look-alikes are still there.
  expect(await awsInventory(moto.aws, 'pgmove-shop-to-rds')).toHaveLength(4);
  expect(await awsInventory(moto.aws, 'pgmove-shop-abort')).toEqual(['instance pgmove-shop-abort-2', 'security-group pgmove-shop-abort-sg-manual']);
});

test('the cleanup activity with noFinalSnapshot deletes an instance of its own without a snapshot', async () => {
  const identifier = 'pgmove-by-hand';
  await moto.aws.rds.send(
    new CreateDBInstanceCommand({
      DBInstanceIdentifier: identifier,
      Engine: 'postgres',
      DBInstanceClass: 'db.t4g.micro',
      AllocatedStorage: 20,
      MasterUsername: 'someone',
      MasterUserPassword: 'someones-password',
      Tags: [{ Key: 'pgmove:migration-id', Value: 'by-hand' }, { Key: 'pgmove:managed-by', Value: 'pgmove' }],
    }),
  );
  const result = (await stack.client!.workflow.execute('cleanupMigration', {
    taskQueue: stack.taskQueue,
    workflowId: 'by-hand-cleanup',
    args: [{ migrationId: 'by-hand', aws: { region: 'us-east-1', endpoint: moto.server.endpoint }, dmsOnly: false, noFinalSnapshot: true }],
  })) as DeprovisionResult;
  expect(result.deleted.map((r) => `${r.kind} ${r.id}`)).toEqual([`dbInstance ${identifier}`]);
  expect(result.finalSnapshots ?? []).toEqual([]);
  expect(await instanceOf(identifier)).toBeUndefined();
  expect(await snapshotsOf(identifier)).toEqual([]);
});

test('dry run with target.provision: inputs checked against AWS read-only, the plan listed, nothing created', async () => {
  const result = (await (await startMigration(stack, { ...rdsSpec('shop-dry'), dryRun: true } as MigrationSpecInput)).result()) as MigrationResult;
  expect(result.outcome).toBe('dryRun');
  expect(result.status.phase).toBe('dryRunCompleted');
  expect(result.status.warnings?.join('\n')).toMatch(
    /dry run: would create security group pgmove-shop-dry-sg in vpc-\S+ \(tcp\/5432 from 10\.20\.0\.0\/16\); DB subnet group pgmove-shop-dry-subnets; DB parameter group pgmove-shop-dry-params \(rds\.logical_replication=1, work_mem=65536\); DB instance pgmove-shop-dry \(db\.t4g\.micro, PostgreSQL 16\.4, 20 GB\)/,
  );
  expect(await awsInventory(moto.aws, 'pgmove-shop-dry')).toEqual([]);
});
