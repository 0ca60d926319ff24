/**
 * Phase 1, provisionTarget (`target.provision.type: rds`): creates, idempotently, a security group
 * allowing PostgreSQL from the given CIDRs/groups, a DB subnet group, a DB parameter group
 * (`rds.logical_replication = 1` when the method may stream) and the DB instance with an RDS-managed
 * master password (kept in Secrets Manager, only its ARN leaves this module), then waits for
 * `available` and for the data path to accept connections, heartbeating the status.
 * Everything is described before anything is created: names derive from the migration id, and what an
 * earlier attempt created (tagged with this migration's id) is reused; a same-named resource without
 * the tag is someone else's, and the operator is told to pick another identifier.
 */
import {
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  DescribeSubnetsCommand,
} from '@aws-sdk/client-ec2';
import {
  CreateDBInstanceCommand,
  CreateDBParameterGroupCommand,
  CreateDBSubnetGroupCommand,
  ModifyDBParameterGroupCommand,
  waitUntilDBInstanceAvailable,
  type DBInstance,
  type DescribeDBInstancesCommandOutput,
} from '@aws-sdk/client-rds';
import { ApplicationFailure } from '@temporalio/common';
import { parsedOrBadSpec, parseSpecInput, type ParsedSpec } from '../src/spec';
import { durationMs } from '../src/units';
import { withAws, type AwsClients } from '../src/aws/clients';
import { awsCall, awsErrorCode } from '../src/aws/errors';
import { findInstance, findParameterGroup, findSecurityGroup, findSubnetGroup } from '../src/aws/lookup';
import { ownershipTags, provisionNames, type ProvisionNames } from '../src/aws/names';
import { awsSecretReference } from '../src/aws/secret-ref';
import type { AwsResource, ProvisionedTarget } from '../src/aws/model';
import type { RdsProvision } from '../src/aws/spec';
import { connect, connectionInfo } from '../src/pg/connect';
import { startHeartbeat } from '../src/heartbeat';
import { activityLogger } from '../src/log';
import { pollMs, waitWith } from '../src/aws/wait';
import { pollUntil } from '../src/poll';
import { assertSpecSecretsAllowed } from '../src/secret-policy';
import { errorMessage } from '../src/error-text';

const FIELD = 'target.provision';

export interface ProvisionInput {
  /** The operator's spec as given (target.provision), validated here. */
  spec: unknown;
  migrationId: string;
}

export interface ProvisionContext {
  spec: ParsedSpec;
  provision: RdsProvision;
  names: ProvisionNames;
  migrationId: string;
}

/** Validates the spec's provisioning part; bad input is non-retryable. */
export function provisionContext(specInput: unknown, migrationId: string): ProvisionContext {
  const spec: ParsedSpec = parsedOrBadSpec(() => parseSpecInput(specInput));
  const provision = spec.target.provision;
  if (!provision) throw ApplicationFailure.nonRetryable('target.provision is missing', 'BadSpec');
  // Before any AWS write: a source password this worker may not use stops the migration here.
  assertSpecSecretsAllowed(spec);
  return { spec, provision, names: provisionNames(migrationId, provision.identifier), migrationId };
}

