/**
 * The rollback window after a switch (cutover.rollbackWindow), inside `migrateDatabase`: the reverse
 * stream (started by the cutover before the switch) keeps the old server a current copy; every
 * statusInterval its lag and the WAL its slot holds on the new server are measured; `pgmove rollback`
 * switches back, `pgmove finalize` or the window's end closes it, and so does the WAL guardrail (the new
 * server's disk comes first). The migration's cleanup drops the reverse stream. Deterministic code only.
 */
import { ApplicationFailure, CancellationScope, condition, isCancellation, workflowInfo } from '@temporalio/workflow';
import type { MigrationSpec } from '../src/spec';
import { OWED, type CutoverAttempt, type MigrationStatus, type ReplicationState, type RollbackState } from '../src/model';
import { durationMs, formatBytes as mb, sizeBytes as bytes } from '../src/units';
import { errorText, rootCause } from '../src/error-text';
import { trimHistory, type CutoverControl, type LogicalContext } from './logical';
import type { RollbackRequest } from './messages';

/** Right after the switch: the window opens (the forward stream has served and is dropped now: its slot would hold the old server's WAL). */
export async function openRollbackWindow(ctx: LogicalContext, knownTables: string[] | undefined): Promise<void> {
  const { spec, migrationId, status, acts } = ctx;
  const now = Date.now();
  status.rollback = {
    openedAt: new Date(now).toISOString(),
    until: new Date(now + durationMs(spec.cutover.rollbackWindow!)).toISOString(),
    switchedAt: ctx.control.switchedAt ?? new Date(now).toISOString(),
    state: 'open',
  };
  await acts.steps.dropReplication({ spec, migrationId });
  status.cleanupOwed = status.cleanupOwed.filter((owed) => owed !== OWED.replication);
  await holdRollbackWindow(ctx, knownTables);
}

/**
 * The window; also where a continued run resumes. Returns when the window ends or a rollback switched; a
 * window that ends without a rollback after the cutover's checksums differed fails with that report.
 */
export async function holdRollbackWindow(ctx: LogicalContext, knownTables: string[] | undefined): Promise<void> {
  await windowLoop(ctx, knownTables);
  const { status } = ctx;
  const validation = status.validation;
  if (status.rollback!.state !== 'rolledBack' && validation && !validation.ok) {
    throw ApplicationFailure.nonRetryable(`${validation.summary}\nThe cutover has switched and the rollback window ended without a rollback; the target is kept.`, 'ValidationFailed');
  }
}

async function windowLoop(ctx: LogicalContext, knownTables: string[] | undefined): Promise<void> {
  const { spec, migrationId, status, acts, control } = ctx;
  const window = status.rollback!;
  control.switchedAt ??= window.switchedAt;
  if (status.phase !== 'rollbackWindow') ctx.enterPhase('rollbackWindow');
  const interval = durationMs(spec.logical.statusInterval);
  const requested = () => control.rollbackRequest !== undefined || control.finalizeRequest !== undefined;
  for (;;) {
    trimHistory(status);
    const info = workflowInfo();
    if (!requested() && (info.continueAsNewSuggested || info.historyLength >= spec.logical.historyEventsPerRun)) await ctx.continueSyncing(knownTables);
    try {
      window.reverse = reverseGuardrails(await acts.steps.reverseStreamStatus({ spec, migrationId }), spec);
    } catch (error) {
      if (isCancellation(error)) throw error;
      const cause = rootCause(error);
      if (cause instanceof ApplicationFailure && cause.nonRetryable) return closeWindow(ctx, 'closed', errorText(error));
      (status.warnings ??= []).push(`could not measure the reverse stream (${new Date().toISOString()}): ${errorText(error)}`);
    }
    const retained = window.reverse?.retainedWalBytes ?? 0;
    if (retained > bytes(spec.logical.walLimitBytes)) {
      return closeWindow(ctx, 'closed', `the reverse slot held ${mb(retained)} of WAL on the target, above logical.walLimitBytes (${mb(bytes(spec.logical.walLimitBytes))}): the window closed early to keep the target's disk from filling, and a rollback is no longer possible`);
    }
    ctx.publish();
    // An accepted rollback goes first: the update answered "accepted", so neither a finalize nor the window's end may drop it.
    const request = control.rollbackRequest;
    if (request) {
      control.rollbackRequest = undefined;
      if (await attemptRollback(ctx, request)) return;
      continue;
    }
    if (control.finalizeRequest) return closeWindow(ctx, 'finalized', `finalized by ${requester(control.finalizeRequest)}`);
    if (Date.now() >= Date.parse(window.until)) return closeWindow(ctx, 'finalized', `the window (${spec.cutover.rollbackWindow}) ended`);
    await condition(requested, Math.max(1, Math.min(interval, Date.parse(window.until) - Date.now())));
  }
}

function closeWindow(ctx: LogicalContext, state: RollbackState['state'], because: string): void {
  const window = ctx.status.rollback!;
  window.state = state;
  window.endedBecause = because;
  const pending = ctx.control.rollbackRequest;
  if (pending) (ctx.status.warnings ??= []).push(`the rollback requested by ${requester(pending)} was not run: ${because}`);
  if (state === 'closed') (ctx.status.warnings ??= []).push(`rollback window closed: ${because}`);
  ctx.publish();
}

