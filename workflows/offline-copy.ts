/**
 * The offline copy of a plan stored on the target (activities/copy-plan.ts): the workflow knows the
 * number of units, schedules them by index `jobs` at a time, and keeps totals, the largest tables and
 * the slowest units — never a per-table record of every table. Past `copy.historyEventsPerRun` it stops
 * scheduling, lets the running units finish, and reports where the next run continues (the units done
 * are then exactly those below that index). Deterministic code only.
 */
import { workflowInfo } from '@temporalio/workflow';
import type { CopyPlanSummary, MigrationStatus, PlannedUnitResult, StoredSlotCopyResult } from '../src/model';

/** Where a continued run resumes the copy. */
export interface CopyResume {
  plan: CopyPlanSummary;
  nextUnit: number;
}

const SLOWEST_UNITS = 10;

export function initPlannedProgress(status: MigrationStatus, plan: CopyPlanSummary): void {
  status.tables = {};
  for (const [name, table] of Object.entries(plan.largestTables)) {
    status.tables[name] = { rows: 0, bytes: 0, totalBytes: table.bytes, unitsDone: 0, units: table.units, done: table.units === 0 };
  }
  status.totals = { tables: plan.tables, tablesDone: plan.emptyTables, rows: 0, bytes: 0, totalBytes: plan.totalBytes };
  status.copyUnits = { units: plan.units, done: 0, runs: 1, slowest: [] };
}

export function recordPlannedUnit(status: MigrationStatus, result: PlannedUnitResult): void {
  status.totals.rows += result.rows;
  status.totals.bytes += result.bytes;
  status.totals.tablesDone += result.tablesDone;
  const tracked = result.table && status.tables[result.table.table];
  if (tracked && result.table) {
    tracked.rows += result.table.rows;
    tracked.bytes += result.table.bytes;
    tracked.unitsDone += 1;
    tracked.done ||= tracked.unitsDone >= tracked.units;
  }
  const copy = status.copyUnits;
  if (!copy) return;
  copy.done += 1;
  if (result.indexesBuilt) copy.indexesBuilt = (copy.indexesBuilt ?? 0) + result.indexesBuilt;
  copy.slowest.push({ unit: result.unitId, seconds: result.seconds, tables: result.tables, rows: result.rows });
  copy.slowest = copy.slowest.sort((a, b) => b.seconds - a.seconds).slice(0, SLOWEST_UNITS);
}

/** The logical method's copy of the stored plan, all units at once (workflows/logical.ts). */
export function recordStoredPlanCopy(status: MigrationStatus, result: StoredSlotCopyResult): void {
  status.totals.rows += result.rows;
  status.totals.bytes += result.bytes;
  status.totals.tablesDone = result.tables;
  for (const [name, copied] of Object.entries(result.largestTables)) {
    const tracked = status.tables[name];
    if (!tracked) continue;
    tracked.rows += copied.rows;
    tracked.bytes += copied.bytes;
    tracked.unitsDone += copied.unitsDone;
  }
  for (const table of Object.values(status.tables)) table.done = true;
  if (status.copyUnits) Object.assign(status.copyUnits, { done: result.units, slowest: result.slowest });
}

/**
 * Copies units `from`… with at most `jobs` in flight. Returns the index the next run continues from
 * (the number of units when every unit is done). After a failure no unit starts, the running ones are
 * awaited, and the failure is thrown.
 */
export async function copyPlannedUnits(plan: CopyPlanSummary, from: number, jobs: number, eventsPerRun: number, copy: (index: number) => Promise<void>): Promise<number> {
  let next = from;
  let stop = false;
  const historyFull = () => {
    const info = workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= eventsPerRun;
  };
  const lane = async () => {
    while (!stop && next < plan.units) {
      if (historyFull()) {
        stop = true;
        return;
      }
      const index = next++;
      try {
        await copy(index);
      } catch (error) {
        stop = true;
        throw error;
      }
    }
  };
  const lanes = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(jobs, plan.units - from)) }, lane));
  const failed = lanes.find((l): l is PromiseRejectedResult => l.status === 'rejected');
  if (failed) throw failed.reason;
  return next;
}
