/**
 * Phase 6 with the plan kept on the target: `storeCopyPlan` plans once and stores the units in
 * `pgmove_scratch` (a retry finds them), returning counts only; offline, `copyPlannedUnit` copies unit N,
 * read from there, and returns totals; the logical method's `copyStoredPlanAtSlot` copies them all at a
 * slot's snapshot (copy generations, activities/sync.ts) and returns totals; `dropCopyPlan` removes the
 * scratch schema when the copy has ended. The workflow's payloads and history stay small whatever the
 * number of tables (README, "Many tables").
 */
import { CancelledFailure, Context } from '@temporalio/activity';
import type { MigrationSpec } from '../src/spec';
import type { CopyGeneration, CopyPlanSummary, CopyTable, CopyUnitResult, PlannedUnitResult, StoredSlotCopyResult } from '../src/model';
import { connectionInfo, withClient, type ConnectionInfo } from '../src/pg/connect';
import { buildEarlyIndexes } from '../src/pg/table-indexes';
import { startHeartbeat } from '../src/heartbeat';
import { dropPlan, loadPlan, loadPlanSummary, loadUnit, markUnitDone, storePlan, summarizePlan } from '../src/pg/copy-plan-store';
import { StallWatch, stallTimeoutMs } from '../src/stall';
import { checkTables } from '../src/pg/table-checksums';
import { storeTableChecks } from '../src/pg/table-checks-store';
import { normalizeSession } from './validate';
import { planCopy, runUnit } from './copy';
import { copyAtSlot } from './sync';
import { activityLogger } from '../src/log';

export interface PlanRefInput {
  spec: MigrationSpec;
  migrationId: string;
}

export async function storeCopyPlan(input: PlanRefInput & { skipUnlogged?: boolean }): Promise<CopyPlanSummary> {
  const target = await connectionInfo(input.spec.target, 'target');
  // Stored once: a retry (or a continued run) copies exactly the units the first plan cut.
  const stored = await withClient(target, 'target', (client) => loadPlanSummary(client, input.migrationId));
  if (stored) return stored;
  const plan = await planCopy(input.spec, { skipUnlogged: input.skipUnlogged });
  const summary = summarizePlan(plan);
  await withClient(target, 'target', (client) => storePlan(client, input.migrationId, plan, summary));
  return summary;
}

export async function copyPlannedUnit(input: PlanRefInput & { index: number }): Promise<PlannedUnitResult> {
  const previous = Context.current().info.heartbeatDetails as { completedTables?: { table: string; rows: number; bytes: number }[] } | undefined;
  const sourceInfo = await connectionInfo(input.spec.source, 'source');
  const targetInfo = await connectionInfo(input.spec.target, 'target');
  const started = Date.now();
  const unit = await withClient(targetInfo, 'target', (client) => loadUnit(client, input.migrationId, input.index));
  const loaded = Date.now();
  const result = await runUnit(unit, sourceInfo, targetInfo, undefined, previous?.completedTables ?? [], undefined, undefined, stallTimeoutMs(input.spec));
  const copied = Date.now();
  const tablesDone = await withClient(targetInfo, 'target', (client) => markUnitDone(client, input.migrationId, input.index, unit));
  const marked = Date.now();
  // The tables this unit completed get their indexes now, while the other lanes copy (post-data skips them).
  // Tables above copy.indexesDuringCopyUpToMB are left to post-data, where pg_restore --jobs builds them.
  const upTo = (input.spec.copy.indexesDuringCopyUpToMB ?? Number.POSITIVE_INFINITY) * 1024 * 1024;
  const early = input.spec.copy.indexesDuringCopy ? unit.tables.filter((t) => t.bytes <= upTo) : [];
  const indexesBuilt = tablesDone > 0 && early.length > 0 ? await buildIndexesOf(early, sourceInfo, targetInfo, result.tables) : 0;
  // Tables are compared once complete (a split table with its last range), while the other lanes copy.
  const compare = compareDuringCopy(input.spec, sourceInfo, targetInfo) && (!unit.range || tablesDone > 0);
  const indexed = Date.now();
  const tablesCompared = compare ? await compareCopiedTables(input.spec, input.migrationId, unit.tables, sourceInfo, targetInfo, result.tables) : 0;
  // Where a unit's time goes (with thousands of small tables, the steps around the copy add up).
  const seconds = (from: number, to: number) => (to - from) / 1000;
  activityLogger('copy').debug({ unit: unit.id, load: seconds(started, loaded), copy: seconds(loaded, copied), markDone: seconds(copied, marked), indexes: seconds(marked, indexed), compare: seconds(indexed, Date.now()) }, 'unit steps');
  return {
    unitId: result.unitId,
    index: input.index,
    seconds: result.seconds,
    tables: result.tables.length,
    tablesDone,
    rows: result.tables.reduce((n, t) => n + t.rows, 0),
    bytes: result.tables.reduce((n, t) => n + t.bytes, 0),
    table: unit.tables.length === 1 ? result.tables[0] : undefined,
    indexesBuilt,
    tablesCompared,
  };
}