export async function provisionTarget(input: ProvisionInput): Promise<ProvisionedTarget> {
  const ctx = provisionContext(input.spec, input.migrationId);
  const log = activityLogger('provisionTarget');
  const progress = { step: 'checking inputs', instanceStatus: '', lastError: '' };
  const heartbeat = startHeartbeat(() => progress, 5000);
  try {
    return await withAws(ctx.spec.aws, async (aws) => {
      const vpcId = await checkSubnets(aws, ctx.provision);
      // Describe everything first: a missing permission or a foreign resource stops us before any write.
      const existing = {
        securityGroup: await findSecurityGroup(aws, ctx, vpcId),
        subnetGroup: await findSubnetGroup(aws, ctx),
        parameterGroup: await findParameterGroup(aws, ctx),
        instance: await findInstance(aws, ctx),
      };
      const resources: AwsResource[] = [];

      progress.step = 'security group';
      const sgId = existing.securityGroup?.GroupId ?? (await createSecurityGroup(aws, ctx, vpcId));
      const ingress = await allowPostgres(aws, ctx, sgId);
      resources.push({ kind: 'securityGroup', id: sgId, detail: `${ctx.names.securityGroup}: tcp/5432 from ${ingress}`, reused: !!existing.securityGroup });

      progress.step = 'DB subnet group';
      if (!existing.subnetGroup) {
        await awsCall('creating the DB subnet group', `${FIELD}.subnetIds`, () =>
          aws.rds.send(
            new CreateDBSubnetGroupCommand({
              DBSubnetGroupName: ctx.names.subnetGroup,
              DBSubnetGroupDescription: `pgmove ${ctx.migrationId}`,
              SubnetIds: ctx.provision.subnetIds,
              Tags: ownershipTags(ctx.migrationId, ctx.provision.tags),
            }),
          ),
        );
      }
      resources.push({ kind: 'dbSubnetGroup', id: ctx.names.subnetGroup, detail: ctx.provision.subnetIds.join(', '), reused: !!existing.subnetGroup });

      progress.step = 'DB parameter group';
      const parameters = groupParameters(ctx);
      if (!existing.parameterGroup) {
        await awsCall('creating the DB parameter group', `${FIELD}.engineVersion`, () =>
          aws.rds.send(
            new CreateDBParameterGroupCommand({
              DBParameterGroupName: ctx.names.parameterGroup,
              DBParameterGroupFamily: `postgres${ctx.provision.engineVersion.split('.')[0]}`,
              Description: `pgmove ${ctx.migrationId}`,
              Tags: ownershipTags(ctx.migrationId, ctx.provision.tags),
            }),
          ),
        );
      }
      if (Object.keys(parameters).length > 0) {
        // Setting the same values again is harmless: a retry converges.
        await awsCall('setting DB parameters', `${FIELD}.parameters`, () =>
          aws.rds.send(
            new ModifyDBParameterGroupCommand({
              DBParameterGroupName: ctx.names.parameterGroup,
              Parameters: Object.entries(parameters).map(([ParameterName, ParameterValue]) => ({ ParameterName, ParameterValue, ApplyMethod: 'pending-reboot' })),
            }),
          ),
        );
      }
      resources.push({
        kind: 'dbParameterGroup',
        id: ctx.names.parameterGroup,
        detail: Object.entries(parameters).map(([k, v]) => `${k}=${v}`).join(', ') || 'engine defaults',
        reused: !!existing.parameterGroup,
      });

      progress.step = 'DB instance';
      if (!existing.instance) await createInstance(aws, ctx, sgId);
      const instance = await waitAvailable(aws, ctx, progress, heartbeat.signal);
      resources.push({
        kind: 'dbInstance',
        id: ctx.names.instance,
        arn: instance.DBInstanceArn,
        detail: `${instance.DBInstanceClass}, PostgreSQL ${instance.EngineVersion}, ${instance.AllocatedStorage} GB`,
        reused: !!existing.instance,
      });
      const secretArn = instance.MasterUserSecret?.SecretArn;
      if (!instance.Endpoint?.Address || !secretArn) {
        throw new Error(`instance ${ctx.names.instance} is available but reports no endpoint or master secret yet`);
      }
      const provisioned = resolveDataPath(ctx, instance, secretArn, resources);
      progress.step = `waiting for ${provisioned.dataPath.host}:${provisioned.dataPath.port} to accept connections`;
      await waitConnectable(ctx, provisioned, progress, heartbeat.signal);
      log.info({ instance: ctx.names.instance, resources: resources.map((r) => `${r.kind}:${r.id}${r.reused ? ' (reused)' : ''}`) }, 'target provisioned');
      return provisioned;
    });
  } finally {
    heartbeat.stop();
  }
}

