/**
 * Phase 6 for method `dms` (AWS DMS, full load + CDC): creates, idempotently (deterministic names,
 * tagged with the migration id, described first), the replication subnet group, the replication
 * instance, the source and target endpoints and a `full-load-and-cdc` task whose table mappings come
 * from the spec's include/exclude lists; starts it, follows it with describe calls (status, percent,
 * tables loaded/errored) as heartbeat progress, and stops it at the cutover. On the source, the WAL
 * held by DMS's replication slot is measured like the logical method's, and the cutover waits until
 * that slot has confirmed the frozen source's WAL position.
 * Endpoint passwords are resolved here from the spec's references and sent only to the DMS API.
 * Deletion is in cleanup-aws.ts.
 */
import {
  CreateEndpointCommand,
  CreateReplicationInstanceCommand,
  CreateReplicationSubnetGroupCommand,
  CreateReplicationTaskCommand,
  StartReplicationTaskCommand,
  StopReplicationTaskCommand,
  waitUntilReplicationInstanceAvailable,
  waitUntilReplicationTaskReady,
  waitUntilReplicationTaskStopped,
  type DescribeReplicationInstancesCommandOutput,
  type ReplicationInstance,
  type ReplicationTask,
} from '@aws-sdk/client-database-migration-service';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { MigrationSpec } from '../src/spec';
import { durationMs } from '../src/units';
import { withAws, type AwsClients } from '../src/aws/clients';
import { awsCall, awsErrorCode } from '../src/aws/errors';
import { ownershipTags, provisionNames, type ProvisionNames } from '../src/aws/names';
import type { AwsResource, DmsProgress } from '../src/aws/model';

export type { DmsProgress };
import { connectionInfo, withClient } from '../src/pg/connect';
import { startHeartbeat } from '../src/heartbeat';
import { activityLogger } from '../src/log';
import { pollMs, waitWith } from '../src/aws/wait';
import { pause, pollUntil } from '../src/poll';
import { describeDmsEndpoints, describeDmsInstances, describeDmsSubnetGroups, describeDmsTasks, dmsInstanceFilter, dmsTaskFilter } from '../src/aws/dms-describe';

const FIELD = 'dms';

export interface DmsInput {
  spec: MigrationSpec;
  migrationId: string;
  /** Tables pre-flight left out of the task (no primary key, with dms.tablesWithoutPrimaryKey: exclude). */
  excludedTables: string[];
  /** The target as DMS reaches it: the provisioned instance's own endpoint, not a test/tunnel override. */
  targetEndpoint?: { host: string; port: number };
  /** target.provision.identifier (names derive from it), and the subnets to fall back on. */
  identifier?: string;
  subnetIds?: string[];
}

export interface DmsResources {
  taskArn: string;
  resources: AwsResource[];
}

function names(input: DmsInput): ProvisionNames {
  return provisionNames(input.migrationId, input.identifier);
}

/** Table mappings: the spec's include (default every table) minus its exclude and pre-flight's exclusions. */
export function tableMappings(spec: MigrationSpec, excludedTables: string[]): string {
  const rule = (action: 'include' | 'exclude', schema: string, table: string) => ({ 'rule-type': 'selection', 'rule-action': action, 'object-locator': { 'schema-name': schema, 'table-name': table } });
  const split = (t: string) => t.split('.') as [string, string];
  const includes = spec.include.tables.length
    ? spec.include.tables.map((t) => rule('include', ...split(t)))
    : spec.include.schemas.length
      ? spec.include.schemas.map((s) => rule('include', s, '%'))
      : [rule('include', '%', '%')];
  const excludes = [...spec.exclude.schemas.map((s) => rule('exclude', s, '%')), ...[...spec.exclude.tables, ...excludedTables].map((t) => rule('exclude', ...split(t)))];
  return JSON.stringify({ rules: [...includes, ...excludes].map((r, i) => ({ 'rule-id': String(i + 1), 'rule-name': String(i + 1), ...r })) });
}

