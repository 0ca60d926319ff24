/**
 * A table's indexes, built as soon as its copy ends (offline), while other tables are still copying —
 * as pgcopydb does — instead of all of them after the last table. Only what post-data would create
 * with exactly the same statement: plain indexes (pg_get_indexdef) and primary key, unique and
 * exclusion constraints (pg_get_constraintdef) of ordinary tables, without a tablespace, CLUSTER ON,
 * replica identity or per-column statistics target (pg_dump puts those in the same TOC entry). The
 * post-data phase then skips exactly the entries whose object this built (`builtEarly`). Each build
 * commits on its own: a retry builds what is missing, never twice.
 */
import type { Client } from 'pg';
import type { TocEntry } from './dump';
import { ident, literal, type TableName } from './sql';
import { SMALL_TABLE_BYTES } from './table-copy';

const PG_CLASS = 1259;
const PG_CONSTRAINT = 2606;

export interface EarlyIndex {
  schema: string;
  table: string;
  /** The index's name (for a constraint also the constraint's). */
  name: string;
  /** pg_constraint for a constraint, else pg_class: the catalog of its post-data TOC entry. */
  catalogOid: number;
  objectOid: number;
  constraint: boolean;
  ddl: string;
}

/**
 * The source's indexes that may be built early. `search_path` is empty while the definitions are
 * printed, so every name in them is qualified (as pg_dump prints them).
 */
const EARLY_INDEXES_SQL = (filter: string) => `
  SELECT n.nspname AS schema, t.relname AS "table", ic.relname AS name, k.oid IS NOT NULL AS "constraint",
         CASE WHEN k.oid IS NULL THEN ${PG_CLASS} ELSE ${PG_CONSTRAINT} END AS "catalogOid",
         coalesce(k.oid, i.indexrelid)::int8 AS "objectOid",
         CASE WHEN k.oid IS NULL THEN pg_catalog.pg_get_indexdef(i.indexrelid)
              ELSE pg_catalog.format('ALTER TABLE ONLY %I.%I ADD CONSTRAINT %I %s', n.nspname, t.relname, k.conname, pg_catalog.pg_get_constraintdef(k.oid)) END AS ddl
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
    LEFT JOIN pg_catalog.pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x')
   WHERE t.relkind = 'r' AND NOT t.relispartition AND NOT ic.relispartition
     AND i.indisvalid AND i.indislive AND NOT i.indisclustered AND NOT i.indisreplident AND ic.reltablespace = 0
     AND (k.oid IS NOT NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid))
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = i.indexrelid AND a.attstattarget >= 0)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = t.oid AND d.deptype = 'e')
     AND ${filter}
   ORDER BY n.nspname, t.relname, k.oid IS NULL, ic.relname`;

/** node-pg returns int8 as text. */
const withNumericOids = (row: EarlyIndex): EarlyIndex => ({ ...row, objectOid: Number(row.objectOid), catalogOid: Number(row.catalogOid) });

