/**
 * Phase 11 for AWS: deletes what this migration created, in reverse order of creation — DMS task,
 * endpoints, replication instance, replication subnet group, then (unless the instance is kept) the
 * DB instance (after a final snapshot, unless noFinalSnapshot), its parameter group, subnet group and
 * security group. An instance tagged as the product (the migration completed on it or switched to it,
 * tagged by `markTarget` at the end of the migration) is refused, with its groups. Resources are found by their
 * deterministic names and deleted only when tagged with this migration's id (a DMS subnet group has
 * no tags: its description records the owner); anything else is listed as skipped, never touched.
 * Idempotent; `dryRun` lists what would be deleted. Used by the workflow and by `pgmove cleanup`.
 */
import { DeleteSecurityGroupCommand, DescribeSecurityGroupsCommand } from '@aws-sdk/client-ec2';
import {
  DeleteDBInstanceCommand,
  DeleteDBParameterGroupCommand,
  DeleteDBSubnetGroupCommand,
  AddTagsToResourceCommand,
  DescribeDBInstancesCommand,
  DescribeDBParameterGroupsCommand,
  DescribeDBSubnetGroupsCommand,
  ListTagsForResourceCommand,
  waitUntilDBInstanceDeleted,
} from '@aws-sdk/client-rds';
import {
  DeleteEndpointCommand,
  DeleteReplicationInstanceCommand,
  DeleteReplicationSubnetGroupCommand,
  DeleteReplicationTaskCommand,
  ListTagsForResourceCommand as DmsListTagsCommand,
  StopReplicationTaskCommand,
  waitUntilReplicationInstanceDeleted,
  waitUntilReplicationTaskDeleted,
  type DescribeReplicationInstancesCommandOutput,
  type DescribeReplicationTasksCommandOutput,
} from '@aws-sdk/client-database-migration-service';
import { Context } from '@temporalio/activity';
import { withAws, type AwsClients } from '../src/aws/clients';
import { awsCall, awsErrorCode, isAwsNotFound } from '../src/aws/errors';
import { COMPLETED_TAG, SWITCHED_TAG, finalSnapshotName, ownership, productMark, provisionNames, type ProvisionNames } from '../src/aws/names';
import type { AwsResource, DeprovisionResult } from '../src/aws/model';
import type { AwsSettings } from '../src/aws/spec';
import { describeOrUndefined, findInstance } from '../src/aws/lookup';
import { startHeartbeat } from '../src/heartbeat';
import { activityLogger } from '../src/log';
import { pollMs, waitWith, type WaitOptions } from '../src/aws/wait';
import { pollUntil } from '../src/poll';
import { describeDmsEndpoints, describeDmsInstances, describeDmsSubnetGroups, describeDmsTasks, dmsInstanceFilter, dmsTaskFilter } from '../src/aws/dms-describe';

export interface AwsCleanupInput {
  migrationId: string;
  aws: AwsSettings;
  /** target.provision.identifier, when the spec named one (the names derive from it). */
  identifier?: string;
  /** Delete only the DMS resources (after a successful migration the instance is the product). */
  dmsOnly: boolean;
  dryRun?: boolean;
  /** Delete the DB instance without a final snapshot (by default one is taken: finalSnapshotName). */
  noFinalSnapshot?: boolean;
  /** The migration completed on the instance or switched to it: tag it so, and never delete it. */
  markTarget?: { outcome: 'completed' | 'switched'; at: string };
}

const FIELD = 'cleanup';

export async function cleanupAwsResources(input: AwsCleanupInput): Promise<DeprovisionResult> {
  const names = provisionNames(input.migrationId, input.identifier);
  const result: DeprovisionResult = { deleted: [], skipped: [], dryRun: input.dryRun ?? false };
  const progress = { step: 'describing', deleted: [] as string[] };
  const heartbeat = inActivity() ? startHeartbeat(() => progress, 5000) : undefined;
  const log = activityLogger('cleanup');
  try {
    await withAws(input.aws, async (aws) => {
      const steps: [string, () => Promise<void>][] = [
        ['marking the DB instance', () => markTarget(aws, names, input)],
        ['DMS replication task', () => dmsTask(aws, names, input, result)],
        ['DMS endpoints', () => dmsEndpoints(aws, names, input, result)],
        ['DMS replication instance', () => dmsInstance(aws, names, input, result)],
        ['DMS replication subnet group', () => dmsSubnetGroup(aws, names, input, result)],
      ];
      if (!input.dmsOnly) {
        steps.push(
          ['DB instance', () => dbInstance(aws, names, input, result)],
          ['DB parameter group', () => dbParameterGroup(aws, names, input, result)],
          ['DB subnet group', () => dbSubnetGroup(aws, names, input, result)],
          ['security group', () => securityGroup(aws, names, input, result)],
        );
      }
      for (const [step, run] of steps) {
        progress.step = step;
        await run();
        progress.deleted = result.deleted.map((r) => `${r.kind}:${r.id}`);
      }
    });
  } finally {
    heartbeat?.stop();
  }
  log.info({ deleted: progress.deleted, skipped: result.skipped, dryRun: result.dryRun }, 'AWS cleanup finished');
  return result;
}

