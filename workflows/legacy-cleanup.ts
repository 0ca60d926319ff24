/**
 * The cleanup of runs that reached their cleanup before the "independent-compensations" patch: steps in
 * a fixed sequence where a permanent failure of one ended the sequence. Kept, unchanged in the commands
 * it emits, so that such histories still replay on a new worker; deleted with that patch's retirement
 * (README, "Worker upgrades"). New runs clean up through ./compensations.
 */
import { CancellationScope } from '@temporalio/workflow';
import type { MigrationSpec, MigrationSpecInput } from '../src/spec';
import { OWED, type MigrationStatus, type Phase } from '../src/model';
import { sourceStaysFrozen } from './logical';
import { phaseActivities } from './phase-activities';
import { elevationActivities } from './elevation';
import { errorText } from '../src/error-text';

/** Cleanup runs even when the workflow was cancelled or aborted; its own failure is reported too. */
export async function finish(
  spec: MigrationSpec | undefined,
  migrationId: string,
  status: MigrationStatus,
  resetTarget: boolean,
  targetExtensionsBefore: string[],
  enterPhase: (phase: Phase) => void,
  publish: () => void,
): Promise<void> {
  if (!spec || spec.dryRun) return;
  const ready = spec;
  enterPhase('cleanup');
  await CancellationScope.nonCancellable(async () => {
    const { steps, untilDone } = phaseActivities(ready);
    const { keep: keepFrozen, note } = sourceStaysFrozen(ready, status);
    if (note) (status.warnings ??= []).push(note);
    if (keepFrozen) {
      status.cleanupOwed = status.cleanupOwed.filter((owed) => owed !== OWED.unfreeze);
      (status.warnings ??= []).push(`the source stays frozen after the switch (cutover.sourceAfterSwitch: frozen): a client still pointing at it fails instead of writing where nobody reads; \`pgmove unfreeze ${migrationId}\` makes it writable again`);
      publish();
    }
    if (status.method === 'logical') {
      // The source first: unfrozen (the hook strategy's record lives on the publication), then the slot — a forgotten
      // slot fills the source's disk; both are retried until they succeed.
      if (status.cutovers?.length && !keepFrozen) await untilDone.unfreezeAfterCutover({ spec: ready, migrationId, knownTables: [] });
      status.cleanupOwed = status.cleanupOwed.filter((owed) => owed !== OWED.unfreeze);
      publish();
      await untilDone.dropReplication({ spec: ready, migrationId });
      status.cleanupOwed = status.cleanupOwed.filter((owed) => owed !== OWED.replication);
      publish();
    } else if (ready.freezeSource && !keepFrozen) {
      const { fencedBy } = await untilDone.unfreezeSource(ready, migrationId);
      if (fencedBy) (status.warnings ??= []).push(`the source was left frozen: migration ${fencedBy} fenced it, and only it lifts that fence`);
      status.cleanupOwed = status.cleanupOwed.filter((owed) => owed !== OWED.unfreeze);
      publish();
    }
    try {
      await steps.cleanup({ spec: ready, migrationId, resetTarget, targetExtensionsBefore });
      status.cleanupOwed = status.cleanupOwed.filter((owed) => owed === OWED.elevation);
    } catch (error) {
      status.errors.push(`cleanup failed, still owed (${status.cleanupOwed.join('; ')}): ${errorText(error)}`);
    }
  });
}

/** Phase 2's undo, last in cleanup (dropping the slot may still need the granted REPLICATION). */
export async function revertElevation(input: MigrationSpecInput, migrationId: string, status: MigrationStatus, enterPhase: (phase: Phase) => void, publish: () => void): Promise<void> {
  if (!status.cleanupOwed.includes(OWED.elevation)) return;
  if (status.phase !== 'cleanup') enterPhase('cleanup');
  await CancellationScope.nonCancellable(async () => {
    const reverted = await elevationActivities(input).revertPrivileges({ spec: input, migrationId });
    if (status.privilegeElevation) status.privilegeElevation.revertedAt = reverted?.revertedAt ?? 'nothing left to revert';
    status.cleanupOwed = status.cleanupOwed.filter((owed) => owed !== OWED.elevation);
    publish();
  });
}