/** Runs fn in a transaction with an empty search_path, so catalog functions print qualified names. */
export async function withEmptySearchPath<T>(client: Client, fn: () => Promise<T>): Promise<T> {
  await client.query(`BEGIN; SET LOCAL search_path = ''`);
  try {
    const result = await fn();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** The early-buildable indexes of these tables on the source (constraints first per table: a later index may need none, but FKs need them). */
export async function earlyIndexesOf(source: Client, tables: TableName[]): Promise<EarlyIndex[]> {
  if (tables.length === 0) return [];
  return withEmptySearchPath(source, async () =>
    (await source.query<EarlyIndex>(EARLY_INDEXES_SQL(`(n.nspname, t.relname) IN (SELECT s, r FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) AS u(s, r))`), [tables.map((t) => t.schema), tables.map((t) => t.name)])).rows.map(withNumericOids),
  );
}

/** Of these indexes, the ones the target already has (by name: an index, and for a constraint the constraint too). */
export async function existingOnTarget(target: Client, indexes: EarlyIndex[]): Promise<Set<EarlyIndex>> {
  if (indexes.length === 0) return new Set();
  const rows = (
    await target.query<{ i: number }>(
      `SELECT u.i FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::bool[])) WITH ORDINALITY AS u(s, r, x, k, i)
         JOIN pg_catalog.pg_namespace n ON n.nspname = u.s
         JOIN pg_catalog.pg_class t ON t.relnamespace = n.oid AND t.relname = u.r
         JOIN pg_catalog.pg_class ic ON ic.relnamespace = n.oid AND ic.relname = u.x AND ic.relkind IN ('i', 'I')
        WHERE NOT u.k OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conrelid = t.oid AND c.conname = u.x)`,
      [indexes.map((i) => i.schema), indexes.map((i) => i.table), indexes.map((i) => i.name), indexes.map((i) => i.constraint)],
    )
  ).rows;
  return new Set(rows.map((r) => indexes[Number(r.i) - 1]!));
}

/**
 * The statements that build an index unless it exists, for a transaction with pg_restore's session
 * settings (empty search_path, default tablespace). The table's advisory lock comes first: a killed
 * attempt's session may still be building (and will commit) the same index, so the check waits for it
 * instead of failing on a duplicate name.
 */
export function buildIndexSql(index: EarlyIndex): string {
  const lockKey = literal(`pgmove:indexes:${index.schema}.${index.table}`);
  const indexName = literal(`${ident(index.schema)}.${ident(index.name)}`);
  const body = `BEGIN IF pg_catalog.to_regclass(${indexName}) IS NULL THEN EXECUTE ${literal(index.ddl)}; END IF; END`;
  let tag = '$pgmove$';
  for (let n = 1; body.includes(tag); n++) tag = `$pgmove${n}$`;
  return `SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(${lockKey}, 0)); DO ${tag}${body}${tag};`;
}

const inTransaction = (statements: string[]) => `BEGIN; SET LOCAL search_path = ''; SET LOCAL default_tablespace = ''; ${statements.join(' ')} COMMIT`;

/** Small tables whose index builds share one transaction (and round trip). */
const SMALL_TABLES_PER_TRANSACTION = 25;

/**
 * Builds the tables' early indexes that the target lacks: one transaction per index of a large table
 * (a crash keeps every finished build), one per group of small tables (10,000 tables, 20,000 indexes:
 * hundreds of round trips, not 20,000). Returns how many it built.
 */
export async function buildEarlyIndexes(source: Client, target: Client, tables: (TableName & { bytes: number })[], onIndex?: (index: EarlyIndex) => void): Promise<number> {
  const indexes = await earlyIndexesOf(source, tables);
  const present = await existingOnTarget(target, indexes);
  const key = (schema: string, table: string) => JSON.stringify([schema, table]);
  const small = new Set(tables.filter((t) => t.bytes < SMALL_TABLE_BYTES).map((t) => key(t.schema, t.name)));
  const missing = indexes.filter((index) => !present.has(index));
  let group: EarlyIndex[] = [];
  const flush = async () => {
    if (group.length === 0) return;
    onIndex?.(group[0]!);
    await target.query(inTransaction(group.map(buildIndexSql)));
    group = [];
  };
  for (const index of missing) {
    if (!small.has(key(index.schema, index.table))) {
      await flush();
      onIndex?.(index);
      await target.query(inTransaction([buildIndexSql(index)]));
      continue;
    }
    const last = group.at(-1);
    const sameTable = last !== undefined && key(last.schema, last.table) === key(index.schema, index.table);
    if (!sameTable && new Set(group.map((i) => key(i.schema, i.table))).size >= SMALL_TABLES_PER_TRANSACTION) await flush();
    group.push(index);
  }
  await flush();
  return missing.length;
}

/** The dump ids of post-data entries whose object an early build already created on the target. */
export async function builtEarly(entries: TocEntry[], source: Client, target: Client): Promise<Set<number>> {
  const candidates = entries.filter((e) => (e.type === 'INDEX' && e.catalogOid === PG_CLASS) || (e.type === 'CONSTRAINT' && e.catalogOid === PG_CONSTRAINT));
  if (candidates.length === 0) return new Set();
  const oids = candidates.map((e) => e.objectOid);
  const eligible = await withEmptySearchPath(source, async () =>
    (await source.query<EarlyIndex>(EARLY_INDEXES_SQL(`coalesce(k.oid, i.indexrelid) = ANY ($1::oid[])`), [oids])).rows.map(withNumericOids),
  );
  const present = await existingOnTarget(target, eligible);
  const done = new Set([...present].map((i) => `${i.catalogOid}:${i.objectOid}`));
  return new Set(candidates.filter((e) => done.has(`${e.catalogOid}:${e.objectOid}`)).map((e) => e.dumpId));
}
