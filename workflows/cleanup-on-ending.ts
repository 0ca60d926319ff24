/**
 * Phase 11 of migrateDatabase, on every ending (completed, failed, aborted, dry run): undoes what the
 * ending owes. New runs go through ./compensations (each step on its own); runs that reached their
 * cleanup before the "independent-compensations" patch keep the fixed sequence of ./legacy-cleanup and
 * ./aws, so their histories still replay. Deterministic code only.
 */
import { patched } from '@temporalio/workflow';
import { releaseAwsResources, type TargetProduct } from './aws';
import { runCompensations, type CompensationContext } from './compensations';
import { finish, revertElevation } from './legacy-cleanup';
import { PATCHES } from './patches';

/** The run as its ending finds it. */
export interface EndingContext extends Omit<CompensationContext, 'resetTarget' | 'keepInstance' | 'product'> {
  /** Pre-data has written to the target (a continued run always has). */
  targetTouched: boolean;
  /** When the cutover switched to the target, if it did. */
  switchedAt?: string;
}

/**
 * `keepTarget`: the target stays as it is — the migration completed, a validation failed (kept for
 * inspection), or the application was switched to it. A provisioned instance is kept then too.
 */
export async function cleanUpOnEnding(ctx: EndingContext, { keepTarget, completed }: { keepTarget: boolean; completed: boolean }): Promise<void> {
  const { input, spec, migrationId, status, targetExtensionsBefore, enterPhase, publish } = ctx;
  const resetTarget = ctx.targetTouched && !keepTarget;
  const product = productMark(ctx.switchedAt, completed);
  if (patched(PATCHES.independentCompensations)) {
    await runCompensations({ input, spec, migrationId, status, resetTarget, targetExtensionsBefore, keepInstance: keepTarget, product, enterPhase, publish });
    return;
  }
  await finish(spec, migrationId, status, resetTarget, targetExtensionsBefore, enterPhase, publish);
  await releaseAwsResources(input, migrationId, status, keepTarget, publish);
  await revertElevation(input, migrationId, status, enterPhase, publish);
}

/** What makes the target the product (recorded on a provisioned instance as a tag): a switch, or completion. */
function productMark(switchedAt: string | undefined, completed: boolean): TargetProduct | undefined {
  if (switchedAt !== undefined) return { outcome: 'switched', at: switchedAt };
  return completed ? { outcome: 'completed', at: new Date().toISOString() } : undefined;
}
