/**
 * The offline method (`dump`) inside `migrateDatabase`, after pre-flight: freeze → preData → copy →
 * postData → sequences → validate. With the source frozen the copy follows a plan stored on the target
 * (patch copy-plan-on-target, bookkeeping in ./offline-copy) and continues as a new run when the history
 * grows long; runs recorded before that patch plan in the workflow (planCopy + copyUnit, ./copy-progress).
 * With `freezeSource: false` one activity copies everything at one exported snapshot, and validation
 * compares the source's checksums taken at that snapshot. Deterministic code only.
 */
import { ApplicationFailure, CancellationScope, patched } from '@temporalio/workflow';
import type { SourceTableChecksum } from '../activities/validate';
import type { MigrationSpec } from '../src/spec';
import { OWED, type MigrationStatus, type Phase, type ValidationReport } from '../src/model';
import { initTableProgress, recordUnit, runUnits } from './copy-progress';
import { copyPlannedUnits, initPlannedProgress, recordPlannedUnit, type CopyResume } from './offline-copy';
import { phaseActivities } from './phase-activities';
import { PATCHES } from './patches';

export interface OfflineContext {
  spec: MigrationSpec;
  migrationId: string;
  binDir: string;
  status: MigrationStatus;
  enterPhase: (phase: Phase) => void;
  publish: () => void;
  /** Continues the copy in a new run (a short history however many units); never returns. */
  continueCopy: (copy: CopyResume) => Promise<never>;
}

/** `preData`: migrateDatabase's pre-data step, the same for every method. */
export async function runOffline(ctx: OfflineContext, preData: () => Promise<void>): Promise<void> {
  const { spec, migrationId, status } = ctx;
  // The source stays frozen through every phase: a lost worker must cost seconds there too.
  const acts = phaseActivities(spec, { sourceFrozen: spec.freezeSource });
  if (spec.freezeSource) {
    ctx.enterPhase('freeze');
    status.cleanupOwed.push(OWED.unfreeze);
    // Not cancellable: an abort must not let the unfreeze run before the freeze has committed.
    await CancellationScope.nonCancellable(() => acts.steps.freezeSource(spec, migrationId));
  }

  await preData();

  ctx.enterPhase('copy');
  if (spec.freezeSource && patched(PATCHES.copyPlanOnTarget)) {
    const plan = await acts.steps.storeCopyPlan({ spec, migrationId });
    initPlannedProgress(status, plan);
    ctx.publish();
    await copyStoredPlan(ctx, plan, 0);
    return;
  }
  // Runs recorded before copy-plan-on-target, and every copy at a snapshot: the plan lives in the workflow.
  const plan = await acts.steps.planCopy(spec);
  initTableProgress(status, plan);
  ctx.publish();
  let sourceAtSnapshot: SourceTableChecksum[] | undefined;
  if (spec.freezeSource) {
    await runUnits(plan, spec.jobs, async (unit) => {
      recordUnit(status, await acts.copy.copyUnit({ spec, unit }));
      ctx.publish();
    });
    if (plan.largeObjects > 0) await acts.copy.copyLargeObjects(spec);
  } else {
    const result = await acts.copy.copyAtSnapshot({ spec, plan });
    result.units.forEach((unit) => recordUnit(status, unit));
    sourceAtSnapshot = result.sourceTables;
  }
  await finishOffline(ctx, sourceAtSnapshot);
}

/** Where a run that continued as new during the copy goes on. */
export async function resumeOfflineCopy(ctx: OfflineContext, copy: CopyResume): Promise<void> {
  await copyStoredPlan(ctx, copy.plan, copy.nextUnit);
}

/** Copy of the plan stored on the target from unit `from` on; continues as new when the history is long. */
async function copyStoredPlan(ctx: OfflineContext, plan: CopyResume['plan'], from: number): Promise<void> {
  const { spec, migrationId, status } = ctx;
  // The source is frozen (this path runs only then): a lost worker must cost seconds, as in the freeze.
  const acts = phaseActivities(spec, { sourceFrozen: true });
  const next = await copyPlannedUnits(plan, from, spec.jobs, spec.copy.historyEventsPerRun, async (index) => {
    recordPlannedUnit(status, await acts.copy.copyPlannedUnit({ spec, migrationId, index }));
    ctx.publish();
  });
  if (next < plan.units) {
    if (status.copyUnits) status.copyUnits.runs += 1;
    await ctx.continueCopy({ plan, nextUnit: next });
  }
  status.totals.tablesDone = status.totals.tables;
  if (plan.largeObjects > 0) await acts.copy.copyLargeObjects(spec);
  await acts.steps.dropCopyPlan({ spec, migrationId });
  await finishOffline(ctx, undefined);
}

/** After the copy: indexes and constraints, sequences, validation. */
async function finishOffline(ctx: OfflineContext, sourceAtSnapshot: SourceTableChecksum[] | undefined): Promise<void> {
  const { spec, migrationId, status } = ctx;
  const acts = phaseActivities(spec, { sourceFrozen: spec.freezeSource });
  ctx.enterPhase('postData');
  await acts.postData.postData({ spec, migrationId, binDir: ctx.binDir });

  ctx.enterPhase('sequences');
  await acts.steps.syncSequences(spec);

  ctx.enterPhase('validate');
  const report: ValidationReport = await acts.validate.validate({ spec, sourceTables: sourceAtSnapshot });
  status.validation = report;
  if (!report.ok) {
    throw ApplicationFailure.nonRetryable(`${report.summary}\nThe target is kept for inspection.`, 'ValidationFailed');
  }
}