/** Dry run: checks the inputs and names against AWS (read-only) and says what would be created. */
export async function planProvisionTarget(input: ProvisionInput): Promise<string[]> {
  const ctx = provisionContext(input.spec, input.migrationId);
  return withAws(ctx.spec.aws, async (aws) => {
    const vpcId = await checkSubnets(aws, ctx.provision);
    const found = [
      (await findSecurityGroup(aws, ctx, vpcId)) && ctx.names.securityGroup,
      (await findSubnetGroup(aws, ctx)) && ctx.names.subnetGroup,
      (await findParameterGroup(aws, ctx)) && ctx.names.parameterGroup,
      (await findInstance(aws, ctx)) && ctx.names.instance,
    ].filter(Boolean);
    const params = Object.entries(groupParameters(ctx)).map(([k, v]) => `${k}=${v}`).join(', ');
    return [
      `security group ${ctx.names.securityGroup} in ${vpcId} (tcp/5432 from ${[...ctx.provision.allowedCidrs, ...ctx.provision.allowedSecurityGroupIds].join(', ')})`,
      `DB subnet group ${ctx.names.subnetGroup}`,
      `DB parameter group ${ctx.names.parameterGroup} (${params || 'engine defaults'})`,
      `DB instance ${ctx.names.instance} (${ctx.provision.instanceClass}, PostgreSQL ${ctx.provision.engineVersion}, ${ctx.provision.allocatedStorageGB} GB)`,
      ...(found.length ? [`reusing this migration's ${found.join(', ')}`] : []),
    ];
  });
}

/** Subnets must exist, lie in one VPC (the spec's vpcId when given) and span two availability zones. */
async function checkSubnets(aws: AwsClients, provision: RdsProvision): Promise<string> {
  // One by one: EC2 names only one unknown subnet per call (moto not even the right one).
  const subnets = [];
  const missing: string[] = [];
  for (const id of provision.subnetIds) {
    try {
      subnets.push(...((await aws.ec2.send(new DescribeSubnetsCommand({ SubnetIds: [id] }))).Subnets ?? []));
    } catch (error) {
      if (awsErrorCode(error) === 'InvalidSubnetID.NotFound') missing.push(id);
      else await awsCall('looking up target.provision.subnetIds', `${FIELD}.subnetIds`, () => Promise.reject(error));
    }
  }
  if (missing.length) {
    throw ApplicationFailure.nonRetryable(`${FIELD}.subnetIds: subnet(s) ${missing.join(', ')} do not exist in ${aws.region}: list existing subnets (aws ec2 describe-subnets)`, 'BadSpec');
  }
  const vpcs = [...new Set(subnets.map((s) => s.VpcId))];
  if (vpcs.length !== 1) throw ApplicationFailure.nonRetryable(`${FIELD}.subnetIds: the subnets belong to different VPCs (${vpcs.join(', ')}): list subnets of one VPC`, 'BadSpec');
  const vpcId = vpcs[0]!;
  if (provision.vpcId && provision.vpcId !== vpcId) {
    throw ApplicationFailure.nonRetryable(`${FIELD}.vpcId: the subnets are in ${vpcId}, not ${provision.vpcId}: fix vpcId or subnetIds`, 'BadSpec');
  }
  if (new Set(subnets.map((s) => s.AvailabilityZone)).size < 2) {
    throw ApplicationFailure.nonRetryable(`${FIELD}.subnetIds: all subnets are in one availability zone; RDS needs a subnet group covering at least two: add a subnet of another zone`, 'BadSpec');
  }
  return vpcId;
}

async function createSecurityGroup(aws: AwsClients, ctx: ProvisionContext, vpcId: string): Promise<string> {
  const created = await awsCall('creating the security group', FIELD, () =>
    aws.ec2.send(
      new CreateSecurityGroupCommand({
        GroupName: ctx.names.securityGroup,
        Description: `pgmove ${ctx.migrationId}: PostgreSQL to the new instance`,
        VpcId: vpcId,
        TagSpecifications: [{ ResourceType: 'security-group', Tags: ownershipTags(ctx.migrationId, ctx.provision.tags) }],
      }),
    ),
  );
  return created.GroupId!;
}