function requester(request: RollbackRequest): string {
  return `${request.approvedBy ?? 'operator'}${request.reason ? ` (${request.reason})` : ''}`;
}

/** One rollback attempt; true when it switched back. A failure before the switch unfences the new server and keeps the window open. */
async function attemptRollback(ctx: LogicalContext, request: RollbackRequest): Promise<boolean> {
  const { spec, migrationId, status, acts, control } = ctx;
  const window = status.rollback!;
  const input = { spec, migrationId };
  const attempt: CutoverAttempt = { requestedBy: requester(request), startedAt: new Date().toISOString(), outcome: 'running' };
  (window.attempts ??= []).push(attempt);
  window.state = 'rollingBack';
  control.running = true;
  ctx.enterPhase('rollback');
  try {
    // Not cancellable: a switch back must never be half undone.
    const result = await CancellationScope.nonCancellable(() => acts.cutover.rollback(input));
    Object.assign(attempt, result.timing, { outcome: 'switched', switchHookOutput: result.switchHookOutput });
    window.state = 'rolledBack';
    window.endedBecause = `rolled back by ${attempt.requestedBy}`;
    status.validation = result.validation;
    control.running = false;
    if (!result.validation.ok) throw ApplicationFailure.nonRetryable(`${result.validation.summary}\nThe rollback has switched back: the old server is live again.`, 'ValidationFailed');
    return true;
  } catch (error) {
    if (window.state === 'rolledBack') throw error;
    const switched = () => {
      window.state = 'rolledBack';
      Object.assign(attempt, { outcome: 'switched', error: errorText(error) });
      control.running = false;
      return ApplicationFailure.nonRetryable(
        `the rollback reached the switch but did not finish (${errorText(error)}); the switch hook may have run, so the old server stays live: check where the application points`,
        'RollbackIncomplete',
      );
    };
    if ((await CancellationScope.nonCancellable(() => acts.untilDone.rollbackStage(input))).switchingAt) throw switched();
    attempt.outcome = 'failed';
    attempt.error = errorText(error);
    status.errors.push(`rollback failed, the target unfenced, the window stays open: ${attempt.error}`);
    try {
      await CancellationScope.nonCancellable(() => acts.untilDone.abandonRollback(input));
    } catch (abandonError) {
      const cause = rootCause(abandonError);
      if (cause instanceof ApplicationFailure && cause.type === 'AlreadySwitching') throw switched();
      throw abandonError;
    }
    window.state = 'open';
    control.running = false;
    ctx.enterPhase('rollbackWindow');
    return false;
  }
}

/** Warnings on the reverse stream (the limit itself closes the window, see holdRollbackWindow). */
function reverseGuardrails(state: ReplicationState, spec: MigrationSpec): ReplicationState {
  const notes: string[] = [];
  if (state.retainedWalBytes > bytes(spec.logical.walWarningBytes)) notes.push(`the reverse slot holds ${mb(state.retainedWalBytes)} of WAL on the target (warning at ${mb(bytes(spec.logical.walWarningBytes))}; the window closes at ${mb(bytes(spec.logical.walLimitBytes))})`);
  if (state.applyErrors > 0) notes.push(`${state.applyErrors} apply error(s) on the source: see its server log`);
  if (!state.streaming) notes.push('the reverse stream is not streaming right now');
  if (state.newTables.length) notes.push(`tables created on the target since the switch are not streamed back: ${state.newTables.join(', ')} (a rollback will refuse)`);
  if (notes.length) state.warning = notes.join('; ');
  return state;
}

/** Why a rollback would be refused now, or undefined when it may go ahead. Pure. */
export function rollbackRefusal(spec: MigrationSpec | undefined, status: MigrationStatus, control: CutoverControl): string | undefined {
  const window = status.rollback;
  if (!window) return spec?.cutover.rollbackWindow ? `the migration has not cut over yet (phase: ${status.phase}): there is nothing to roll back` : 'this migration has no rollback window (cutover.rollbackWindow is not set)';
  if (window.state === 'rollingBack' || control.running) return 'a rollback is already running';
  if (window.state !== 'open') return `the rollback window has ended: ${window.state}${window.endedBecause ? ` (${window.endedBecause})` : ''}`;
  const reverse = window.reverse;
  if (!reverse || !spec) return 'no measurement of the reverse stream yet';
  const max = bytes(spec.cutover.maxLagBytes);
  if (reverse.lagBytes > max) return `the source is ${mb(reverse.lagBytes)} behind the target, above cutover.maxLagBytes (${mb(max)}); wait for it to catch up`;
  if (!reverse.streaming) return 'the reverse stream is not streaming right now (see the warnings and the source server log)';
  if (reverse.newTables.length) return `tables were created on the target since the switch and are not streamed back: ${reverse.newTables.join(', ')}`;
  return undefined;
}

/** Why a finalize would be refused now, or undefined. Pure. */
export function finalizeRefusal(status: MigrationStatus, control: CutoverControl): string | undefined {
  const window = status.rollback;
  if (!window) return 'there is no rollback window to finalize (cutover.rollbackWindow is not set, or the migration has not cut over yet)';
  if (window.state === 'rollingBack' || control.running) return 'a rollback is running';
  if (window.state !== 'open') return `the rollback window has already ended: ${window.state}`;
  return undefined;
}