/** pgmove builds the schema (pre-data before, post-data after the full load): DMS only moves rows. */
export function taskSettings(spec: MigrationSpec): string {
  const dms = spec.dms!;
  return JSON.stringify({
    TargetMetadata: { SupportLobs: true, FullLobMode: dms.lobMode === 'full', LimitedSizeLobMode: dms.lobMode === 'limited', LobMaxSize: dms.lobMaxSizeKB },
    FullLoadSettings: { TargetTablePrepMode: 'DO_NOTHING' },
    Logging: { EnableLogging: true },
  });
}

export async function createDmsResources(input: DmsInput): Promise<DmsResources> {
  const n = names(input);
  const dms = input.spec.dms!;
  const tags = ownershipTags(input.migrationId);
  const progress = { step: 'replication subnet group', instanceStatus: '' };
  const heartbeat = startHeartbeat(() => progress, 5000);
  try {
    return await withAws(input.spec.aws, async (aws) => {
      const resources: AwsResource[] = [];
      const subnetIds = dms.subnetIds ?? input.subnetIds;
      if (!subnetIds?.length) throw ApplicationFailure.nonRetryable('dms.subnetIds: name the subnets of the replication instance (or provision the target, whose subnets are used)', 'BadSpec');
      const groups = await describeDmsSubnetGroups(aws, n.dmsSubnetGroup, FIELD);
      if (groups.length === 0) {
        await awsCall('creating the DMS replication subnet group', `${FIELD}.subnetIds`, () =>
          aws.dms.send(new CreateReplicationSubnetGroupCommand({ ReplicationSubnetGroupIdentifier: n.dmsSubnetGroup, ReplicationSubnetGroupDescription: `pgmove ${input.migrationId}`, SubnetIds: subnetIds, Tags: tags })),
        );
      } else if (groups[0]!.ReplicationSubnetGroupDescription !== `pgmove ${input.migrationId}`) {
        throw ApplicationFailure.nonRetryable(`DMS replication subnet group ${n.dmsSubnetGroup} exists and is not this migration's: choose another target.provision.identifier`, 'ResourceConflict');
      }
      resources.push({ kind: 'replicationSubnetGroup', id: n.dmsSubnetGroup, detail: subnetIds.join(', '), reused: groups.length > 0 });

      progress.step = 'replication instance';
      const existingInstance = (await describeDmsInstances(aws, n.dmsInstance, FIELD))[0];
      if (!existingInstance) {
        await awsCall('creating the DMS replication instance', `${FIELD}.replicationInstanceClass`, () =>
          aws.dms.send(
            new CreateReplicationInstanceCommand({
              ReplicationInstanceIdentifier: n.dmsInstance,
              ReplicationInstanceClass: dms.replicationInstanceClass,
              AllocatedStorage: dms.allocatedStorageGB,
              ReplicationSubnetGroupIdentifier: n.dmsSubnetGroup,
              VpcSecurityGroupIds: dms.vpcSecurityGroupIds.length ? dms.vpcSecurityGroupIds : undefined,
              PubliclyAccessible: false,
              Tags: tags,
            }),
          ),
        );
      }
      const instance = await waitInstanceAvailable(aws, n.dmsInstance, progress, heartbeat.signal);
      resources.push({ kind: 'replicationInstance', id: n.dmsInstance, arn: instance.ReplicationInstanceArn, detail: dms.replicationInstanceClass, reused: !!existingInstance });

      progress.step = 'endpoints';
      const sourceArn = await ensureEndpoint(aws, input, n.dmsSourceEndpoint, 'source', resources);
      const targetArn = await ensureEndpoint(aws, input, n.dmsTargetEndpoint, 'target', resources);

      progress.step = 'task';
      let task = await describeTask(aws, n.dmsTask);
      if (!task) {
        task = (
          await awsCall('creating the DMS task', `${FIELD} / include / exclude`, () =>
            aws.dms.send(
              new CreateReplicationTaskCommand({
                ReplicationTaskIdentifier: n.dmsTask,
                SourceEndpointArn: sourceArn,
                TargetEndpointArn: targetArn,
                ReplicationInstanceArn: instance.ReplicationInstanceArn,
                MigrationType: 'full-load-and-cdc',
                TableMappings: tableMappings(input.spec, input.excludedTables),
                ReplicationTaskSettings: taskSettings(input.spec),
                Tags: tags,
              }),
            ),
          )
        ).ReplicationTask!;
      }
      resources.push({ kind: 'replicationTask', id: n.dmsTask, arn: task.ReplicationTaskArn, detail: 'full-load-and-cdc' });
      activityLogger('dms').info({ resources: resources.map((r) => r.id) }, 'DMS resources ready');
      return { taskArn: task.ReplicationTaskArn!, resources };
    });
  } finally {
    heartbeat.stop();
  }
}

