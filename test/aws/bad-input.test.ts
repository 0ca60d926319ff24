/**
 * Bad AWS input ends a migration at once with a non-retryable error naming the spec field and the fix,
 * before anything is created: an unknown subnet, an invalid instance class, a same-named resource
 * pgmove did not create (never adopted, never deleted), and missing IAM permissions (moto enforces
 * IAM when started with INITIAL_NO_AUTH_ACTION_COUNT: a second moto server runs that way).
 * moto does not check instance classes against what AWS offers: the spec's format check is what
 * catches a malformed class here; AWS's own InvalidParameterValue/Combination answer is classified
 * (checked on a real error from moto).
 */
import { CreateAccessKeyCommand, CreateUserCommand, IAMClient, PutUserPolicyCommand } from '@aws-sdk/client-iam';
import { CreateSecurityGroupCommand } from '@aws-sdk/client-ec2';
import { CreateDBInstanceCommand } from '@aws-sdk/client-rds';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { TestStack, DEBIAN_PG15_BIN } from '../helpers/stack';
import { migrationFailure, pgmoveCli, startMigration, writeSpec } from '../helpers/migration';
import { createPgbenchSource, type OnlineDatabase } from '../helpers/online';
import { awsInventory, createNetwork, FAKE_CREDENTIALS, REGION, securityGroupsNamed, startMoto, type Moto } from '../helpers/aws';
import { awsClients } from '../../src/aws/clients';
import { classifyAwsError } from '../../src/aws/errors';
import { provisionTarget } from '../../activities/provision-target';
import type { MigrationSpecInput } from '../../src/spec';

const stack = new TestStack();
let moto: Moto;
let sourceDb: OnlineDatabase;
let network: { vpcId: string; subnetIds: string[] };

beforeAll(async () => {
  moto = await startMoto(stack);
  await stack.startTemporal();
  const source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  sourceDb = await createPgbenchSource(source, 'shop', 1);
  network = await createNetwork(moto.aws);
  await stack.startWorker(moto.workerEnv);
});

afterAll(async () => {
  await stack.stop().finally(() => moto?.stop());
});

function spec(id: string, provision: Record<string, unknown>, endpoint = moto.server.endpoint): MigrationSpecInput {
  return {
    id,
    source: { uri: sourceDb.uri, password: 'env:PGMOVE_TEST_UNUSED_SOURCE_PASSWORD' },
    target: {
      provision: { type: 'rds', engineVersion: '16', instanceClass: 'db.t4g.micro', allocatedStorageGB: 20, subnetIds: network.subnetIds, allowedCidrs: ['10.20.0.0/16'], ...provision },
      endpointOverride: { host: '127.0.0.1', port: 1 },
    },
    aws: { region: REGION, endpoint },
  } as MigrationSpecInput;
}

test('unknown subnet: non-retryable, names target.provision.subnetIds, nothing created', async () => {
  const failure = await migrationFailure(await startMigration(stack, spec('bad-subnet', { subnetIds: [network.subnetIds[0], 'subnet-0123456789abcdef0'] })));
  expect(failure.nonRetryable).toBe(true);
  expect(failure.type).toBe('BadSpec');
  expect(failure.message).toMatch(/target\.provision\.subnetIds/);
  expect(failure.message).toMatch(/subnet-0123456789abcdef0/);
  expect(await awsInventory(moto.aws, 'pgmove-bad-subnet')).toEqual([]);
});

test('invalid instance class: refused by `pgmove start` and by the workflow, naming the field and the expected form', async () => {
  const bad = spec('bad-class', { instanceClass: 't3.micro' });
  const cli = pgmoveCli(stack, ['start', '-f', writeSpec(stack, 'bad-class', bad)]);
  expect(cli.code).not.toBe(0);
  expect(cli.stderr).toMatch(/target\.provision\.instanceClass: must be an RDS instance class like db\.t4g\.medium/);
  const failure = await migrationFailure(await startMigration(stack, bad));
  expect(failure.nonRetryable).toBe(true);
  expect(failure.message).toMatch(/target\.provision\.instanceClass/);
  expect(await awsInventory(moto.aws, 'pgmove-bad-class')).toEqual([]);
});

