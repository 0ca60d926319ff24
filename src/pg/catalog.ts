/**
 * Catalog queries shared by the phases: which tables and sequences the migration covers, with the
 * facts the copy needs (size, columns, split key). Filters follow the spec's include/exclude lists.
 */
import type { Client } from 'pg';
import { qualified, type TableName } from './sql';

export interface ObjectFilter {
  include: { schemas: string[]; tables: string[] };
  exclude: { schemas: string[]; tables: string[] };
}

export interface ColumnInfo {
  name: string;
  /** Binary COPY is safe for this column between two servers (built-in type, no embedded user OIDs). */
  binarySafe: boolean;
}

export interface TableInfo extends TableName {
  bytes: number;
  estimatedRows: number;
  unlogged: boolean;
  hasPrimaryKey: boolean;
  /** UPDATE and DELETE can be replicated: a primary key (default identity), a replica identity index, or FULL. */
  hasReplicaIdentity: boolean;
  /** Columns COPY carries (generated columns are recomputed by the target). */
  columns: ColumnInfo[];
  /** A single-column integer primary key usable for range splitting, if any. */
  splitKey?: string;
}

export interface SequenceInfo extends TableName {
  lastValue: string;
  isCalled: boolean;
}

const SYSTEM_SCHEMA_FILTER = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'`;

/**
 * SQL predicate over n.nspname / c.relname implementing the filter, with parameters starting at $1.
 * Empty include lists mean "everything not excluded".
 */
function filterPredicate(filter: ObjectFilter): { sql: string; params: string[][] } {
  const split = (list: string[]) => list.map((t) => t.split('.', 2) as [string, string]);
  const includeTables = split(filter.include.tables);
  const excludeTables = split(filter.exclude.tables);
  const params = [
    filter.include.schemas,
    includeTables.map(([s]) => s),
    includeTables.map(([, t]) => t),
    filter.exclude.schemas,
    excludeTables.map(([s]) => s),
    excludeTables.map(([, t]) => t),
  ];
  const sql = `${SYSTEM_SCHEMA_FILTER}
    AND (cardinality($1::text[]) + cardinality($2::text[]) = 0
         OR n.nspname = ANY($1::text[])
         OR EXISTS (${matchesSelfOrAncestor('$2', '$3')}))
    AND NOT n.nspname = ANY($4::text[])
    AND NOT EXISTS (${matchesSelfOrAncestor('$5', '$6')})
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`;
  return { sql, params };
}

/**
 * The relation or a partition ancestor of it is in the (schemas, names) list: a parent names its leaves.
 * pg_partition_ancestors returns nothing for a table that is not a partition, so the relation itself
 * is added: without it, a plain table named in include.tables matched nothing.
 */
function matchesSelfOrAncestor(schemas: string, names: string): string {
  return `SELECT 1 FROM (SELECT c.oid AS relid UNION SELECT relid FROM pg_partition_ancestors(c.oid)) pa JOIN pg_class ac ON ac.oid = pa.relid JOIN pg_namespace an ON an.oid = ac.relnamespace
           WHERE (an.nspname, ac.relname) IN (SELECT * FROM unnest(${schemas}::text[], ${names}::text[]))`;
}

/**
 * Leaf partitions of the partitioned tables named in include/exclude: pg_dump before 16 does not follow
 * a parent to its partitions, so they are named to it one by one.
 */
export async function partitionsOfNamedTables(client: Client, tables: string[]): Promise<string[]> {
  if (tables.length === 0) return [];
  const split = tables.map((t) => [t.slice(0, t.indexOf('.')), t.slice(t.indexOf('.') + 1)] as [string, string]);
  const result = await client.query<{ schema: string; name: string }>(
    `SELECT n.nspname AS schema, c.relname AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relispartition AND EXISTS (${matchesSelfOrAncestor('$1', '$2')})
        AND (n.nspname, c.relname) NOT IN (SELECT * FROM unnest($1::text[], $2::text[]))
      ORDER BY 1, 2`,
    [split.map(([s]) => s), split.map(([, t]) => t)],
  );
  return result.rows.map((r) => `${r.schema}.${r.name}`);
}

/** Tables holding rows (ordinary tables and leaf partitions), largest first. */
/**
 * `sizes: false` leaves `bytes` at 0 and orders by name: pg_table_size stats every file of every table
 * (0.6 s at 10,000 tables), which the cutover, inside the write freeze, does not need.
 */