/**
 * waitUntilReplicationInstanceAvailable; every answer's status goes into the heartbeat details (the
 * waiter reports nothing until it ends). It fails on deleting, incompatible-credentials,
 * incompatible-network and inaccessible-encryption-credentials, which the hand-written poll waited
 * through for an hour.
 */
async function waitInstanceAvailable(aws: AwsClients, id: string, progress: { instanceStatus: string }, signal: AbortSignal): Promise<ReplicationInstance> {
  let instance: ReplicationInstance | undefined;
  const outcome = await waitWith(waitUntilReplicationInstanceAvailable, aws.dms, dmsInstanceFilter(id), {
    timeoutMs: 60 * 60_000,
    signal,
    action: 'describing the DMS replication instance',
    field: FIELD,
    observe: (output: DescribeReplicationInstancesCommandOutput) => {
      instance = output.ReplicationInstances?.[0];
      progress.instanceStatus = instance?.ReplicationInstanceStatus ?? 'not visible yet';
      return undefined;
    },
  });
  if (outcome === 'done' && instance) return instance;
  if (outcome === 'failed') {
    throw ApplicationFailure.nonRetryable(
      `DMS replication instance ${id} is ${progress.instanceStatus}: check dms.subnetIds / vpcSecurityGroupIds and the instance's events (aws dms describe-events --source-identifier ${id})`,
      'ProvisionFailed',
    );
  }
  // Retryable: the next attempt finds the instance and waits again.
  throw new Error(`DMS replication instance ${id} not available after 60 min (status ${progress.instanceStatus || 'not visible yet'})`);
}

async function describeTask(aws: AwsClients, id: string): Promise<ReplicationTask | undefined> {
  return (await describeDmsTasks(aws, id, FIELD))[0];
}

/** A DMS endpoint for one side; its password is resolved here from the spec's reference. */
async function ensureEndpoint(aws: AwsClients, input: DmsInput, id: string, side: 'source' | 'target', resources: AwsResource[]): Promise<string> {
  const existing = (await describeDmsEndpoints(aws, id, FIELD))[0];
  if (existing) {
    resources.push({ kind: 'dmsEndpoint', id, arn: existing.EndpointArn, reused: true });
    return existing.EndpointArn!;
  }
  const info = await connectionInfo(input.spec[side], side);
  const address = side === 'target' && input.targetEndpoint ? input.targetEndpoint : { host: info.host, port: info.port };
  const created = await awsCall(`creating the DMS ${side} endpoint`, `${side}.uri / ${side}.password`, () =>
    aws.dms.send(
      new CreateEndpointCommand({
        EndpointIdentifier: id,
        EndpointType: side,
        EngineName: 'postgres',
        ServerName: address.host,
        Port: address.port,
        DatabaseName: info.database,
        Username: info.user,
        Password: info.password,
        SslMode: info.sslmode === 'disable' ? 'none' : 'require',
        Tags: ownershipTags(input.migrationId),
      }),
    ),
  );
  resources.push({ kind: 'dmsEndpoint', id, arn: created.Endpoint!.EndpointArn, detail: `${side} ${address.host}:${address.port}/${info.database}` });
  return created.Endpoint!.EndpointArn!;
}