/** Ingress tcp/5432 from every allowed CIDR and group; rules that already exist are kept. */
async function allowPostgres(aws: AwsClients, ctx: ProvisionContext, groupId: string): Promise<string> {
  const { allowedCidrs, allowedSecurityGroupIds } = ctx.provision;
  try {
    await aws.ec2.send(
      new AuthorizeSecurityGroupIngressCommand({
        GroupId: groupId,
        IpPermissions: [
          {
            IpProtocol: 'tcp',
            FromPort: 5432,
            ToPort: 5432,
            IpRanges: allowedCidrs.map((CidrIp) => ({ CidrIp, Description: 'pgmove: PostgreSQL' })),
            UserIdGroupPairs: allowedSecurityGroupIds.map((GroupId) => ({ GroupId, Description: 'pgmove: PostgreSQL' })),
          },
        ],
      }),
    );
  } catch (error) {
    if (awsErrorCode(error) !== 'InvalidPermission.Duplicate') {
      await awsCall('allowing PostgreSQL in the security group', `${FIELD}.allowedCidrs / allowedSecurityGroupIds`, () => Promise.reject(error));
    }
  }
  return [...allowedCidrs, ...allowedSecurityGroupIds].join(', ');
}

/** rds.logical_replication when the method may stream (logical, dms, auto), plus the spec's overrides. */
export function groupParameters(ctx: Pick<ProvisionContext, 'spec' | 'provision'>): Record<string, string> {
  const needsLogical = ['logical', 'dms', 'auto'].includes(ctx.spec.method);
  return { ...(needsLogical ? { 'rds.logical_replication': '1' } : {}), ...ctx.provision.parameters };
}

async function createInstance(aws: AwsClients, ctx: ProvisionContext, sgId: string): Promise<void> {
  const source = new URL(ctx.spec.source.uri);
  const p = ctx.provision;
  await awsCall('creating the DB instance', `${FIELD}.instanceClass / engineVersion / allocatedStorageGB`, () =>
    aws.rds.send(
      new CreateDBInstanceCommand({
        DBInstanceIdentifier: ctx.names.instance,
        Engine: 'postgres',
        EngineVersion: p.engineVersion,
        DBInstanceClass: p.instanceClass,
        AllocatedStorage: p.allocatedStorageGB,
        StorageType: p.storageType,
        StorageEncrypted: true,
        DBName: p.databaseName ?? decodeURIComponent(source.pathname.slice(1)),
        MasterUsername: p.masterUsername ?? decodeURIComponent(source.username || 'postgres'),
        // RDS generates the password and keeps it in Secrets Manager: pgmove never sees it in clear here.
        ManageMasterUserPassword: true,
        DBSubnetGroupName: ctx.names.subnetGroup,
        DBParameterGroupName: ctx.names.parameterGroup,
        VpcSecurityGroupIds: [sgId, ...p.securityGroupIds],
        PubliclyAccessible: false,
        CopyTagsToSnapshot: true,
        Tags: ownershipTags(ctx.migrationId, p.tags),
      }),
    ),
  );
}

/** States from which an instance does not become available, failing at once. */
const TERMINAL = ['failed', 'incompatible-parameters', 'incompatible-network', 'storage-full', 'inaccessible-encryption-credentials'];

/**
 * waitUntilDBInstanceAvailable, plus what its acceptors lack (kept from the hand-written poll): every
 * answer's status goes into the heartbeat details (the waiter reports nothing until it ends), and the
 * states it would wait through until availableTimeout (incompatible-network, storage-full,
 * inaccessible-encryption-credentials) fail at once, like those it fails on itself (failed,
 * incompatible-parameters, incompatible-restore, deleting, deleted).
 */
