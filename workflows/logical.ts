/**
 * The logical method inside `migrateDatabase`: publication + slot, copy at the slot's snapshot,
 * post-data, subscription, then `syncing` until a cutover is requested (signal, update or autoCutover),
 * and the cutover itself. A failed cutover resumes syncing with the source unfrozen. Deterministic code
 * only: every measurement and change happens in activities.
 */
import { ApplicationFailure, CancellationScope, condition, getExternalWorkflowHandle, patched, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { Duration } from '@temporalio/common';
import type * as activities from '../activities';
import type { MigrationSpec } from '../src/spec';
import { durationMs, formatBytes as mb, sizeBytes as bytes } from '../src/units';
import { cutoverVoteSignal, type RollbackRequest } from './messages';
import { errorText } from './error-text';
import { freezeHeartbeatTimeout } from './phase-activities';
import { initPlannedProgress, recordStoredPlanCopy } from './offline-copy';
import { PATCHES } from './patches';
import { holdRollbackWindow, openRollbackWindow } from './rollback-window';
import { OWED, type CopyUnitResult, type CutoverAttempt, type CutoverRequest, type MigrationStatus, type Phase, type ReplicationState } from '../src/model';

type Acts = ReturnType<typeof proxyActivities<typeof activities>>;

/** Shared with the message handlers: a request waiting to be served, and whether a cutover runs. */
export interface CutoverControl {
  request?: CutoverRequest;
  running: boolean;
  /** An abort that arrived during a cutover: applied if the cutover fails, ignored once it switched. */
  pendingAbort?: string;
  /** Set once the switch hook has run: from then on the target is live and never reset. */
  switchedAt?: string;
  /** Inside a rollback window (cutover.rollbackWindow): a rollback or a finalize waiting to be served. */
  rollbackRequest?: RollbackRequest;
  finalizeRequest?: RollbackRequest;
}

export interface LogicalContext {
  spec: MigrationSpec;
  migrationId: string;
  binDir: string;
  status: MigrationStatus;
  control: CutoverControl;
  acts: { schema: Acts; copy: Acts; postData: Acts; steps: Acts; cutover: Acts; untilDone: Acts };
  enterPhase: (phase: Phase) => void;
  publish: () => void;
  /** Tells a cluster parent when this database becomes ready (or stops being ready) for a cutover. */
  reportCutoverReadiness: () => void;
  recordUnit: (result: CopyUnitResult) => void;
  initProgress: (plan: Awaited<ReturnType<Acts['planCopy']>>) => void;
  /** Turns a deferred abort into the workflow's cancellation. */
  abortNow: (reason: string) => void;
  /** Continues syncing in a new run (a short history however long the migration syncs); never returns. */
  continueSyncing: (knownTables: string[] | undefined) => Promise<never>;
}

export function cutoverActivities(spec: MigrationSpec): Pick<LogicalContext['acts'], 'cutover'> {
  return {
    // Freeze → switch → checksums: a validation, three hooks and the drain. Few attempts: a retry keeps
    // the source frozen, and the workflow unfreezes it when the attempts are spent (before the switch).
    cutover: proxyActivities<typeof activities>({
      startToCloseTimeout: durationMs(spec.timeouts.validate) + 3 * durationMs(spec.cutover.hookTimeout) + durationMs(spec.cutover.drainTimeout) + 5 * 60_000,
      heartbeatTimeout: freezeHeartbeatTimeout(spec),
      retry: { maximumAttempts: 3, initialInterval: '1s' },
    }),
  };
}

export async function runLogical(ctx: LogicalContext): Promise<void> {
  const { spec, migrationId, status, acts } = ctx;
  const input = { spec, migrationId };
  status.cleanupOwed.push(OWED.replication);

  ctx.enterPhase('copy');
  if (patched(PATCHES.logicalPlanOnTarget)) {
    // The plan stays on the target and the tables the migration started with in the publication's
    // record on the source: no payload grows with the number of tables.
    const plan = await acts.steps.storeCopyPlan({ ...input, skipUnlogged: true });
    initPlannedProgress(status, plan);
    ctx.publish();
    await acts.steps.preparePublication(input);
    const copied = await acts.copy.copyStoredPlanAtSlot(input);
    recordStoredPlanCopy(status, copied);
    if (copied.generations) status.copyGenerations = copied.generations;
    ctx.publish();
    await acts.steps.dropCopyPlan(input);
    ctx.enterPhase('postData');
    await acts.postData.postData({ spec, migrationId, binDir: ctx.binDir, walGuard: true });
    ctx.enterPhase('syncing');
    await acts.steps.createSubscription(input);
    await syncUntilCutover(ctx, undefined);
    return;
  }
  const plan = await acts.steps.planCopy(spec, { skipUnlogged: true });
  ctx.initProgress(plan);
  ctx.publish();
  await acts.steps.preparePublication(input);
  const copied = await acts.copy.copyAtSlot({ ...input, plan });
  copied.units.forEach(ctx.recordUnit);
  // Not a command: the activity finds earlier generations on the source (old histories carry none).
  if (copied.generations) status.copyGenerations = copied.generations;

  ctx.enterPhase('postData');
  await acts.postData.postData({ spec, migrationId, binDir: ctx.binDir, walGuard: true });

  ctx.enterPhase('syncing');
  await acts.steps.createSubscription(input);
  await syncUntilCutover(ctx, Object.keys(plan.tables).concat(status.preflight?.logical?.unloggedTables ?? []));
}

/**
 * The syncing loop: measures the stream every statusInterval, serves cutover requests, and continues
 * as a new run when the history grows long (the stream itself lives in PostgreSQL). `knownTables` is
 * given by runs that started before the publication's record held it (patch logical-plan-on-target).
 */
export async function syncUntilCutover(ctx: LogicalContext, knownTables: string[] | undefined): Promise<void> {
  const { spec, migrationId, status, acts } = ctx;
  const input = { spec, migrationId };
  const interval = spec.logical.statusInterval as Duration;
  let autoCutover = spec.cutover.autoCutover !== false;
  // A run continued during the rollback window goes on with it.
  if (status.rollback?.state === 'open') return holdRollbackWindow(ctx, knownTables);
  for (;;) {
    trimHistory(status);
    const info = workflowInfo();
    if (!ctx.control.request && (info.continueAsNewSuggested || info.historyLength >= spec.logical.historyEventsPerRun)) {
      await ctx.continueSyncing(knownTables);
    }
    try {
      status.replication = withGuardrails(await acts.steps.replicationStatus({ ...input, knownTables }), spec);
      ctx.reportCutoverReadiness();
    } catch (error) {
      // A lost slot is final; a server that is briefly unreachable is not: the stream waits in PostgreSQL.
      if (!(rootCause(error) instanceof ApplicationFailure && (rootCause(error) as ApplicationFailure).nonRetryable)) {
        (status.warnings ??= []).push(`could not measure the stream (${new Date().toISOString()}): ${errorText(error)}`);
        ctx.publish();
        await condition(() => ctx.control.request !== undefined, interval);
        continue;
      }
      throw error;
    }
    ctx.publish();
    if (!ctx.control.request && autoCutover && autoCutoverDue(spec, status.replication)) ctx.control.request = { approvedBy: 'autoCutover' };
    const request = ctx.control.request;
    if (request) {
      ctx.control.request = undefined;
      if (await attemptCutover(ctx, request, knownTables)) {
        if (spec.cutover.rollbackWindow && patched(PATCHES.rollbackWindow)) await openRollbackWindow(ctx, knownTables);
        return;
      }
      if (request.approvedBy === 'autoCutover' && autoCutover) {
        // Never freeze the source again and again for a cause that stays: the operator decides now.
        autoCutover = false;
        (status.warnings ??= []).push('autoCutover is off after a failed attempt: request the cutover when the cause is fixed');
      }
      ctx.enterPhase('syncing');
      continue;
    }
    await condition(() => ctx.control.request !== undefined, interval);
  }
}

/** One cutover attempt; true when it switched. A failure before the switch resumes syncing. */
async function attemptCutover(ctx: LogicalContext, request: CutoverRequest, knownTables: string[] | undefined): Promise<boolean> {
  const { spec, migrationId, status, acts } = ctx;
  const attempt: CutoverAttempt = {
    requestedBy: `${request.approvedBy ?? 'operator'}${request.reason ? ` (${request.reason})` : ''}`,
    startedAt: new Date().toISOString(),
    outcome: 'running',
  };
  (status.cutovers ??= []).push(attempt);
  ctx.control.running = true;
  ctx.enterPhase('cutover');
  status.cleanupOwed.push(OWED.unfreeze);
  // Owed before the cutover starts it: the reverse stream is created inside the freeze, before the switch.
  if (spec.cutover.rollbackWindow && patched(PATCHES.rollbackWindow) && !status.cleanupOwed.includes(OWED.reverse)) status.cleanupOwed.push(OWED.reverse);
  try {
    // Not cancellable: an abort waits for the attempt (a switch must never be half undone).
    const result = await CancellationScope.nonCancellable(() => acts.cutover.cutover({ spec, migrationId, knownTables, coordinated: request.coordinated }));
    Object.assign(attempt, result.timing, { outcome: 'switched', switchHookOutput: result.switchHookOutput });
    ctx.control.switchedAt = result.switchedAt;
    status.validation = result.validation;
    if (result.validatedLive) (status.warnings ??= []).push('the worker restarted after the switch: checksums were compared on the live target, where writes since the switch also count');
    if (ctx.control.pendingAbort !== undefined) (status.warnings ??= []).push(`abort ignored: the cutover had already switched (${ctx.control.pendingAbort})`);
    ctx.control.running = false;
    if (!result.validation.ok) {
      // With a rollback window, differing checksums are a reason to go back: the window opens anyway, and
      // the migration fails with the report only if it ends without a rollback (rollback-window.ts).
      if (spec.cutover.rollbackWindow && patched(PATCHES.rollbackWindow)) {
        status.errors.push(`the cutover switched but its checksums differ (${result.validation.summary.split('\n')[0]}): \`pgmove rollback ${migrationId}\` switches back; \`pgmove finalize ${migrationId}\` keeps the target and fails the migration with the report`);
        return true;
      }
      throw ApplicationFailure.nonRetryable(`${result.validation.summary}\nThe cutover has switched; the target is kept.`, 'ValidationFailed');
    }
    return true;
  } catch (error) {
    if (ctx.control.switchedAt) throw error;
    // Past the switch mark there is no way back (the application may already use the target).
    const switching = (at: string) => {
      ctx.control.switchedAt = at;
      ctx.control.running = false;
      Object.assign(attempt, { outcome: 'switched', error: errorText(error) });
      return ApplicationFailure.nonRetryable(
        `the cutover reached the switch but did not finish (${errorText(error)}); the switch hook may have run, so the target is kept and the stream is not resumed: check where the application points`,
        'CutoverIncomplete',
      );
    };
    const stage = await CancellationScope.nonCancellable(() => acts.untilDone.cutoverStage({ spec, migrationId, knownTables }));
    if (stage.switchingAt) throw switching(stage.switchedAt ?? stage.switchingAt);
    attempt.outcome = 'failed';
    attempt.error = errorText(error);
    if (request.coordinated) voteFailed(migrationId, request.coordinated, attempt.error);
    status.errors.push(`cutover failed, source unfrozen, back to syncing: ${attempt.error}`);
    try {
      await CancellationScope.nonCancellable(() => acts.untilDone.abandonCutover({ spec, migrationId, knownTables }));
    } catch (abandonError) {
      // A stale attempt of the cutover may have reached the switch meanwhile.
      const cause = rootCause(abandonError);
      if (cause instanceof ApplicationFailure && cause.type === 'AlreadySwitching') throw switching(new Date().toISOString());
      throw abandonError;
    }
    status.cleanupOwed = status.cleanupOwed.filter((owed) => owed !== OWED.unfreeze);
    ctx.control.running = false;
    if (ctx.control.pendingAbort !== undefined) ctx.abortNow(ctx.control.pendingAbort);
    return false;
  }
}

/** Tells a cluster cutover's coordinator that this database cannot switch in that attempt. */
export function voteFailed(migrationId: string, coordinated: NonNullable<CutoverRequest['coordinated']>, error: string): void {
  void getExternalWorkflowHandle(coordinated.parentId)
    .signal(cutoverVoteSignal, { workflowId: migrationId, attempt: coordinated.attempt, vote: 'failed', error })
    .catch(() => undefined);
}

/** Warning and limit on the WAL the slot holds on the source's disk. */
function withGuardrails(state: ReplicationState, spec: MigrationSpec): ReplicationState {
  const limit = bytes(spec.logical.walLimitBytes);
  const warning = bytes(spec.logical.walWarningBytes);
  if (state.retainedWalBytes > limit) {
    throw ApplicationFailure.nonRetryable(
      `the replication slot holds ${mb(state.retainedWalBytes)} of WAL on the source, above logical.walLimitBytes (${mb(limit)}): aborting before the source's disk fills; the slot is dropped. Find why the target falls behind (apply errors: ${state.applyErrors}), then start again`,
      'WalLimitExceeded',
    );
  }
  const notes: string[] = [];
  if (state.retainedWalBytes > warning) notes.push(`the slot holds ${mb(state.retainedWalBytes)} of WAL on the source (warning at ${mb(warning)}, abort at ${mb(limit)})`);
  if (state.applyErrors > 0) notes.push(`${state.applyErrors} apply error(s) on the target: see its server log`);
  if (!state.streaming) notes.push('the subscription is not streaming right now');
  if (state.newTables.length) notes.push(`tables created on the source since the start are not replicated: ${state.newTables.join(', ')} (the cutover will refuse)`);
  if (notes.length) state.warning = notes.join('; ');
  return state;
}

/** Whether autoCutover asks for the cutover now (lag within the limit, streaming, and the time reached). Pure. */
export function autoCutoverDue(spec: MigrationSpec, state: ReplicationState): boolean {
  const auto = spec.cutover.autoCutover;
  if (auto === false) return false;
  if (state.lagBytes > bytes(spec.cutover.maxLagBytes) || !state.streaming) return false;
  return auto === true || Date.now() >= Date.parse(auto.at);
}

/** Keeps the status (carried into every continued run) bounded however long the migration syncs. */
export function trimHistory(status: MigrationStatus): void {
  if (status.errors.length > 50) status.errors = status.errors.slice(-50);
  if (status.warnings && status.warnings.length > 50) status.warnings = status.warnings.slice(-50);
  if (status.cutovers && status.cutovers.length > 20) status.cutovers = status.cutovers.slice(-20);
}

export function rootCause(error: unknown): unknown {
  let current = error;
  while (current instanceof Error && (current as { cause?: unknown }).cause) current = (current as { cause?: unknown }).cause;
  return current;
}

/** Rejection reason for a cutover request now, or undefined when it may go ahead. */
export function cutoverRefusal(spec: MigrationSpec | undefined, status: MigrationStatus, control: CutoverControl): string | undefined {
  return cutoverBlocker(spec, status, control)?.text;
}

/**
 * Why a cutover would be refused now: `text` for the operator (with the current figures), `summary` for a
 * cluster parent, which is told only when `summary` changes — a lag figure that moves every status
 * interval must not grow the parent's history.
 */
export function cutoverBlocker(spec: MigrationSpec | undefined, status: MigrationStatus, control: CutoverControl): { text: string; summary: string } | undefined {
  const same = (text: string) => ({ text, summary: text });
  if (control.running || status.phase === 'cutover') return same('a cutover is already running');
  if (control.switchedAt) return same('the migration has already cut over');
  if (status.phase !== 'syncing' || !spec) {
    return same(status.method === 'dump' ? 'this migration uses the dump method: there is no cutover to request' : `not syncing yet (phase: ${status.phase})`);
  }
  const lag = status.replication?.lagBytes;
  const max = bytes(spec.cutover.maxLagBytes);
  if (lag === undefined) return same('no lag measurement yet');
  if (lag > max) {
    return { text: `lag ${mb(lag)} is above cutover.maxLagBytes (${mb(max)}); wait for the target to catch up`, summary: `lag is above cutover.maxLagBytes (${mb(max)}); pgmove status ${status.migrationId} shows it` };
  }
  if (!status.replication!.streaming) return same('the subscription is not streaming right now (see the warnings and the target server log)');
  if (status.replication!.newTables.length) return same(`tables were created on the source since the start and are not replicated: ${status.replication!.newTables.join(', ')}`);
  return undefined;
}

/**
 * After a switch the old source keeps pgmove's fence (`cutover.sourceAfterSwitch: frozen`) when the
 * fence is pgmove's own (readOnly; DMS always) and the migration role can lift it later without help:
 * a SUPERUSER granted by the privilege hack is reverted at the end, so then the source is unfrozen now.
 */
export function sourceStaysFrozen(spec: MigrationSpec, status: MigrationStatus): { keep: boolean; note?: string } {
  // A rollback made the old source live again (and unfenced it).
  if (status.rollback?.state === 'rolledBack') return { keep: false };
  const switched = (status.cutovers ?? []).some((attempt) => attempt.outcome === 'switched');
  if (!switched || spec.cutover.sourceAfterSwitch !== 'frozen') return { keep: false };
  if (spec.cutover.freeze === 'hook' && status.method !== 'dms') return { keep: false };
  if (status.privilegeElevation?.attributesSet.includes('SUPERUSER')) {
    return { keep: false, note: 'the source was unfrozen after the switch although cutover.sourceAfterSwitch is frozen: lifting the fence later needs the SUPERUSER the privilege hack granted, which is reverted now' };
  }
  return { keep: true };
}
