/**
 * Method dms (AWS DMS full load + CDC), after pgmove's own pre-data: DMS resources, start the task,
 * follow the full load, post-data, then sync (CDC) — status shows the task and the WAL its slot holds
 * on the source, with the logical method's guardrail — until a cutover is requested: freeze the source,
 * wait until DMS's slot has confirmed the frozen WAL position, stop the task, set sequences (at the
 * cutover, not before), validate; the source then stays fenced unless `cutover.sourceAfterSwitch` says
 * writable. DMS resources are deleted by the workflow's AWS cleanup.
 * Deterministic code only.
 */
import { ApplicationFailure, CancellationScope, condition, proxyActivities, sleep, workflowInfo } from '@temporalio/workflow';
import type { Duration, RetryPolicy } from '@temporalio/common';
import type * as activities from '../activities';
import type { DmsPlan, ProvisionedTarget } from '../src/aws/model';
import { OWED, type CutoverAttempt } from '../src/model';
import { durationMs, sizeBytes } from '../src/units';
import { sourceStaysFrozen, type LogicalContext } from './logical';
import { freezeHeartbeatTimeout } from './phase-activities';
import { errorMessage } from '../src/error-text';

function dmsActivities(ctx: LogicalContext, plan: DmsPlan, provisioned: ProvisionedTarget | undefined) {
  const { spec, migrationId } = ctx;
  const timeouts = spec.timeouts as Record<keyof typeof spec.timeouts, Duration>;
  const retry: RetryPolicy = { maximumAttempts: spec.retries.maximumAttempts, initialInterval: '2s', maximumInterval: '1m' };
  const dms = proxyActivities<typeof activities>({ startToCloseTimeout: '2h', heartbeatTimeout: timeouts.heartbeat, retry });
  const load = proxyActivities<typeof activities>({ startToCloseTimeout: timeouts.copy, heartbeatTimeout: timeouts.heartbeat, retry });
  // The syncing loop's measurements of the task and of DMS's slot.
  const measure = proxyActivities<typeof activities>({ startToCloseTimeout: '5m', heartbeatTimeout: timeouts.heartbeat, retry });
  const checks = proxyActivities<typeof activities>({ startToCloseTimeout: timeouts.validate, heartbeatTimeout: timeouts.heartbeat, retry });
  // While the source is frozen a lost worker must cost seconds: the cutover's steps notice it quickly.
  const frozen = proxyActivities<typeof activities>({ startToCloseTimeout: '5m', heartbeatTimeout: freezeHeartbeatTimeout(spec), retry });
  const input = {
    spec,
    migrationId,
    excludedTables: plan.excludedTables,
    targetEndpoint: provisioned?.endpoint,
    identifier: provisioned ? provisioned.instanceIdentifier : undefined,
    subnetIds: spec.dms?.subnetIds,
  };
  return { dms, load, measure, checks, frozen, input };
}

export async function runDms(ctx: LogicalContext, plan: DmsPlan, provisioned: ProvisionedTarget | undefined): Promise<void> {
  const { spec, migrationId, status, acts } = ctx;
  const { dms, load, input } = dmsActivities(ctx, plan, provisioned);

  ctx.enterPhase('copy');
  status.cleanupOwed.push(OWED.dms);
  const created = await dms.createDmsResources(input);
  status.dms = { resources: created.resources };
  ctx.publish();
  status.dms.task = await dms.startDmsTask(input);
  const loaded = await load.waitDmsFullLoad(input);
  status.dms.task = loaded;
  status.totals = { ...status.totals, tables: plan.tables.length, tablesDone: loaded.tablesLoaded };
  ctx.publish();

  ctx.enterPhase('postData');
  await acts.postData.postData({ spec, migrationId, binDir: ctx.binDir });

  ctx.enterPhase('syncing');
  await syncDmsUntilCutover(ctx, plan, provisioned);
}

