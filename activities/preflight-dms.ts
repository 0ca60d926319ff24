/**
 * Pre-flight for method `dms`, before anything is created: the source must allow logical decoding
 * (DMS CDC reads a slot), and DMS's known silent-loss traps are measured on the source:
 * - tables without a primary key: DMS CDC skips their UPDATEs and DELETEs → refused, or excluded
 *   from the task (dms.tablesWithoutPrimaryKey: exclude; they must then be moved another way);
 * - LOB columns (text, bytea, json/jsonb, xml, arrays, unbounded varchar) with values larger than the
 *   task's LOB limit: limited LOB mode truncates them with only a log line → refused, naming the
 *   size to set (dms.lobMaxSizeKB) or lobMode: full;
 * - NOT NULL LOB columns: full LOB mode inserts NULL first and fills the LOB afterwards, which a NOT
 *   NULL constraint rejects → refused in full mode (use limited mode sized for the measured maximum).
 */
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { TableInfo } from '../src/pg/catalog';
import { ident, qualified } from '../src/pg/sql';
import type { LogicalBlocker } from './preflight-logical';
import type { DmsPlan } from '../src/aws/model';

export type { DmsPlan };

export interface DmsReadiness {
  blockers: LogicalBlocker[];
  plan: DmsPlan;
}

/** Column types DMS treats as LOBs when reading PostgreSQL. */
const LOB_COLUMNS_SQL = `
  SELECT a.attname AS column, a.attnotnull AS not_null, t.typname AS type,
         (t.typname = 'bytea') AS binary
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
   WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
     AND (t.typname IN ('text', 'bytea', 'json', 'jsonb', 'xml') OR t.typcategory = 'A' OR (t.typname = 'varchar' AND a.atttypmod < 0))
   ORDER BY a.attnum`;

interface LobColumn {
  column: string;
  not_null: boolean;
  type: string;
  binary: boolean;
}

export async function dmsReadiness(spec: MigrationSpec, source: Client, tables: TableInfo[]): Promise<DmsReadiness> {
  const dms = spec.dms!;
  const blockers: LogicalBlocker[] = [];
  const walLevel = (await source.query<{ wal_level: string; rds: string | null }>(`SELECT current_setting('wal_level') AS wal_level, current_setting('rds.logical_replication', true) AS rds`)).rows[0]!;
  if (walLevel.wal_level !== 'logical') {
    blockers.push({
      detail: `wal_level is ${walLevel.wal_level}: DMS change data capture reads a logical replication slot`,
      fix: walLevel.rds !== null ? "set rds.logical_replication = 1 in the source's DB parameter group and reboot it" : 'ALTER SYSTEM SET wal_level = logical; then restart the source server',
    });
  }

  const noPk = tables.filter((t) => !t.hasPrimaryKey).map((t) => `${t.schema}.${t.name}`);
  const excludedTables = dms.tablesWithoutPrimaryKey === 'exclude' ? noPk : [];
  if (noPk.length && dms.tablesWithoutPrimaryKey === 'refuse') {
    blockers.push({
      detail: `${noPk.length} table(s) without a primary key, whose UPDATEs and DELETEs DMS CDC would skip silently: ${noPk.slice(0, 10).join(', ')}`,
      fix: 'add primary keys, or set dms.tablesWithoutPrimaryKey: exclude (they are left out of the task: move them with method logical or dump)',
    });
  }

  const limitBytes = dms.lobMaxSizeKB * 1024;
  let maxLobBytes = 0;
  let maxLobColumn: string | undefined;
  let lobColumns = 0;
  const oversized: string[] = [];
  const notNull: string[] = [];
  for (const table of tables) {
    const name = `${table.schema}.${table.name}`;
    if (excludedTables.includes(name)) continue;
    const columns = (await source.query<LobColumn>(LOB_COLUMNS_SQL, [qualified(table)])).rows;
    if (columns.length === 0) continue;
    lobColumns += columns.length;
    notNull.push(...columns.filter((c) => c.not_null).map((c) => `${name}.${c.column}`));
    // One scan per table measures every LOB column's largest value (as DMS will read it: bytes).
    const sizes = columns.map((c, i) => `max(octet_length(${ident(c.column)}${c.binary ? '' : '::text'})) AS c${i}`);
    const row = (await source.query<Record<string, string | null>>(`SELECT ${sizes.join(', ')} FROM ${qualified(table)}`)).rows[0] ?? {};
    columns.forEach((c, i) => {
      const bytes = Number(row[`c${i}`] ?? 0);
      if (bytes > maxLobBytes) {
        maxLobBytes = bytes;
        maxLobColumn = `${name}.${c.column}`;
      }
      if (dms.lobMode === 'limited' && bytes > limitBytes) oversized.push(`${name}.${c.column} (${Math.ceil(bytes / 1024)} KB)`);
    });
  }
  if (oversized.length) {
    blockers.push({
      detail: `LOB values larger than dms.lobMaxSizeKB (${dms.lobMaxSizeKB} KB), which limited LOB mode would truncate with only a log line: ${oversized.slice(0, 10).join(', ')}`,
      fix: `set dms.lobMaxSizeKB: ${Math.ceil(maxLobBytes / 1024) + 1} (or more, for growth), or dms.lobMode: full (slower)`,
    });
  }
  if (dms.lobMode === 'full' && notNull.length) {
    blockers.push({
      detail: `NOT NULL LOB columns, which full LOB mode cannot load (it inserts NULL first, then the LOB): ${notNull.slice(0, 10).join(', ')}`,
      fix: `use dms.lobMode: limited with dms.lobMaxSizeKB ≥ ${Math.ceil(maxLobBytes / 1024) + 1}`,
    });
  }
  return {
    blockers,
    plan: { tables: tables.map((t) => `${t.schema}.${t.name}`).filter((t) => !excludedTables.includes(t)), excludedTables, maxLobBytes, maxLobColumn, lobColumns },
  };
}
