/**
 * Cleanup of migrateDatabase on every ending: each compensation (unfreeze the source, drop the
 * replication objects and restore replica identities, scratch files and target reset, AWS resources,
 * revert the privilege elevation) runs on its own. A first pass gives each a bounded number of retries
 * with backoff and records a failure — with the command that finishes it by hand — instead of
 * stopping; a second pass retries without limit the ones that must never be left behind (a frozen
 * source, a slot filling the source's disk, a trust line in pg_hba.conf) unless their failure is
 * permanent. One failing step never skips another. Deterministic code only.
 */
import { ActivityFailure, ApplicationFailure, CancellationScope, patched, proxyActivities } from '@temporalio/workflow';
import type { Duration, RetryPolicy } from '@temporalio/common';
import type * as activities from '../activities';
import type { MigrationSpec, MigrationSpecInput } from '../src/spec';
import { OWED, type CleanupFailure, type CleanupOwed, type MigrationStatus, type Phase } from '../src/model';
import { awsCleanupRequest, recordAwsCleanup, type TargetProduct } from './aws';
import { errorText } from '../src/error-text';
import { sourceStaysFrozen } from './logical';
import { durationMs } from '../src/units';
import { freezeHeartbeatTimeout } from './phase-activities';
import { PATCHES } from './patches';

type Acts = ReturnType<typeof proxyActivities<typeof activities>>;

/** One compensation: what it owes, how it runs, and how an operator finishes it when it keeps failing. */
interface Compensation {
  owed: CleanupOwed;
  byHand: string;
  /** Retried without limit after the first pass: leaving it undone harms the source. */
  mustFinish: boolean;
  /** Runs the step with the given activity proxies. */
  run: (acts: Acts) => Promise<void>;
}

export interface CompensationContext {
  input: MigrationSpecInput;
  spec?: MigrationSpec;
  migrationId: string;
  status: MigrationStatus;
  /** Drop what the migration wrote on the target (it did not complete and the target is not kept). */
  resetTarget: boolean;
  targetExtensionsBefore: string[];
  /** Keep the provisioned RDS instance (the migration completed or its target is kept for inspection). */
  keepInstance: boolean;
  /** Tagged on a provisioned instance that the migration completed on or switched to. */
  product?: TargetProduct;
  enterPhase: (phase: Phase) => void;
  publish: () => void;
}

/** The spec's retries (as for the phases), with backoff; the last resort is the by-hand command. */
function firstPass(ctx: CompensationContext): RetryPolicy {
  return { maximumAttempts: ctx.spec?.retries.maximumAttempts ?? ctx.input.retries?.maximumAttempts ?? 10, initialInterval: '2s', maximumInterval: '1m' };
}

const UNTIL_DONE: RetryPolicy = { initialInterval: '2s', maximumInterval: '1m' };

function compensationActivities(ctx: CompensationContext, step: Compensation, retry: RetryPolicy): Acts {
  // AWS deletions wait minutes for an instance to go; an unfreeze may run the unfreeze hook.
  if (step.owed === OWED.aws) return proxyActivities<typeof activities>({ startToCloseTimeout: '2h', heartbeatTimeout: '2m', retry });
  const heartbeatTimeout = ctx.spec && step.owed === OWED.unfreeze ? freezeHeartbeatTimeout(ctx.spec) : ((ctx.spec?.timeouts.heartbeat ?? ctx.input.timeouts?.heartbeat ?? '60s') as Duration);
  const hookTimeout = durationMs(ctx.spec?.cutover.hookTimeout ?? '5m');
  return proxyActivities<typeof activities>({ startToCloseTimeout: Math.max(15 * 60_000, hookTimeout + 60_000), heartbeatTimeout, retry });
}