async function waitAvailable(aws: AwsClients, ctx: ProvisionContext, progress: { step: string; instanceStatus: string }, signal: AbortSignal): Promise<DBInstance> {
  let instance: DBInstance | undefined;
  const failed = (status: string) =>
    ApplicationFailure.nonRetryable(`DB instance ${ctx.names.instance} is ${status}: see its events in the RDS console (aws rds describe-events --source-identifier ${ctx.names.instance})`, 'ProvisionFailed');
  const outcome = await waitWith(waitUntilDBInstanceAvailable, aws.rds, { DBInstanceIdentifier: ctx.names.instance }, {
    timeoutMs: durationMs(ctx.provision.availableTimeout),
    signal,
    action: 'describing the DB instance',
    field: FIELD,
    observe: (output: DescribeDBInstancesCommandOutput) => {
      instance = output.DBInstances?.[0];
      progress.instanceStatus = instance?.DBInstanceStatus ?? 'not visible yet';
      return TERMINAL.includes(progress.instanceStatus) ? failed(progress.instanceStatus) : undefined;
    },
  });
  if (outcome === 'done' && instance) return instance;
  if (outcome === 'failed') throw failed(progress.instanceStatus);
  throw ApplicationFailure.nonRetryable(`DB instance ${ctx.names.instance} not available after ${ctx.provision.availableTimeout} (status ${progress.instanceStatus || 'not visible yet'}): raise ${FIELD}.availableTimeout or check the instance`, 'ProvisionTimeout');
}

function resolveDataPath(ctx: ProvisionContext, instance: DBInstance, secretArn: string, resources: AwsResource[]): ProvisionedTarget {
  const endpoint = { host: instance.Endpoint!.Address!, port: instance.Endpoint!.Port ?? 5432 };
  const override = ctx.spec.target.endpointOverride;
  const dataPath = override ? { host: override.host, port: override.port } : endpoint;
  // The instance's own endpoint: RDS for PostgreSQL 15+ forces SSL. An override names its own sslmode.
  const sslmode = override ? override.sslmode : 'require';
  const user = encodeURIComponent(instance.MasterUsername!);
  const database = encodeURIComponent(instance.DBName!);
  const host = dataPath.host.includes(':') ? `[${dataPath.host}]` : dataPath.host;
  return {
    instanceIdentifier: ctx.names.instance,
    region: ctx.spec.aws.region,
    endpoint,
    dataPath,
    uri: `postgresql://${user}@${host}:${dataPath.port}/${database}${sslmode ? `?sslmode=${sslmode}` : ''}`,
    passwordRef: awsSecretReference(secretArn, 'password'),
    resources,
  };
}

/**
 * Not an AWS wait (no waiter applies): it connects to PostgreSQL.
 * Right after `available`, the data path may not answer yet (DNS, a tunnel or bastion the operator
 * opens once the instance exists): connect with the master secret until it works or connectTimeout.
 */
async function waitConnectable(ctx: ProvisionContext, target: ProvisionedTarget, progress: { lastError: string }, signal: AbortSignal): Promise<void> {
  const timeoutMs = durationMs(ctx.provision.connectTimeout);
  const info = await connectionInfo({ uri: target.uri, password: target.passwordRef }, 'target');
  await pollUntil(
    async () => {
      try {
        const client = await connect(info, 'target');
        await client.end().catch(() => undefined);
        return true;
      } catch (error) {
        const e = error as { code?: string; message?: string };
        progress.lastError = `${e.code ?? ''} ${errorMessage(error)}`.trim();
        return undefined;
      }
    },
    {
      intervalMs: Math.min(pollMs(), 2000),
      timeoutMs,
      signal,
      what: `a connection to ${target.dataPath.host}:${target.dataPath.port}`,
      timeoutError: () =>
        ApplicationFailure.nonRetryable(
          `the new instance ${target.instanceIdentifier} is available, but ${target.dataPath.host}:${target.dataPath.port} did not accept a connection as its master user within ${ctx.provision.connectTimeout} (last error: ${progress.lastError}): ` +
            `check that the worker's network is in ${FIELD}.allowedCidrs / allowedSecurityGroupIds and can route to the VPC, or fix target.endpointOverride`,
          'Unreachable',
        ),
    },
  );
}

