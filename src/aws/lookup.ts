/**
 * Finding what a migration created, by its deterministic names, and checking ownership: a resource
 * tagged with this migration's id is ours (reused after a crash); one without the tag, or tagged by
 * another migration, is someone else's and stops provisioning (never adopted, never deleted).
 */
import { DescribeSecurityGroupsCommand, type SecurityGroup } from '@aws-sdk/client-ec2';
import { DescribeDBInstancesCommand, DescribeDBParameterGroupsCommand, DescribeDBSubnetGroupsCommand, ListTagsForResourceCommand, type DBInstance } from '@aws-sdk/client-rds';
import { ApplicationFailure } from '@temporalio/common';
import type { AwsClients } from './clients';
import { awsCall, isAwsNotFound } from './errors';
import { ownership, type ProvisionNames } from './names';

const FIELD = 'target.provision';

export interface LookupContext {
  names: ProvisionNames;
  migrationId: string;
}

function foreign(kind: string, name: string, owner: 'other' | 'untagged'): ApplicationFailure {
  return ApplicationFailure.nonRetryable(
    `${kind} ${name} already exists and ${owner === 'other' ? 'belongs to another pgmove migration' : 'was not created by pgmove (no pgmove:migration-id tag)'}; ` +
      `pgmove never adopts or deletes it: choose another ${FIELD}.identifier (or migration id)`,
    'ResourceConflict',
  );
}

export async function findSecurityGroup(aws: AwsClients, ctx: LookupContext, vpcId: string): Promise<SecurityGroup | undefined> {
  const groups = (
    await awsCall('describing security groups', FIELD, () =>
      aws.ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'group-name', Values: [ctx.names.securityGroup] }, { Name: 'vpc-id', Values: [vpcId] }] })),
    )
  ).SecurityGroups ?? [];
  const group = groups[0];
  if (!group) return undefined;
  const owner = ownership(group.Tags, ctx.migrationId);
  if (owner !== 'ours') throw foreign('security group', `${ctx.names.securityGroup} (${group.GroupId})`, owner);
  return group;
}

async function rdsTags(aws: AwsClients, arn: string | undefined) {
  if (!arn) return [];
  return (await awsCall('reading RDS tags', FIELD, () => aws.rds.send(new ListTagsForResourceCommand({ ResourceName: arn })))).TagList ?? [];
}

export async function findSubnetGroup(aws: AwsClients, ctx: LookupContext) {
  const group = await describeOrUndefined(() => aws.rds.send(new DescribeDBSubnetGroupsCommand({ DBSubnetGroupName: ctx.names.subnetGroup })).then((r) => r.DBSubnetGroups?.[0]));
  if (!group) return undefined;
  const owner = ownership(await rdsTags(aws, group.DBSubnetGroupArn), ctx.migrationId);
  if (owner !== 'ours') throw foreign('DB subnet group', ctx.names.subnetGroup, owner);
  return group;
}

export async function findParameterGroup(aws: AwsClients, ctx: LookupContext) {
  const group = await describeOrUndefined(() =>
    aws.rds.send(new DescribeDBParameterGroupsCommand({ DBParameterGroupName: ctx.names.parameterGroup })).then((r) => r.DBParameterGroups?.[0]),
  );
  if (!group) return undefined;
  const owner = ownership(await rdsTags(aws, group.DBParameterGroupArn), ctx.migrationId);
  if (owner !== 'ours') throw foreign('DB parameter group', ctx.names.parameterGroup, owner);
  return group;
}

export async function findInstance(aws: AwsClients, ctx: LookupContext, options: { foreignIsError?: boolean } = {}): Promise<DBInstance | undefined> {
  const instance = await describeOrUndefined(() => aws.rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: ctx.names.instance })).then((r) => r.DBInstances?.[0]));
  if (!instance) return undefined;
  const owner = ownership(instance.TagList, ctx.migrationId);
  if (owner !== 'ours') {
    if (options.foreignIsError === false) return undefined;
    throw foreign('DB instance', ctx.names.instance, owner);
  }
  return instance;
}

/** A describe that treats "not found" as absent; other errors (permissions) are classified. */
export async function describeOrUndefined<T>(describe: () => Promise<T | undefined>): Promise<T | undefined> {
  try {
    return await describe();
  } catch (error) {
    if (isAwsNotFound(error)) return undefined;
    return awsCall('describing RDS resources', FIELD, () => Promise.reject(error));
  }
}