function inActivity(): boolean {
  try {
    Context.current();
    return true;
  } catch {
    return false;
  }
}

type Step = (aws: AwsClients, names: ProvisionNames, input: AwsCleanupInput, result: DeprovisionResult) => Promise<void>;

/** Records a found resource: deleted when ours (unless dry run), skipped otherwise. */
async function handle(result: DeprovisionResult, owner: 'ours' | 'other' | 'untagged', resource: AwsResource, remove: () => Promise<void>): Promise<void> {
  if (owner !== 'ours') {
    result.skipped.push(`${resource.kind} ${resource.id} (${owner === 'other' ? 'tagged by another migration' : 'not tagged by pgmove'}: left alone)`);
    return;
  }
  if (!result.dryRun) await remove();
  result.deleted.push(resource);
}

async function dmsTags(aws: AwsClients, arn: string | undefined) {
  if (!arn) return [];
  return (await awsCall('reading DMS tags', FIELD, () => aws.dms.send(new DmsListTagsCommand({ ResourceArn: arn })))).TagList ?? [];
}

/**
 * Waits until a deleted resource is gone (deletes are asynchronous: an RDS instance takes minutes),
 * with the SDK's …Deleted waiter, up to an hour. Kept around the waiter: its failure states (a DB
 * instance still creating, modifying or rebooting; a DMS task or instance not yet deleting right after
 * the request) pass, so the wait goes on, as the hand-written poll did. The DMS waiters take only
 * ResourceNotFoundFault as gone; an empty answer (moto's) is gone too (`observe` in the callers).
 */
async function waitDeleted(what: string, wait: (options: Omit<WaitOptions<never>, 'observe'>) => Promise<'done' | 'timeout' | 'failed'>): Promise<void> {
  const timeoutMs = 60 * 60_000;
  const deadline = Date.now() + timeoutMs;
  const signal = inActivity() ? Context.current().cancellationSignal : undefined;
  // A retryable error: Temporal retries the cleanup, which resumes waiting.
  const stillThere = () => new Error(`${what} still exists after ${Math.round(timeoutMs / 60_000)} min of waiting for its deletion`);
  await pollUntil(
    async () => {
      const outcome = await wait({ timeoutMs: Math.max(deadline - Date.now(), 1000), signal, action: `waiting for the deletion of ${what}`, field: FIELD });
      if (outcome === 'timeout') throw stillThere();
      return outcome === 'done' ? true : undefined;
    },
    { intervalMs: pollMs(), timeoutMs, signal, what: `the deletion of ${what}`, timeoutError: stillThere },
  );
}

const dmsTask: Step = async (aws, names, input, result) => {
  const tasks = await describeDmsTasks(aws, names.dmsTask, FIELD);
  for (const task of tasks) {
    const owner = ownership(await dmsTags(aws, task.ReplicationTaskArn), input.migrationId);
    await handle(result, owner, { kind: 'replicationTask', id: names.dmsTask, arn: task.ReplicationTaskArn, detail: task.Status }, async () => {
      if (task.Status === 'running' || task.Status === 'starting') {
        await aws.dms.send(new StopReplicationTaskCommand({ ReplicationTaskArn: task.ReplicationTaskArn })).catch((error: unknown) => {
          if (awsErrorCode(error) !== 'InvalidResourceStateFault') throw error;
        });
      }
      await awsCall('deleting the DMS task', FIELD, () => aws.dms.send(new DeleteReplicationTaskCommand({ ReplicationTaskArn: task.ReplicationTaskArn })));
      await waitDeleted(`DMS task ${names.dmsTask}`, (wait) =>
        waitWith(waitUntilReplicationTaskDeleted, aws.dms, dmsTaskFilter(names.dmsTask), {
          ...wait,
          observe: (output: DescribeReplicationTasksCommandOutput) => (output.ReplicationTasks?.length ? undefined : 'done'),
        }),
      );
    });
  }
};

