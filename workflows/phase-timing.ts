/**
 * A workflow's move to its next phase, shared by migrateDatabase and migrateCluster: the current
 * phase's timing ends, the next one's starts (a phase that ends the run has none). Pure: the search
 * attribute and the published status stay with each workflow, whose commands they are.
 */
import type { PhaseTiming } from '../src/model';

/** The phases that end a run. */
const ENDINGS: readonly string[] = ['completed', 'failed', 'aborted', 'dryRunCompleted'];

export function advancePhase<P extends string>(status: { phase: P; timings: Partial<Record<P, PhaseTiming>> }, phase: P, now: string): void {
  const current = status.timings[status.phase];
  if (current && !current.endedAt) {
    current.endedAt = now;
    current.seconds = (Date.parse(now) - Date.parse(current.startedAt)) / 1000;
  }
  status.phase = phase;
  if (!ENDINGS.includes(phase)) status.timings[phase] = { startedAt: now };
}
