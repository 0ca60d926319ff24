/**
 * Copy progress of one database migration: units run with bounded parallelism, and the per-table and
 * total counters of the status. Deterministic code only (part of the workflow bundle).
 */
import type { CopyPlan, CopyUnitResult, MigrationStatus } from '../src/model';

/**
 * Runs copy units with at most `jobs` in flight; finished units are never scheduled again. After the
 * first failure no new unit starts and the ones in flight are awaited (they end on their own or through
 * an abort), so cleanup never races a running COPY.
 */
export async function runUnits(plan: CopyPlan, jobs: number, copy: (unit: CopyPlan['units'][number]) => Promise<void>): Promise<void> {
  const queue = [...plan.units];
  const lane = async () => {
    for (let unit = queue.shift(); unit; unit = queue.shift()) {
      try {
        await copy(unit);
      } catch (error) {
        queue.length = 0;
        throw error;
      }
    }
  };
  const lanes = await Promise.allSettled(Array.from({ length: Math.max(1, Math.min(jobs, plan.units.length)) }, lane));
  const failed = lanes.find((l): l is PromiseRejectedResult => l.status === 'rejected');
  if (failed) throw failed.reason;
}

export function initTableProgress(status: MigrationStatus, plan: CopyPlan): void {
  for (const [name, table] of Object.entries(plan.tables)) {
    status.tables[name] = { rows: 0, bytes: 0, totalBytes: table.bytes, unitsDone: 0, units: table.units, done: table.units === 0 };
  }
  status.totals = {
    tables: Object.keys(plan.tables).length,
    tablesDone: Object.values(status.tables).filter((t) => t.done).length,
    rows: 0,
    bytes: 0,
    totalBytes: Object.values(plan.tables).reduce((sum, t) => sum + t.bytes, 0),
  };
}

export function recordUnit(status: MigrationStatus, result: CopyUnitResult): void {
  for (const copied of result.tables) {
    const table = status.tables[copied.table];
    if (!table) continue;
    table.rows += copied.rows;
    table.bytes += copied.bytes;
    table.unitsDone += 1;
    if (table.unitsDone >= table.units && !table.done) {
      table.done = true;
      status.totals.tablesDone += 1;
    }
    status.totals.rows += copied.rows;
    status.totals.bytes += copied.bytes;
  }
}