const dmsEndpoints: Step = async (aws, names, input, result) => {
  for (const id of [names.dmsSourceEndpoint, names.dmsTargetEndpoint]) {
    const endpoints = await describeDmsEndpoints(aws, id, FIELD);
    for (const endpoint of endpoints) {
      const owner = ownership(await dmsTags(aws, endpoint.EndpointArn), input.migrationId);
      await handle(result, owner, { kind: 'dmsEndpoint', id, arn: endpoint.EndpointArn }, async () => {
        await awsCall('deleting a DMS endpoint', FIELD, () => aws.dms.send(new DeleteEndpointCommand({ EndpointArn: endpoint.EndpointArn })));
      });
    }
  }
};

const dmsInstance: Step = async (aws, names, input, result) => {
  for (const instance of await describeDmsInstances(aws, names.dmsInstance, FIELD)) {
    const owner = ownership(await dmsTags(aws, instance.ReplicationInstanceArn), input.migrationId);
    await handle(result, owner, { kind: 'replicationInstance', id: names.dmsInstance, arn: instance.ReplicationInstanceArn }, async () => {
      if (instance.ReplicationInstanceStatus !== 'deleting') {
        await awsCall('deleting the DMS replication instance', FIELD, () => aws.dms.send(new DeleteReplicationInstanceCommand({ ReplicationInstanceArn: instance.ReplicationInstanceArn })));
      }
      await waitDeleted(`DMS replication instance ${names.dmsInstance}`, (wait) =>
        waitWith(waitUntilReplicationInstanceDeleted, aws.dms, dmsInstanceFilter(names.dmsInstance), {
          ...wait,
          observe: (output: DescribeReplicationInstancesCommandOutput) => (output.ReplicationInstances?.length ? undefined : 'done'),
        }),
      );
    });
  }
};

const dmsSubnetGroup: Step = async (aws, names, input, result) => {
  const groups = await describeDmsSubnetGroups(aws, names.dmsSubnetGroup, FIELD);
  for (const group of groups) {
    // Replication subnet groups carry no readable tags: pgmove writes its owner into the description.
    const owner = group.ReplicationSubnetGroupDescription === `pgmove ${input.migrationId}` ? 'ours' : 'untagged';
    await handle(result, owner, { kind: 'replicationSubnetGroup', id: names.dmsSubnetGroup }, async () => {
      await awsCall('deleting the DMS replication subnet group', FIELD, () =>
        aws.dms.send(new DeleteReplicationSubnetGroupCommand({ ReplicationSubnetGroupIdentifier: names.dmsSubnetGroup })),
      ).catch((error: unknown) => {
        if (!isAwsNotFound(error)) throw error;
      });
    });
  }
};

async function rdsOwner(aws: AwsClients, arn: string | undefined, migrationId: string) {
  if (!arn) return 'untagged' as const;
  const tags = (await awsCall('reading RDS tags', FIELD, () => aws.rds.send(new ListTagsForResourceCommand({ ResourceName: arn })))).TagList;
  return ownership(tags, migrationId);
}

/**
 * The product's record on the instance itself, so cleanup refuses it even without the history. Only
 * an instance tagged with this migration's id; a missing one (kept elsewhere, or none) is not an error.
 */
async function markTarget(aws: AwsClients, names: ProvisionNames, input: AwsCleanupInput): Promise<void> {
  if (!input.markTarget || input.dryRun) return;
  const found = await findInstance(aws, { names, migrationId: input.migrationId }, { foreignIsError: false });
  if (!found?.DBInstanceArn) return;
  const key = input.markTarget.outcome === 'switched' ? SWITCHED_TAG : COMPLETED_TAG;
  await awsCall('tagging the DB instance as the migration\'s product', FIELD, () =>
    aws.rds.send(new AddTagsToResourceCommand({ ResourceName: found.DBInstanceArn, Tags: [{ Key: key, Value: input.markTarget!.at }] })),
  );
}

/** Cleanups whose instance was refused: its parameter, subnet and security groups stay with it. */
const refusedInstance = new WeakSet<DeprovisionResult>();