test("AWS's InvalidParameterValue answer (a real one from moto) is non-retryable and names the field", async () => {
  const error = await moto.aws.rds
    .send(new CreateDBInstanceCommand({ DBInstanceIdentifier: 'x-invalid', Engine: 'postgres-nonexistent', DBInstanceClass: 'db.t4g.micro', AllocatedStorage: 20, MasterUsername: 'a', MasterUserPassword: 'abcdefgh1' }))
    .catch((e: unknown) => e);
  const classified = classifyAwsError(error, 'creating the DB instance', 'target.provision.instanceClass / engineVersion');
  expect(classified).toBeInstanceOf(ApplicationFailure);
  expect((classified as ApplicationFailure).nonRetryable).toBe(true);
  expect(classified.message).toMatch(/InvalidParameterValue.*fix target\.provision\.instanceClass/s);
});

test('a same-named security group without pgmove tags: refused (pick another identifier), and left untouched by the cleanup', async () => {
  const taken = await moto.aws.ec2.send(new CreateSecurityGroupCommand({ GroupName: 'taken-name-sg', Description: 'someone else', VpcId: network.vpcId }));
  const failure = await migrationFailure(await startMigration(stack, spec('conflict', { identifier: 'taken-name' })));
  expect(failure.nonRetryable).toBe(true);
  expect(failure.type).toBe('ResourceConflict');
  expect(failure.message).toMatch(/was not created by pgmove.*choose another target\.provision\.identifier/s);
  expect((await securityGroupsNamed(moto.aws, 'taken-name-sg')).map((g) => g.GroupId)).toEqual([taken.GroupId]);
  expect(await awsInventory(moto.aws, 'taken-name')).toEqual(['security-group taken-name-sg']);
});

test('missing IAM permission (moto with IAM enforcement): non-retryable AwsPermissionDenied naming the action, nothing created', async () => {
  // The first three requests are allowed without authentication: they create an admin user.
  const strict = await startMoto(stack, 'moto-iam', { INITIAL_NO_AUTH_ACTION_COUNT: '3' });
  const saved = { ...process.env };
  try {
    const iam = (credentials?: { accessKeyId: string; secretAccessKey: string }) => new IAMClient({ region: REGION, endpoint: strict.server.endpoint, ...(credentials ? { credentials } : {}) });
    const bootstrap = iam();
    await bootstrap.send(new CreateUserCommand({ UserName: 'admin' }));
    await bootstrap.send(new PutUserPolicyCommand({ UserName: 'admin', PolicyName: 'all', PolicyDocument: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: '*', Resource: '*' }] }) }));
    const adminKey = (await bootstrap.send(new CreateAccessKeyCommand({ UserName: 'admin' }))).AccessKey!;
    const admin = { accessKeyId: adminKey.AccessKeyId!, secretAccessKey: adminKey.SecretAccessKey! };
    // The worker's identity may read EC2 but has no RDS permission at all.
    const adminIam = iam(admin);
    await adminIam.send(new CreateUserCommand({ UserName: 'no-rds' }));
    await adminIam.send(new PutUserPolicyCommand({ UserName: 'no-rds', PolicyName: 'ec2-read', PolicyDocument: JSON.stringify({ Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: ['ec2:Describe*'], Resource: '*' }] }) }));
    const limitedKey = (await adminIam.send(new CreateAccessKeyCommand({ UserName: 'no-rds' }))).AccessKey!;
    process.env.AWS_ACCESS_KEY_ID = admin.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = admin.secretAccessKey;
    const adminAws = awsClients({ region: REGION, endpoint: strict.server.endpoint });
    const strictNetwork = await createNetwork(adminAws);

    // The activity as a worker runs it (credentials from the environment, the default chain).
    process.env.AWS_ACCESS_KEY_ID = limitedKey.AccessKeyId!;
    process.env.AWS_SECRET_ACCESS_KEY = limitedKey.SecretAccessKey!;
    const input = { spec: spec('no-permission', { subnetIds: strictNetwork.subnetIds }, strict.server.endpoint), migrationId: 'no-permission' };
    const error = await new MockActivityEnvironment().run(provisionTarget, input).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApplicationFailure);
    const failure = error as ApplicationFailure;
    expect(failure.nonRetryable).toBe(true);
    expect(failure.type).toBe('AwsPermissionDenied');
    expect(failure.message).toMatch(/AccessDenied.*rds:DescribeDBSubnetGroups/s);
    expect(failure.message).toMatch(/grant the IAM action named above to the role the pgmove worker runs as/);

    process.env.AWS_ACCESS_KEY_ID = admin.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = admin.secretAccessKey;
    expect(await awsInventory(adminAws, 'pgmove-no-permission')).toEqual([]);
    adminAws.destroy();
  } finally {
    Object.assign(process.env, { ...saved, ...FAKE_CREDENTIALS });
    await strict.stop();
  }
});