function progressOf(task: ReplicationTask | undefined): DmsProgress {
  const stats = task?.ReplicationTaskStats;
  return {
    status: task?.Status ?? 'missing',
    fullLoadPercent: stats?.FullLoadProgressPercent ?? 0,
    tablesLoaded: stats?.TablesLoaded ?? 0,
    tablesLoading: stats?.TablesLoading ?? 0,
    tablesQueued: stats?.TablesQueued ?? 0,
    tablesErrored: stats?.TablesErrored ?? 0,
    lastFailure: task?.LastFailureMessage ?? task?.StopReason,
  };
}

/**
 * Starts the task and returns its progress. A task still being created refuses to start
 * (InvalidResourceStateFault): then the wait for it is waitUntilReplicationTaskReady. The start is
 * tried first, not after the waiter: a task that starts from `creating` (moto's never leaves it) needs
 * no wait. Other states that refuse (stopping, modifying…) are no waiter's success state: the start is
 * tried again after a pause, as before, until it is accepted or 30 min have passed.
 */
export async function startDmsTask(input: DmsInput): Promise<DmsProgress> {
  const n = names(input);
  const signal = Context.current().cancellationSignal;
  return withAws(input.spec.aws, async (aws) => {
    const deadline = Date.now() + 30 * 60_000;
    for (;;) {
      const task = await describeTask(aws, n.dmsTask);
      if (!task) throw new Error(`DMS task ${n.dmsTask} not found`);
      if (task.Status === 'running' || task.Status === 'starting') return progressOf(task);
      try {
        const started = await aws.dms.send(new StartReplicationTaskCommand({ ReplicationTaskArn: task.ReplicationTaskArn, StartReplicationTaskType: task.Status === 'stopped' ? 'resume-processing' : 'start-replication' }));
        return progressOf(started.ReplicationTask);
      } catch (error) {
        if (awsErrorCode(error) !== 'InvalidResourceStateFault' || Date.now() > deadline) throw await awsCall('starting the DMS task', FIELD, () => Promise.reject(error)).catch((e: unknown) => e);
      }
      if (task.Status === 'creating') {
        // Any outcome goes round the loop, which tries the start again (past the deadline it throws).
        await waitWith(waitUntilReplicationTaskReady, aws.dms, dmsTaskFilter(n.dmsTask), { timeoutMs: Math.max(deadline - Date.now(), 1000), signal, action: 'describing the DMS task', field: FIELD });
      } else {
        await pause(pollMs(), signal);
      }
    }
  });
}

/**
 * Not an SDK waiter: the full load's end is no task status (the task stays `running` into CDC; the
 * waiters know statuses only), it is read from the task's statistics, and each answer is heartbeat
 * progress; an errored table fails the activity although the task runs on.
 * Follows the task with describe calls until the full load is done (100 %, nothing loading or queued),
 * heartbeating its progress; a failed task or an errored table fails the activity with DMS's reason.
 */
export async function waitDmsFullLoad(input: DmsInput): Promise<DmsProgress> {
  const n = names(input);
  let progress = progressOf(undefined);
  const heartbeat = startHeartbeat(() => progress, 5000);
  try {
    return await withAws(input.spec.aws, (aws) =>
      pollUntil(
        async () => {
          progress = progressOf(await describeTask(aws, n.dmsTask));
          heartbeat.beat();
          if (progress.status === 'failed' || progress.tablesErrored > 0) {
            throw ApplicationFailure.nonRetryable(`DMS task ${n.dmsTask}: ${progress.status}, ${progress.tablesErrored} table(s) errored${progress.lastFailure ? `: ${progress.lastFailure}` : ''} — see the task's CloudWatch log`, 'DmsTaskFailed');
          }
          if (progress.status === 'stopped') throw ApplicationFailure.nonRetryable(`DMS task ${n.dmsTask} stopped during the full load${progress.lastFailure ? `: ${progress.lastFailure}` : ''}`, 'DmsTaskFailed');
          return progress.status === 'running' && progress.fullLoadPercent >= 100 && progress.tablesLoading === 0 && progress.tablesQueued === 0 ? progress : undefined;
        },
        { intervalMs: durationMs(input.spec.dms!.pollInterval), signal: heartbeat.signal, what: `the full load of DMS task ${n.dmsTask}` },
      ),
    );
  } finally {
    heartbeat.stop();
  }
}