const dbInstance: Step = async (aws, names, input, result) => {
  const found = await findInstance(aws, { names, migrationId: input.migrationId }, { foreignIsError: false });
  if (!found) {
    // Not ours, or absent: say which.
    const any = await describeOrUndefined(() => aws.rds.send(new DescribeDBInstancesCommand({ DBInstanceIdentifier: names.instance })).then((r) => r.DBInstances?.[0]));
    if (any) result.skipped.push(`dbInstance ${names.instance} (not tagged by this migration: left alone)`);
    return;
  }
  const product = productMark(found.TagList);
  if (product) {
    result.skipped.push(`dbInstance ${names.instance} (refused: ${product}; it is the product and pgmove never deletes it)`);
    refusedInstance.add(result);
    return;
  }
  const snapshot = input.noFinalSnapshot ? undefined : finalSnapshotName(names.instance, found.InstanceCreateTime);
  await handle(result, 'ours', { kind: 'dbInstance', id: names.instance, arn: found.DBInstanceArn, detail: found.DBInstanceStatus }, async () => {
    if (found.DBInstanceStatus !== 'deleting') {
      await awsCall('deleting the DB instance', FIELD, () =>
        aws.rds.send(
          new DeleteDBInstanceCommand({
            DBInstanceIdentifier: names.instance,
            ...(snapshot ? { SkipFinalSnapshot: false, FinalDBSnapshotIdentifier: snapshot } : { SkipFinalSnapshot: true }),
            DeleteAutomatedBackups: true,
          }),
        ),
      ).catch((error: unknown) => {
        if (!isAwsNotFound(error)) throw error;
      });
    }
    await waitDeleted(`DB instance ${names.instance}`, (wait) => waitWith(waitUntilDBInstanceDeleted, aws.rds, { DBInstanceIdentifier: names.instance }, wait));
  });
  if (snapshot) (result.finalSnapshots ??= []).push(snapshot);
};

/** The groups of an instance that was refused stay: it still uses them. */
function keptWithInstance(result: DeprovisionResult, what: string): boolean {
  if (!refusedInstance.has(result)) return false;
  result.skipped.push(`${what} (used by the kept DB instance: left alone)`);
  return true;
}

const dbParameterGroup: Step = async (aws, names, input, result) => {
  const group = await describeOrUndefined(() => aws.rds.send(new DescribeDBParameterGroupsCommand({ DBParameterGroupName: names.parameterGroup })).then((r) => r.DBParameterGroups?.[0]));
  if (!group || keptWithInstance(result, `dbParameterGroup ${names.parameterGroup}`)) return;
  await handle(result, await rdsOwner(aws, group.DBParameterGroupArn, input.migrationId), { kind: 'dbParameterGroup', id: names.parameterGroup }, async () => {
    await awsCall('deleting the DB parameter group', FIELD, () => aws.rds.send(new DeleteDBParameterGroupCommand({ DBParameterGroupName: names.parameterGroup })));
  });
};

const dbSubnetGroup: Step = async (aws, names, input, result) => {
  const group = await describeOrUndefined(() => aws.rds.send(new DescribeDBSubnetGroupsCommand({ DBSubnetGroupName: names.subnetGroup })).then((r) => r.DBSubnetGroups?.[0]));
  if (!group || keptWithInstance(result, `dbSubnetGroup ${names.subnetGroup}`)) return;
  await handle(result, await rdsOwner(aws, group.DBSubnetGroupArn, input.migrationId), { kind: 'dbSubnetGroup', id: names.subnetGroup }, async () => {
    await awsCall('deleting the DB subnet group', FIELD, () => aws.rds.send(new DeleteDBSubnetGroupCommand({ DBSubnetGroupName: names.subnetGroup })));
  });
};

const securityGroup: Step = async (aws, names, input, result) => {
  const groups = (await awsCall('describing security groups', FIELD, () => aws.ec2.send(new DescribeSecurityGroupsCommand({ Filters: [{ Name: 'group-name', Values: [names.securityGroup] }] }))))
    .SecurityGroups ?? [];
  for (const group of groups) {
    if (keptWithInstance(result, `securityGroup ${group.GroupId ?? names.securityGroup}`)) continue;
    await handle(result, ownership(group.Tags, input.migrationId), { kind: 'securityGroup', id: group.GroupId!, detail: names.securityGroup }, async () => {
      // DependencyViolation while the deleted instance's network interfaces linger: retried by Temporal.
      await awsCall('deleting the security group', FIELD, () => aws.ec2.send(new DeleteSecurityGroupCommand({ GroupId: group.GroupId })));
    });
  }
};
