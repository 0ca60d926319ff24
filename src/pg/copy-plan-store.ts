/**
 * The copy plan kept on the target, in the scratch schema `pgmove_scratch` (created by the copy, dropped
 * when the copy ends — once validated if it holds table comparisons, ./table-checks-store — and with everything else when an unfinished migration resets the target). With
 * 10,000 tables a plan is megabytes: the workflow carries only its summary and unit numbers, and each
 * copy activity reads its unit here. Each unit's row also records that it was copied.
 */
import type { Client } from 'pg';
import type { CopyPlan, CopyPlanSummary, CopyUnit } from '../model';
import { displayName, literal } from './sql';

export const SCRATCH_SCHEMA = 'pgmove_scratch';
/** Tables whose progress the status shows one by one (the largest); the others are counted in the totals. */
const TRACKED_TABLES = 25;

export function summarizePlan(plan: CopyPlan): CopyPlanSummary {
  const tables = Object.entries(plan.tables);
  const largest = [...tables].sort(([, a], [, b]) => b.bytes - a.bytes).slice(0, TRACKED_TABLES);
  return {
    units: plan.units.length,
    tables: tables.length,
    emptyTables: tables.filter(([, t]) => t.units === 0).length,
    totalBytes: tables.reduce((sum, [, t]) => sum + t.bytes, 0),
    largeObjects: plan.largeObjects,
    largestTables: Object.fromEntries(largest),
  };
}

/** The stored summary of this migration's plan, if an earlier attempt stored one (a plan is stored once). */
export async function loadPlanSummary(target: Client, migrationId: string): Promise<CopyPlanSummary | undefined> {
  const exists = (await target.query(`SELECT to_regclass('${SCRATCH_SCHEMA}.copy_plan') IS NOT NULL AS ok`)).rows[0]?.ok === true;
  if (!exists) return undefined;
  const row = (await target.query<{ summary: CopyPlanSummary }>(`SELECT summary FROM ${SCRATCH_SCHEMA}.copy_plan WHERE migration_id = $1`, [migrationId])).rows[0];
  return row?.summary;
}

