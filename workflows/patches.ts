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
  /** migrateDatabase tells a cluster parent readiness changes only (not every lag figure) and waits until its last report is delivered before it closes. */
  readinessChangesOnly: 'readiness-changes-only',
  /** migrateCluster: children outlive a run (ABANDON) and report their end by signal, so the parent continues as new while they run; an abort, cancellation or failure stops every child and waits for its cleanup; the parent's own undo is not cancellable. */
  clusterChildrenCleanUp: 'cluster-children-clean-up',
  /** Logical method: the copy plan is stored on the target (copyStoredPlanAtSlot) and the tables the migration started with are read from the publication's record, not carried in payloads. */
  logicalPlanOnTarget: 'logical-plan-on-target',
  /** The privilege revert gets the workflow's record of the elevation (revertPrivileges input `record`), to work from when the state file on the server is gone. */
  revertWithRecord: 'revert-with-record',
  /** A cancelled elevatePrivileges is waited for (WAIT_CANCELLATION_COMPLETED) before the revert starts, so the two never run at once. */
  elevationWaitsForCancel: 'elevation-waits-for-cancel',
  /** cutover.rollbackWindow: the reverse stream is owed before the cutover, and after the switch the window opens (forward stream dropped, reverse stream measured, rollback or finalize served). */
  rollbackWindow: 'rollback-window',
  /** recoverMigration also drops a rollback window's reverse stream (recoverReverseStream). */
  recoverReverseStream: 'recover-reverse-stream',
  /** unfreezeMigrationSource also lifts the target's fence that a rollback kept (releaseRolledBackTarget). */
  releaseRolledBackTarget: 'release-rolled-back-target',
} as const;