/** Builds the early indexes of copied tables, heartbeating the table at work and the unit's copy checkpoint. */
async function buildIndexesOf(tables: CopyTable[], sourceInfo: ConnectionInfo, targetInfo: ConnectionInfo, completedTables: CopyUnitResult['tables']): Promise<number> {
  let building = '';
  const heartbeat = startHeartbeat(() => ({ step: 'building indexes', index: building, completedTables }));
  try {
    return await withClient(sourceInfo, 'source', (source) =>
      withClient(targetInfo, 'target', (target) => buildEarlyIndexes(source, target, tables, (index) => (building = `${index.schema}.${index.name}`))),
    );
  } finally {
    heartbeat.stop();
  }
}

/** `validate.duringCopy`; auto: when source and target are different hosts (else they share the cores the copy uses). */
export function compareDuringCopy(spec: MigrationSpec, sourceInfo: ConnectionInfo, targetInfo: ConnectionInfo): boolean {
  const setting = spec.validate.duringCopy ?? 'auto';
  return setting === 'auto' ? sourceInfo.host !== targetInfo.host : setting;
}

/**
 * Compares a unit's tables on both servers as validation does (counts, checksums) and records the
 * result on the target, where validation finds it. The source is frozen and nothing else writes these
 * tables on the target (post-data adds constraints, not rows), so the comparison holds until validation.
 */
async function compareCopiedTables(
  spec: MigrationSpec,
  migrationId: string,
  tables: CopyTable[],
  sourceInfo: ConnectionInfo,
  targetInfo: ConnectionInfo,
  completedTables: CopyUnitResult['tables'],
): Promise<number> {
  let compared = 0;
  const watch = new StallWatch({
    activity: 'comparison of copied tables', stallMs: stallTimeoutMs(spec), endpoints: { source: sourceInfo, target: targetInfo },
    progress: () => compared, onStall: () => undefined,
  });
  const heartbeat = startHeartbeat(() => ({ step: 'comparing copied tables', completedTables, ...watch.details() }));
  // An abort must not wait for a large table's checksums with the source frozen: its statements are cancelled.
  const cancel = () => void watch.cancelTracked();
  heartbeat.signal.addEventListener('abort', cancel, { once: true });
  try {
    return await withClient(sourceInfo, 'source', (source) =>
      withClient(targetInfo, 'target', async (target) => {
        const untrack = [watch.track('source', source), watch.track('target', target)];
        try {
          for (const client of [source, target]) {
            await normalizeSession(client);
            await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
          }
          const checks = await checkTables(source, target, tables, spec.validate.checksums);
          compared = checks.length;
          await Promise.all([source.query('COMMIT'), target.query('COMMIT')]);
          await storeTableChecks(target, migrationId, checks);
          return checks.length;
        } finally {
          untrack.forEach((stop) => stop());
        }
      }),
    );
  } catch (error) {
    if (heartbeat.signal.aborted) throw new CancelledFailure('comparison of copied tables cancelled');
    throw watch.failure ?? error;
  } finally {
    heartbeat.signal.removeEventListener('abort', cancel);
    watch.stop();
    heartbeat.stop();
  }
}

export async function dropCopyPlan(input: PlanRefInput): Promise<void> {
  const target = await connectionInfo(input.spec.target, 'target');
  await withClient(target, 'target', (client) => dropPlan(client, input.migrationId));
}

/** Unit ids a generation keeps in the status (the count is kept whole). */
const GENERATION_UNIT_IDS = 200;
const SLOWEST_UNITS = 10;

/** The logical method's copy (copyAtSlot) of the plan stored on the target; the result carries totals only. */
export async function copyStoredPlanAtSlot(input: PlanRefInput): Promise<StoredSlotCopyResult> {
  const target = await connectionInfo(input.spec.target, 'target');
  const plan = await withClient(target, 'target', (client) => loadPlan(client, input.migrationId));
  const copied = await copyAtSlot({ ...input, plan });
  return summarizeSlotCopy(plan.tables, summarizePlan(plan).largestTables, copied.units, copied.generations);
}

export function summarizeSlotCopy(
  tables: Record<string, unknown>,
  tracked: Record<string, unknown>,
  units: CopyUnitResult[],
  generations: CopyGeneration[] | undefined,
): StoredSlotCopyResult {
  const largestTables: StoredSlotCopyResult['largestTables'] = {};
  let rows = 0;
  let bytes = 0;
  for (const unit of units) {
    for (const table of unit.tables) {
      rows += table.rows;
      bytes += table.bytes;
      if (!(table.table in tracked)) continue;
      const entry = (largestTables[table.table] ??= { rows: 0, bytes: 0, unitsDone: 0 });
      entry.rows += table.rows;
      entry.bytes += table.bytes;
      entry.unitsDone += 1;
    }
  }
  const slowest = [...units]
    .sort((a, b) => b.seconds - a.seconds)
    .slice(0, SLOWEST_UNITS)
    .map((u) => ({ unit: u.unitId, seconds: u.seconds, tables: u.tables.length, rows: u.tables.reduce((n, t) => n + t.rows, 0) }));
  return {
    units: units.length,
    tables: Object.keys(tables).length,
    rows,
    bytes,
    largestTables,
    slowest,
    generations: generations?.map((g) => (g.units.length > GENERATION_UNIT_IDS ? { ...g, units: g.units.slice(0, GENERATION_UNIT_IDS), unitCount: g.units.length } : g)),
  };
}
