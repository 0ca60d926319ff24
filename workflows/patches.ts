/**
 * Every `patched()` id in the workflows, with what it changed. A worker must replay the histories of
 * runs started by older workers (a migration may sync for days across deployments), so a change to the
 * commands a workflow emits takes a new id here and keeps the old path behind `!patched(id)`. Retiring
 * one (README, "Worker upgrades"): once no open run predates it, replace `patched` by `deprecatePatch`
 * for one release, then remove the id and the old path.
 */
export const PATCHES = {
  /** Cleanup runs each compensation on its own (workflows/compensations.ts) instead of a sequence that a permanent failure ended. */
  independentCompensations: 'independent-compensations',
  /** Offline copy with the source frozen: the plan is stored on the target (storeCopyPlan, copyPlannedUnit by index, dropCopyPlan), the status keeps totals, and the copy continues as new past copy.historyEventsPerRun. */
  copyPlanOnTarget: 'copy-plan-on-target',
} as const;