/** Syncing (CDC) until a cutover is requested, then the cutover; continues as a new run to keep histories short. */
export async function syncDmsUntilCutover(ctx: LogicalContext, plan: DmsPlan, provisioned: ProvisionedTarget | undefined): Promise<void> {
  const { spec, status, acts } = ctx;
  const { measure, checks, frozen, input } = dmsActivities(ctx, plan, provisioned);
  const interval = spec.logical.statusInterval as Duration;
  for (;;) {
    const [task, slots] = await Promise.all([measure.describeDmsTask(input), measure.dmsSlotState({ spec })]);
    if (status.dms) status.dms.task = task;
    const retained = Math.max(0, ...slots.slots.map((s) => s.retainedWalBytes));
    const lag = Math.max(0, ...slots.slots.map((s) => s.lagBytes));
    status.replication = {
      lagBytes: lag,
      lagSeconds: 0,
      retainedWalBytes: retained,
      streaming: task.status === 'running' && slots.slots.some((s) => s.active),
      applyErrors: task.tablesErrored,
      newTables: [],
      measuredAt: new Date().toISOString(),
      warning: slots.slots.length === 0 ? 'no DMS replication slot on the source yet' : retained > sizeBytes(spec.logical.walWarningBytes) ? `DMS's slot holds ${retained} bytes of WAL on the source` : undefined,
    };
    if (retained > sizeBytes(spec.logical.walLimitBytes)) {
      throw ApplicationFailure.nonRetryable(`DMS's replication slot holds ${retained} bytes of WAL on the source, above logical.walLimitBytes: aborting before the source's disk fills`, 'WalLimit');
    }
    if (task.status === 'failed' || task.tablesErrored > 0) throw ApplicationFailure.nonRetryable(`DMS task failed while syncing: ${task.lastFailure ?? task.status}`, 'DmsTaskFailed');
    ctx.publish();
    if (!ctx.control.request && spec.cutover.autoCutover === true && lag <= sizeBytes(spec.cutover.maxLagBytes) && status.replication.streaming) ctx.control.request = { approvedBy: 'autoCutover' };
    if (ctx.control.request) break;
    const info = workflowInfo();
    if (info.continueAsNewSuggested || info.historyLength >= spec.logical.historyEventsPerRun) await ctx.continueSyncing([]);
    await condition(() => ctx.control.request !== undefined, interval);
  }

  const request = ctx.control.request;
  ctx.control.request = undefined;
  ctx.control.running = true;
  const attempt: CutoverAttempt = { requestedBy: request.approvedBy ?? 'operator', startedAt: new Date().toISOString(), outcome: 'running' };
  (status.cutovers ??= []).push(attempt);
  ctx.enterPhase('cutover');
  status.cleanupOwed.push(OWED.unfreeze);
  try {
    await CancellationScope.nonCancellable(() => frozen.freezeSource(spec, ctx.migrationId));
    // CDC has settled when DMS's slot has confirmed everything written before the freeze.
    const frozenAt = (await frozen.dmsSlotState({ spec })).position;
    const deadline = Date.now() + durationMs(spec.cutover.drainTimeout);
    for (;;) {
      const state = await frozen.dmsSlotState({ spec, position: frozenAt });
      if (state.slots.length > 0 && state.slots.every((s) => s.caughtUp)) break;
      if (Date.now() > deadline) throw ApplicationFailure.nonRetryable(`DMS did not confirm the frozen source's WAL position ${frozenAt} within cutover.drainTimeout (${state.slots.length} DMS slot(s) on the source)`, 'DrainTimeout');
      await sleep('1s');
    }
    await frozen.stopDmsTask(input);
    ctx.enterPhase('sequences');
    await frozen.syncSequences(spec);
    ctx.enterPhase('validate');
    status.validation = await checks.validate({ spec });
    if (!status.validation.ok) throw ApplicationFailure.nonRetryable(`${status.validation.summary}\nThe target is kept for inspection.`, 'ValidationFailed');
    attempt.outcome = 'switched';
    ctx.control.switchedAt = new Date().toISOString();
  } catch (error) {
    attempt.outcome = 'failed';
    attempt.error = errorMessage(error);
    throw error;
  } finally {
    ctx.control.running = false;
    // After a switch the source may stay fenced (cleanup says so in the status).
    if (!sourceStaysFrozen(spec, status).keep) await CancellationScope.nonCancellable(() => acts.untilDone.unfreezeSource(spec, ctx.migrationId));
    status.cleanupOwed = status.cleanupOwed.filter((owed) => owed !== OWED.unfreeze);
    ctx.publish();
  }
}