/** The compensations this ending owes, in order: the source first, the revert last (dropping the slot may need the granted REPLICATION). */
function owedCompensations(ctx: CompensationContext): Compensation[] {
  const { spec, migrationId, status } = ctx;
  const steps: Compensation[] = [];
  const owes = (owed: CleanupOwed) => status.cleanupOwed.includes(owed);
  if (spec && !spec.dryRun && owes(OWED.reverse)) {
    // First: its slot holds WAL on the target, and dropping its subscription may need the source's granted SUPERUSER.
    steps.push({ owed: OWED.reverse, byHand: `pgmove recover ${migrationId}`, mustFinish: true, run: async (acts) => void (await acts.dropReverseStream({ spec, migrationId })) });
  }
  if (spec && !spec.dryRun) {
    const keepFrozen = sourceStaysFrozen(spec, status);
    if (keepFrozen.note) (status.warnings ??= []).push(keepFrozen.note);
    if (keepFrozen.keep) {
      settle(status, OWED.unfreeze);
      (status.warnings ??= []).push(
        `the source stays frozen after the switch (cutover.sourceAfterSwitch: frozen): a client still pointing at it fails instead of writing where nobody reads; \`pgmove unfreeze ${migrationId}\` makes it writable again`,
      );
    }
    const unfreezeOwed = !keepFrozen.keep && (owes(OWED.unfreeze) || (status.method !== 'logical' && spec.freezeSource));
    if (unfreezeOwed && (status.method !== 'logical' || status.cutovers?.length)) {
      steps.push({
        owed: OWED.unfreeze,
        byHand: `pgmove unfreeze ${migrationId}`,
        mustFinish: true,
        run: async (acts) => {
          if (status.method === 'logical') return acts.unfreezeAfterCutover({ spec, migrationId, knownTables: [] });
          const { fencedBy } = await acts.unfreezeSource(spec, migrationId);
          if (fencedBy) (status.warnings ??= []).push(`the source was left frozen: migration ${fencedBy} fenced it, and only it lifts that fence`);
        },
      });
    } else {
      settle(status, OWED.unfreeze);
    }
    if (status.method === 'logical') {
      steps.push({ owed: OWED.replication, byHand: `pgmove recover ${migrationId}`, mustFinish: true, run: async (acts) => void (await acts.dropReplication({ spec, migrationId })) });
    }
    steps.push({
      owed: OWED.target,
      byHand: `pgmove recover ${migrationId}`,
      mustFinish: false,
      run: async (acts) => void (await acts.cleanup({ spec, migrationId, resetTarget: ctx.resetTarget, targetExtensionsBefore: ctx.targetExtensionsBefore })),
    });
  }
  const aws = awsCleanupRequest(ctx.input, migrationId, status, ctx.keepInstance, ctx.product);
  if (aws) {
    steps.push({
      owed: OWED.aws,
      byHand: `pgmove cleanup ${migrationId}`,
      mustFinish: false,
      run: async (acts) => recordAwsCleanup(status, await acts.cleanupAwsResources(aws.request), aws),
    });
  }
  if (owes(OWED.elevation)) {
    steps.push({
      owed: OWED.elevation,
      byHand: `pgmove recover ${migrationId}`,
      mustFinish: true,
      run: async (acts) => {
        // The workflow's record goes along: the revert works from it when the state file on the server is gone.
        const record = patched(PATCHES.revertWithRecord) ? status.privilegeElevation : undefined;
        const reverted = await acts.revertPrivileges(record ? { spec: ctx.input, migrationId, record } : { spec: ctx.input, migrationId });
        if (status.privilegeElevation) status.privilegeElevation.revertedAt = reverted?.revertedAt ?? 'nothing left to revert';
      },
    });
  }
  return steps;
}

/** Runs every owed compensation, each on its own; failures are recorded in the status, never thrown. */
export async function runCompensations(ctx: CompensationContext): Promise<void> {
  const { status } = ctx;
  const steps = owedCompensations(ctx);
  if (!steps.length) return;
  if (status.phase !== 'cleanup') ctx.enterPhase('cleanup');
  await CancellationScope.nonCancellable(async () => {
    const failed: { step: Compensation; error: unknown }[] = [];
    for (const step of steps) {
      const error = await attempt(ctx, step, compensationActivities(ctx, step, step.owed === OWED.aws ? AWS_RETRY : firstPass(ctx)));
      if (error !== undefined) failed.push({ step, error });
    }
    for (const { step, error } of failed) {
      if (!step.mustFinish || permanent(error)) continue;
      await attempt(ctx, step, compensationActivities(ctx, step, UNTIL_DONE));
    }
  });
}

const AWS_RETRY: RetryPolicy = { maximumAttempts: 30, initialInterval: '5s', maximumInterval: '1m' };

async function attempt(ctx: CompensationContext, step: Compensation, acts: Acts): Promise<unknown> {
  const { status } = ctx;
  try {
    await step.run(acts);
    settle(status, step.owed);
    status.cleanupFailed = status.cleanupFailed?.filter((failure) => failure.step !== step.owed);
    ctx.publish();
    return undefined;
  } catch (error) {
    if (!status.cleanupOwed.includes(step.owed)) status.cleanupOwed.push(step.owed);
    const failure: CleanupFailure = { step: step.owed, error: errorText(error), byHand: step.byHand };
    status.cleanupFailed = [...(status.cleanupFailed ?? []).filter((known) => known.step !== step.owed), failure];
    status.errors.push(`cleanup failed, still owed (${step.owed}): ${failure.error} — finish it by hand: ${step.byHand}`);
    ctx.publish();
    return error;
  }
}

function settle(status: MigrationStatus, owed: CleanupOwed): void {
  status.cleanupOwed = status.cleanupOwed.filter((entry) => entry !== owed);
}

/** A failure that retrying cannot fix (non-retryable): reported for an operator, not retried forever. */
function permanent(error: unknown): boolean {
  const cause = error instanceof ActivityFailure ? error.cause : error;
  return cause instanceof ApplicationFailure && cause.nonRetryable === true;
}
