/**
 * Table comparisons taken while the offline copy runs (activities/copy-plan.ts), kept on the target in
 * the scratch schema next to the copy plan until validation has read them: a table is compared as soon
 * as it is copied and indexed, while the other lanes copy, and validation then compares only what was
 * not found equal then. A unit copied again overwrites its tables' rows. The plan's removal after the
 * copy leaves this table; validation removes it, with the schema once nothing else is in it. Rows are
 * keyed by the quoted, qualified name: display names can collide ("a"."b.c" and "a.b"."c").
 */
import type { Client } from 'pg';
import type { TableCheck } from './table-checksums';
import { SCRATCH_SCHEMA, dropScratchSchemaIfEmpty } from './copy-plan-store';

const CHECKS = `${SCRATCH_SCHEMA}.table_checks`;

/** Records (or replaces) comparisons of this migration's tables. */
export async function storeTableChecks(target: Client, migrationId: string, checks: TableCheck[]): Promise<void> {
  if (checks.length === 0) return;
  await target.query('BEGIN');
  try {
    // Lanes store at the same time: two concurrent CREATE TABLE IF NOT EXISTS can both try to create it.
    await target.query(`SELECT pg_advisory_xact_lock(hashtextextended('${CHECKS}', 0))`);
    await target.query(
      `CREATE TABLE IF NOT EXISTS ${CHECKS} (
         migration_id text, relation text, table_name text NOT NULL, source_rows bigint NOT NULL, target_rows bigint NOT NULL,
         source_checksum text, target_checksum text, ok boolean NOT NULL, PRIMARY KEY (migration_id, relation))`,
    );
    await target.query(
      `INSERT INTO ${CHECKS} (migration_id, relation, table_name, source_rows, target_rows, source_checksum, target_checksum, ok)
       SELECT $1, c.relation, c.table, c."sourceRows", c."targetRows", c."sourceChecksum", c."targetChecksum", c.ok
         FROM jsonb_to_recordset($2::jsonb)
           AS c(relation text, "table" text, "sourceRows" bigint, "targetRows" bigint, "sourceChecksum" text, "targetChecksum" text, ok boolean)
       ON CONFLICT (migration_id, relation) DO UPDATE SET table_name = excluded.table_name, source_rows = excluded.source_rows,
         target_rows = excluded.target_rows, source_checksum = excluded.source_checksum, target_checksum = excluded.target_checksum, ok = excluded.ok`,
      [migrationId, JSON.stringify(checks)],
    );
    await target.query('COMMIT');
  } catch (error) {
    await target.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

async function checksTableExists(target: Client): Promise<boolean> {
  return (await target.query(`SELECT to_regclass('${CHECKS}') IS NOT NULL AS ok`)).rows[0]?.ok === true;
}

/** The comparisons that found the table equal (the others are compared again), by quoted qualified name. */
export async function loadEqualTableChecks(target: Client, migrationId: string): Promise<Map<string, TableCheck>> {
  if (!(await checksTableExists(target))) return new Map();
  const rows = (
    await target.query<{ relation: string; table: string; sourceRows: string; targetRows: string; sourceChecksum: string | null; targetChecksum: string | null }>(
      `SELECT relation, table_name AS table, source_rows AS "sourceRows", target_rows AS "targetRows",
              source_checksum AS "sourceChecksum", target_checksum AS "targetChecksum"
         FROM ${CHECKS} WHERE migration_id = $1 AND ok`,
      [migrationId],
    )
  ).rows;
  return new Map(rows.map((r) => [r.relation, { ...r, sourceRows: Number(r.sourceRows), targetRows: Number(r.targetRows), ok: true }]));
}

/** Removes this migration's comparisons, and the scratch schema once neither a plan nor a comparison is left in it. */
export async function dropTableChecks(target: Client, migrationId: string): Promise<void> {
  if (!(await checksTableExists(target))) return;
  await target.query('BEGIN');
  try {
    await target.query(`DELETE FROM ${CHECKS} WHERE migration_id = $1`, [migrationId]);
    await dropScratchSchemaIfEmpty(target);
    await target.query('COMMIT');
  } catch (error) {
    await target.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
