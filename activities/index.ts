/** Every activity the worker registers; workflows import this module's types only. */
export { preflight } from './preflight';
export { freezeSource, unfreezeSource } from './freeze';
export { preData } from './pre-data';
export { planCopy, copyUnit, copyAtSnapshot, copyLargeObjects } from './copy';
export { storeCopyPlan, copyPlannedUnit, copyStoredPlanAtSlot, dropCopyPlan } from './copy-plan';
export { postData } from './post-data';
export { syncSequences } from './sequences';
export { validate } from './validate';
export { cleanup } from './cleanup';
export { preparePublication, copyAtSlot, createSubscription, replicationStatus, dropReplication } from './sync';
export { cutover, cutoverStage, abandonCutover, unfreezeAfterCutover, clusterSwitchHook, releaseSource } from './cutover';
export { planCluster, migrateGlobals, finishGlobals, dropGlobals } from './globals';
export { elevatePrivileges, revertPrivileges } from './elevate-privileges';
export { provisionTarget, planProvisionTarget } from './provision-target';
export { cleanupAwsResources } from './cleanup-aws';
export { createDmsResources, startDmsTask, waitDmsFullLoad, describeDmsTask, stopDmsTask, dmsSlotState } from './dms';
export { recoverSwitchState, recoverFence, recoverSubscription, recoverSlotAndPublication, recoverTarget, recoverScratch, recoverElevation } from './recover';