export async function listTables(client: Client, filter: ObjectFilter, options: { sizes?: boolean } = {}): Promise<TableInfo[]> {
  const { sql, params } = filterPredicate(filter);
  const size = options.sizes === false ? '0' : 'pg_table_size(c.oid)';
  const result = await client.query<{
    schema: string;
    name: string;
    bytes: string;
    estimated_rows: string;
    unlogged: boolean;
    has_pk: boolean;
    has_identity: boolean;
    columns: { name: string; binary_safe: boolean }[] | null;
    split_key: string | null;
  }>(
    `SELECT n.nspname AS schema, c.relname AS name,
            ${size} AS bytes,
            greatest(c.reltuples, 0)::bigint AS estimated_rows,
            c.relpersistence = 'u' AS unlogged,
            EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p') AS has_pk,
            CASE c.relreplident
              WHEN 'f' THEN true
              WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
              WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p')
              ELSE false END AS has_identity,
            (SELECT json_agg(json_build_object(
                      'name', a.attname,
                      'binary_safe', ${binarySafeTypeSql('a.atttypid')})
                    ORDER BY a.attnum)
               FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS columns,
            (SELECT a.attname FROM pg_constraint k
               JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
              WHERE k.conrelid = c.oid AND k.contype = 'p' AND cardinality(k.conkey) = 1
                AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)) AS split_key
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND ${sql}
      ORDER BY ${options.sizes === false ? '' : 'pg_table_size(c.oid) DESC, '}n.nspname, c.relname`,
    params,
  );
  return result.rows.map((row) => ({
    schema: row.schema,
    name: row.name,
    bytes: Number(row.bytes),
    estimatedRows: Number(row.estimated_rows),
    unlogged: row.unlogged,
    hasPrimaryKey: row.has_pk,
    hasReplicaIdentity: row.has_identity,
    columns: (row.columns ?? []).map((c) => ({ name: c.name, binarySafe: c.binary_safe })),
    splitKey: row.split_key ?? undefined,
  }));
}

/**
 * A type is binary-COPY safe between servers when it is built in (OID below FirstNormalObjectId), or
 * an enum (sent as its label), or a domain over such a type. Arrays and composites of user types embed
 * type OIDs that differ between servers, so they go as text.
 */
function binarySafeTypeSql(typeOid: string): string {
  return `(SELECT CASE
             WHEN t.typtype = 'e' THEN true
             WHEN t.typtype = 'd' THEN t.typbasetype < 16384
             ELSE t.oid < 16384 END
           FROM pg_type t WHERE t.oid = ${typeOid})`;
}

/** Every sequence in scope with its current value (owned, identity and standalone). */
export async function listSequences(client: Client, filter: ObjectFilter): Promise<SequenceInfo[]> {
  const { sql, params } = filterPredicate(filter);
  const result = await client.query<{ schema: string; name: string }>(
    `SELECT n.nspname AS schema, c.relname AS name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'S' AND ${sql}
      ORDER BY 1, 2`,
    params,
  );
  const sequences: SequenceInfo[] = [];
  for (const row of result.rows) {
    // pg_sequences.last_value hides is_called; reading the sequence relation gives both.
    const value = await client.query<{ last_value: string; is_called: boolean }>(
      `SELECT last_value::text AS last_value, is_called FROM ${qualified(row)}`,
    );
    const first = value.rows[0];
    if (first) sequences.push({ ...row, lastValue: first.last_value, isCalled: first.is_called });
  }
  return sequences;
}

export async function countLargeObjects(client: Client): Promise<number> {
  const result = await client.query<{ n: string }>('SELECT count(*) AS n FROM pg_largeobject_metadata');
  return Number(result.rows[0]?.n ?? 0);
}

export async function serverMajor(client: Client): Promise<number> {
  const result = await client.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`);
  return Math.floor(Number(result.rows[0]?.v) / 10000);
}

/** The comment of the connected database (pgmove keeps its records there: the freeze, the target marker). */
export async function databaseComment(client: Client): Promise<string | null> {
  const row = (
    await client.query<{ comment: string | null }>(`SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = current_database()`)
  ).rows[0];
  return row?.comment ?? null;
}
