/**
 * What migrateDatabase hears and tells, kept out of its phase sequence: the status query, the abort
 * and cutover signals, the requestCutover / requestRollback / finalize updates (each refused at once
 * with the reason when it cannot be served), and the small API the phases use to publish the status,
 * enter a phase and keep a migrateCluster parent informed. Deterministic code only.
 */
import { CancellationScope, getExternalWorkflowHandle, patched, setCurrentDetails, setHandler, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { UpdateDefinition } from '@temporalio/common';
import type { MigrationSpec, MigrationSpecInput } from '../src/spec';
import type { CutoverAnswer, MigrationStatus, Phase } from '../src/model';
import { abortSignal, cutoverSignal, databaseProgressSignal, finalizeUpdate, migrationPhaseKey, requestCutoverUpdate, requestRollbackUpdate, statusQuery, type DatabaseProgress } from './messages';
import { cutoverBlocker, cutoverRefusal, voteFailed, type CutoverControl } from './logical';
import { finalizeRefusal, rollbackRefusal } from './rollback-window';
import { renderStatusMarkdown } from './status-markdown';
import { PATCHES } from './patches';
import { advancePhase } from './phase-timing';

export interface MigrationHandlersInput {
  input: MigrationSpecInput;
  migrationId: string;
  status: MigrationStatus;
  control: CutoverControl;
  /** The scope of the phases: an abort cancels it. */
  main: CancellationScope;
  /** The checked spec once pre-flight has returned it. */
  spec: () => MigrationSpec | undefined;
}

/** What the phases use of the handlers. */
export interface MigrationHandlers {
  /** The status as the Web UI's current details. */
  publish: () => void;
  /** Ends the current phase's timing, starts the next, sets MigrationPhase, publishes, tells the parent. */
  enterPhase: (phase: Phase) => void;
  /** Tells a cluster parent when this database becomes ready (or stops being ready) for a cutover. */
  reportCutoverReadiness: () => void;
  /** Cancels the phases for `reason` (an abort, or one deferred until a cutover failed). */
  abortNow: (reason: string) => void;
  /** Waits until the parent has the last report: it learns how this run ended from it. */
  deliverLastReport: () => Promise<void>;
}

/** Registers every handler (before the first await: a message that came with the start is served). */
export function registerMigrationHandlers({ input, migrationId, status, control, main, spec }: MigrationHandlersInput): MigrationHandlers {
  const publish = () => setCurrentDetails(renderStatusMarkdown(status));
  const enterPhase = (phase: Phase) => {
    advancePhase(status, phase, new Date().toISOString());
    if (input.searchAttributes !== false) upsertSearchAttributes([{ key: migrationPhaseKey, value: phase }]);
    publish();
    const error = ['failed', 'aborted'].includes(phase) ? status.errors.at(-1) : undefined;
    reportedBlocker = undefined; // the parent forgets readiness on every phase change
    tellParent({ workflowId: migrationId, phase, method: status.method, error });
  };
  // A migrateCluster parent keeps a per-database table; it may be gone (a lost signal costs nothing).
  // By workflow id: the parent's newest run gets it, also after it continued as new.
  let lastReport: Promise<void> = Promise.resolve();
  const tellParent = (progress: DatabaseProgress) => {
    const parent = workflowInfo().parent;
    if (parent) lastReport = getExternalWorkflowHandle(parent.workflowId).signal(databaseProgressSignal, progress).catch(() => undefined);
  };
  /** The parent learns how this run ended from that last report (a parent that continued as new has no result to wait for): it must be delivered before the run closes. */
  const deliverLastReport = async () => {
    if (patched(PATCHES.readinessChangesOnly)) await lastReport;
  };
  let reportedBlocker: string | undefined;
  const reportCutoverReadiness = () => {
    const blocker = cutoverBlocker(spec(), status, control);
    // Only a change of readiness reaches the parent, not a lag figure that moves every interval.
    const reported = patched(PATCHES.readinessChangesOnly) ? (blocker?.summary ?? '') : (blocker?.text ?? '');
    if (reported === reportedBlocker) return;
    reportedBlocker = reported;
    tellParent({ workflowId: migrationId, phase: status.phase, method: status.method, cutoverBlocker: reported });
  };
  setHandler(statusQuery, () => status);

  const abortNow = (reason: string) => {
    if (status.abortReason !== undefined) return;
    status.abortReason = reason;
    status.errors.push(`abort requested: ${reason}`);
    main.cancel();
  };
  setHandler(abortSignal, (request) => {
    const reason = request?.reason ?? 'aborted by operator';
    if (control.switchedAt) {
      const window = status.rollback?.state === 'open' ? `; \`pgmove finalize ${migrationId}\` ends the rollback window, \`pgmove rollback ${migrationId}\` switches back` : '';
      (status.warnings ??= []).push(`abort ignored: the migration has cut over (${reason})${window}`);
    } else if (control.running) {
      // A running cutover is never cut in half: the abort applies if it fails.
      control.pendingAbort = reason;
      (status.warnings ??= []).push(`abort requested during the cutover: applied if the cutover fails (${reason})`);
    } else {
      abortNow(reason);
    }
    publish();
  });
  setHandler(cutoverSignal, (request) => {
    const refusal = cutoverRefusal(spec(), status, control);
    if (refusal) {
      (status.warnings ??= []).push(`cutover signal ignored: ${refusal}`);
      if (request?.coordinated) voteFailed(migrationId, request.coordinated, refusal);
    } else {
      control.request = request ?? {};
    }
    publish();
  });
  setRefusableUpdate(requestCutoverUpdate, 'cutover rejected', () => cutoverRefusal(spec(), status, control), (request) => {
    control.request = { ...request }; // the temporal CLI may send no input at all
    return `cutover accepted (lag ${status.replication?.lagBytes ?? 0} bytes); follow it with pgmove status ${migrationId}`;
  });
  setRefusableUpdate(requestRollbackUpdate, 'rollback rejected', () => rollbackRefusal(spec(), status, control), (request) => {
    control.rollbackRequest = { ...request };
    return `rollback accepted (the source is ${status.rollback?.reverse?.lagBytes ?? 0} bytes behind); follow it with pgmove status ${migrationId}`;
  });
  setRefusableUpdate(finalizeUpdate, 'finalize rejected', () => finalizeRefusal(status, control), (request) => {
    control.finalizeRequest = { ...request };
    return `finalize accepted: the reverse stream is dropped and the migration completes on the target; follow it with pgmove status ${migrationId}`;
  });
  return { publish, enterPhase, reportCutoverReadiness, abortNow, deliverLastReport };
}

/** An update answered at once: its validator rejects it with the reason `refusal` gives, else `accept` takes the request and says what follows. */
function setRefusableUpdate<R>(update: UpdateDefinition<CutoverAnswer, [R]>, rejected: string, refusal: () => string | undefined, accept: (request: R) => string): void {
  setHandler(update, (request) => ({ accepted: true, reason: accept(request) }), {
    validator: (_request: R) => {
      const reason = refusal();
      if (reason) throw new Error(`${rejected}: ${reason}`);
    },
  });
}