export async function describeDmsTask(input: DmsInput): Promise<DmsProgress> {
  return withAws(input.spec.aws, async (aws) => progressOf(await describeTask(aws, names(input).dmsTask)));
}

/**
 * Stops the task (idempotent) and waits, with waitUntilReplicationTaskStopped, until DMS reports it
 * stopped. The loop around the waiter stays: a task that is not running cannot be stopped yet, and the
 * waiter fails on states that pass (starting: it is stopped once it runs) as on those that end the wait
 * (ready, failed: nothing to stop, as before).
 */
export async function stopDmsTask(input: DmsInput): Promise<DmsProgress> {
  const n = names(input);
  const context = Context.current();
  const signal = context.cancellationSignal;
  // No time limit of its own: the activity's start-to-close timeout.
  const deadline = Date.now() + (context.info.startToCloseTimeoutMs || 60 * 60_000);
  return withAws(input.spec.aws, async (aws) => {
    for (;;) {
      const task = await describeTask(aws, n.dmsTask);
      if (!task || task.Status === 'stopped' || task.Status === 'ready' || task.Status === 'failed') return progressOf(task);
      if (task.Status === 'running') {
        await aws.dms.send(new StopReplicationTaskCommand({ ReplicationTaskArn: task.ReplicationTaskArn })).catch((error: unknown) => {
          if (awsErrorCode(error) !== 'InvalidResourceStateFault') throw error;
        });
      }
      const outcome = await waitWith(waitUntilReplicationTaskStopped, aws.dms, dmsTaskFilter(n.dmsTask), { timeoutMs: Math.max(deadline - Date.now(), 1000), signal, action: 'describing the DMS task', field: FIELD });
      if (outcome === 'timeout') throw new Error(`DMS task ${n.dmsTask} did not stop in time (status ${(await describeTask(aws, n.dmsTask))?.Status ?? 'missing'}): retried`);
      if (outcome === 'failed') await pause(pollMs(), signal);
    }
  });
}

/** DMS's slots on the source: test_decoding / pglogical slots of this database that pgmove did not create. */
const DMS_SLOTS_SQL = `
  SELECT slot_name, active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained,
         coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint AS lag,
         (confirmed_flush_lsn >= $1::pg_lsn) AS caught_up
    FROM pg_replication_slots
   WHERE database = current_database() AND slot_type = 'logical' AND plugin <> 'pgoutput'`;

export interface DmsSlotState {
  slots: { name: string; active: boolean; retainedWalBytes: number; lagBytes: number; caughtUp: boolean }[];
  position: string;
}

/** The WAL DMS's slot holds on the source, and whether it has confirmed `position` (default: now). */
export async function dmsSlotState(input: { spec: MigrationSpec; position?: string }): Promise<DmsSlotState> {
  const info = await connectionInfo(input.spec.source, 'source');
  return withClient(info, 'source', async (client) => {
    const position = input.position ?? (await client.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0]!.lsn;
    const rows = (await client.query<{ slot_name: string; active: boolean; retained: string; lag: string; caught_up: boolean }>(DMS_SLOTS_SQL, [position])).rows;
    return { position, slots: rows.map((r) => ({ name: r.slot_name, active: r.active, retainedWalBytes: Number(r.retained), lagBytes: Number(r.lag), caughtUp: r.caught_up })) };
  });
}
