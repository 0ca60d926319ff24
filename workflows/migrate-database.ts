/**
 * migrateDatabase: one PostgreSQL database to another server, as a durable workflow.
 * Every run: [provisionTarget] → [elevatePrivileges] → preflight, then by method —
 * offline (./offline): freeze → preData → copy → postData → sequences → validate;
 * logical (./logical): preData → copy at the slot's snapshot → postData → syncing → cutover;
 * dms (./dms): preData → full load → postData → syncing (CDC) → cutover.
 * Cleanup (replication objects, unfreeze, scratch files, target reset when it did not complete) runs on
 * every ending (./cleanup-on-ending); signals, updates and the status query: ./migration-handlers.
 * Deterministic code only: all I/O happens in activities.
 */
import { ApplicationFailure, CancellationScope, ContinueAsNew, continueAsNew, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { Duration } from '@temporalio/common';
import type * as activities from '../activities';
import type { MigrationSpec, MigrationSpecInput } from '../src/spec';
import { OWED, type MigrationStatus } from '../src/model';
import { initTableProgress, recordUnit } from './copy-progress';
import { cutoverActivities, runLogical, syncUntilCutover, type CutoverControl, type LogicalContext } from './logical';
import { provisionIfNeeded } from './aws';
import { cleanUpOnEnding, type EndingContext } from './cleanup-on-ending';
import { elevationActivities } from './elevation';
import { phaseActivities } from './phase-activities';
import { runDms, syncDmsUntilCutover } from './dms';
import type { CopyResume } from './offline-copy';
import { resumeOfflineCopy, runOffline, type OfflineContext } from './offline';
import { registerMigrationHandlers } from './migration-handlers';

export interface MigrationResult {
  migrationId: string;
  outcome: 'completed' | 'dryRun';
  status: MigrationStatus;
}

function preflightActivity(input: MigrationSpecInput) {
  return proxyActivities<typeof activities>({
    startToCloseTimeout: (input.timeouts?.preflight ?? '5m') as Duration,
    heartbeatTimeout: (input.timeouts?.heartbeat ?? '60s') as Duration,
    retry: { maximumAttempts: 3, initialInterval: '2s' },
  }).preflight;
}

/** What a syncing migration carries into its next run (continue-as-new); never a secret. */
export interface SyncingResume {
  spec: MigrationSpec;
  status: MigrationStatus;
  binDir: string;
  /** The tables the migration started with; omitted since the publication's record on the source holds them. */
  knownTables?: string[];
  targetExtensions: string[];
  /** Set when an offline copy continued as new: the copy resumes there (not a syncing run). */
  copy?: CopyResume;
}

export async function migrateDatabase(input: MigrationSpecInput, resume?: SyncingResume): Promise<MigrationResult> {
  const migrationId = workflowInfo().workflowId;
  const status: MigrationStatus = resume?.status ?? {
    migrationId,
    phase: 'starting',
    method: input.method ?? 'auto',
    methodReason: '',
    dryRun: input.dryRun ?? false,
    tables: {},
    totals: { tables: 0, tablesDone: 0, rows: 0, bytes: 0, totalBytes: 0 },
    timings: {},
    errors: [],
    cleanupOwed: [],
  };
  const main = new CancellationScope();
  // A run continued during the rollback window has switched: an abort is ignored from its first moment.
  const control: CutoverControl = { running: false, switchedAt: status.rollback?.switchedAt };
  let spec: MigrationSpec | undefined;
  const { publish, enterPhase, reportCutoverReadiness, abortNow, deliverLastReport } = registerMigrationHandlers({ input, migrationId, status, control, main, spec: () => spec });

  let targetTouched = false;
  let completed = false;
  let targetExtensions: string[] = [];
  const logicalContext = (ready: MigrationSpec, binDir: string): LogicalContext => ({
    spec: ready,
    migrationId,
    binDir,
    status,
    control,
    acts: { ...phaseActivities(ready), ...cutoverActivities(ready) },
    enterPhase,
    publish,
    reportCutoverReadiness,
    recordUnit: (unit) => recordUnit(status, unit),
    initProgress: (plan) => initTableProgress(status, plan),
    abortNow,
    continueSyncing: (knownTables) => continueAsNew<typeof migrateDatabase>(input, { spec: ready, status, binDir, knownTables, targetExtensions }),
  });
  const offlineContext = (ready: MigrationSpec, binDir: string): OfflineContext => ({
    spec: ready,
    migrationId,
    binDir,
    status,
    enterPhase,
    publish,
    continueCopy: (copy) => continueAsNew<typeof migrateDatabase>(input, { spec: ready, status, binDir, knownTables: [], targetExtensions, copy }),
  });
  const ending = (): EndingContext => ({ input, spec, migrationId, status, targetTouched, targetExtensionsBefore: targetExtensions, switchedAt: control.switchedAt, enterPhase, publish });
  try {
    await main.run(async () => {
      if (resume) {
        spec = resume.spec;
        targetTouched = true;
        targetExtensions = resume.targetExtensions;
        if (resume.copy) {
          await resumeOfflineCopy(offlineContext(resume.spec, resume.binDir), resume.copy);
          completed = true;
          return;
        }
        if (status.method === 'dms') await syncDmsUntilCutover(logicalContext(resume.spec, resume.binDir), status.preflight!.dms!, status.provisioned);
        else await syncUntilCutover(logicalContext(resume.spec, resume.binDir), resume.knownTables);
        completed = true;
        return;
      }
      const resolvedInput = await provisionIfNeeded(input, migrationId, status, enterPhase);
      if (input.dryRun && input.target.provision) return;
      if (input.source?.privilegeElevation) {
        enterPhase('elevatePrivileges');
        // Owed before it starts: a crash half-way is undone from what the server records.
        if (input.source.privilegeElevation.allow && !input.dryRun) status.cleanupOwed.push(OWED.elevation);
        status.privilegeElevation = await elevationActivities(input).elevatePrivileges({ spec: input, migrationId });
        if (!status.privilegeElevation.elevated) status.cleanupOwed = status.cleanupOwed.filter((owed) => owed !== OWED.elevation);
        publish();
      }
      enterPhase('preflight');
      const checked = await preflightActivity(input)(resolvedInput, undefined, migrationId);
      spec = checked.spec;
      status.preflight = checked.report;
      status.method = checked.report.method;
      status.methodReason = checked.report.methodReason;
      targetExtensions = checked.report.targetExtensions;
      if (spec.dryRun) return;
      const ready = spec;
      const binDir = checked.report.clientTools.binDir;
      /** Phase 5 of every method: from here on the target holds this run's objects, reset unless the migration completes. */
      const preData = async () => {
        enterPhase('preData');
        targetTouched = true;
        status.cleanupOwed.push(OWED.target);
        // Offline with the source frozen: a lost worker must cost seconds of freeze, not timeouts.heartbeat.
        await phaseActivities(ready, { sourceFrozen: status.method === 'dump' && ready.freezeSource }).schema.preData({ spec: ready, migrationId, binDir });
      };

      if (status.method === 'dms') {
        await preData();
        await runDms(logicalContext(ready, binDir), checked.report.dms!, status.provisioned);
      } else if (status.method === 'logical') {
        await preData();
        await runLogical(logicalContext(ready, binDir));
      } else {
        await runOffline(offlineContext(ready, binDir), preData); // the freeze comes first
      }
      completed = true;
    });
  } catch (error) {
    if (error instanceof ContinueAsNew) throw error;
    // An abort may surface as a cancellation or as the failure of the process it killed.
    const aborted = status.abortReason !== undefined;
    status.errors.push(aborted ? `aborted: ${status.abortReason}` : errorMessage(error));
    const keepTarget = (error instanceof ApplicationFailure && error.type === 'ValidationFailed') || control.switchedAt !== undefined;
    await cleanUpOnEnding(ending(), { keepTarget, completed: false });
    enterPhase(aborted ? 'aborted' : 'failed');
    await deliverLastReport();
    if (aborted) throw ApplicationFailure.nonRetryable(`migration aborted: ${status.abortReason}`, 'Aborted');
    throw error;
  }
  await cleanUpOnEnding(ending(), { keepTarget: completed, completed });
  const dryRun = spec?.dryRun ?? input.dryRun === true;
  enterPhase(dryRun ? 'dryRunCompleted' : 'completed');
  await deliverLastReport();
  return { migrationId, outcome: dryRun ? 'dryRun' : 'completed', status };
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    return cause instanceof Error ? `${error.message}: ${cause.message}` : error.message;
  }
  return String(error);
}