/** Stores plan and summary in one transaction, with the owner recorded on the schema. */
export async function storePlan(target: Client, migrationId: string, plan: CopyPlan, summary: CopyPlanSummary): Promise<void> {
  await target.query('BEGIN');
  try {
    await target.query(`CREATE SCHEMA IF NOT EXISTS ${SCRATCH_SCHEMA}`);
    await target.query(`COMMENT ON SCHEMA ${SCRATCH_SCHEMA} IS ${literal(`pgmove: copy plan of migration ${migrationId}; dropped when its copy ends (its table comparisons once validated)`)}`);
    await target.query(`CREATE TABLE IF NOT EXISTS ${SCRATCH_SCHEMA}.copy_plan (migration_id text PRIMARY KEY, summary jsonb NOT NULL, tables jsonb)`);
    // A plan table made by an older worker (same scratch schema) lacks the column.
    await target.query(`ALTER TABLE ${SCRATCH_SCHEMA}.copy_plan ADD COLUMN IF NOT EXISTS tables jsonb`);
    await target.query(
      `CREATE TABLE IF NOT EXISTS ${SCRATCH_SCHEMA}.copy_units (
         migration_id text, index integer, unit jsonb NOT NULL, split_table text, done boolean NOT NULL DEFAULT false,
         PRIMARY KEY (migration_id, index))`,
    );
    await target.query(
      `INSERT INTO ${SCRATCH_SCHEMA}.copy_units (migration_id, index, unit, split_table)
       SELECT $1, u.ordinality - 1, u.value, CASE WHEN u.value ? 'range' THEN u.value -> 'tables' -> 0 ->> 'schema' || '.' || (u.value -> 'tables' -> 0 ->> 'name') END
         FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS u`,
      [migrationId, JSON.stringify(plan.units)],
    );
    await target.query(`INSERT INTO ${SCRATCH_SCHEMA}.copy_plan (migration_id, summary, tables) VALUES ($1, $2, $3)`, [migrationId, JSON.stringify(summary), JSON.stringify(plan.tables)]);
    await target.query('COMMIT');
  } catch (error) {
    await target.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** The whole stored plan, for an activity that copies every unit itself (the logical method's copy at a slot). */
export async function loadPlan(target: Client, migrationId: string): Promise<CopyPlan> {
  const plan = (await target.query<{ summary: CopyPlanSummary; tables: CopyPlan['tables'] | null }>(`SELECT summary, tables FROM ${SCRATCH_SCHEMA}.copy_plan WHERE migration_id = $1`, [migrationId])).rows[0];
  if (!plan?.tables) throw new Error(`the copy plan of ${migrationId} is not on the target (${SCRATCH_SCHEMA}.copy_plan was dropped?)`);
  const units = (await target.query<{ unit: CopyUnit }>(`SELECT unit FROM ${SCRATCH_SCHEMA}.copy_units WHERE migration_id = $1 ORDER BY index`, [migrationId])).rows;
  return { units: units.map((u) => u.unit), tables: plan.tables, largeObjects: plan.summary.largeObjects };
}

export async function loadUnit(target: Client, migrationId: string, index: number): Promise<CopyUnit> {
  const row = (await target.query<{ unit: CopyUnit }>(`SELECT unit FROM ${SCRATCH_SCHEMA}.copy_units WHERE migration_id = $1 AND index = $2`, [migrationId, index])).rows[0];
  if (!row) throw new Error(`unit ${index} of the copy plan of ${migrationId} is not on the target (${SCRATCH_SCHEMA}.copy_units was dropped?)`);
  return row.unit;
}

/**
 * Marks a unit copied; returns how many tables it completed: the batch's or the table's, and for one
 * key range of a split table 1 when it was the last range outstanding (the table's rows are locked, so
 * two last ranges never both count it).
 */
export async function markUnitDone(target: Client, migrationId: string, index: number, unit: CopyUnit): Promise<number> {
  if (!unit.range) {
    await target.query(`UPDATE ${SCRATCH_SCHEMA}.copy_units SET done = true WHERE migration_id = $1 AND index = $2`, [migrationId, index]);
    return unit.tables.length;
  }
  await target.query('BEGIN');
  try {
    const ranges = (
      await target.query<{ index: number; done: boolean }>(
        `SELECT index, done FROM ${SCRATCH_SCHEMA}.copy_units WHERE migration_id = $1 AND split_table = $2 ORDER BY index FOR UPDATE`,
        [migrationId, displayName(unit.tables[0]!)],
      )
    ).rows;
    await target.query(`UPDATE ${SCRATCH_SCHEMA}.copy_units SET done = true WHERE migration_id = $1 AND index = $2`, [migrationId, index]);
    await target.query('COMMIT');
    const wasDone = ranges.find((r) => r.index === index)?.done ?? false;
    return !wasDone && ranges.every((r) => r.index === index || r.done) ? 1 : 0;
  } catch (error) {
    await target.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

async function hasRows(target: Client, table: string): Promise<boolean> {
  if (!(await target.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [table])).rows[0]?.ok) return false;
  return ((await target.query(`SELECT 1 FROM ${table} LIMIT 1`)).rowCount ?? 0) > 0;
}

/**
 * Drops the scratch schema once neither a plan nor a table comparison (./table-checks-store, kept until
 * validation has read it) is left in it. Called inside the caller's transaction.
 */
export async function dropScratchSchemaIfEmpty(target: Client): Promise<void> {
  if ((await hasRows(target, `${SCRATCH_SCHEMA}.copy_plan`)) || (await hasRows(target, `${SCRATCH_SCHEMA}.table_checks`))) return;
  await target.query(`DROP SCHEMA IF EXISTS ${SCRATCH_SCHEMA} CASCADE`);
}

/** Removes this migration's plan, and the scratch schema once nothing else is in it. */
export async function dropPlan(target: Client, migrationId: string): Promise<void> {
  await target.query('BEGIN');
  try {
    if ((await target.query(`SELECT to_regclass('${SCRATCH_SCHEMA}.copy_plan') IS NOT NULL AS ok`)).rows[0]?.ok) {
      await target.query(`DELETE FROM ${SCRATCH_SCHEMA}.copy_units WHERE migration_id = $1`, [migrationId]);
      await target.query(`DELETE FROM ${SCRATCH_SCHEMA}.copy_plan WHERE migration_id = $1`, [migrationId]);
    }
    await dropScratchSchemaIfEmpty(target);
    await target.query('COMMIT');
  } catch (error) {
    await target.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
