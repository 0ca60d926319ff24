/**
 * Independent source/target comparison for integration tests. Shares no code with pgmove: it reads
 * both catalogs and all table rows with plain `pg` queries and reports every difference it finds.
 * Objects that belong to extensions are left out (the extension itself is what gets migrated).
 */
import { Client, escapeIdentifier } from 'pg';

export interface DbRef {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

export interface Difference {
  kind: string;
  object: string;
  detail: string;
}

/** Same session settings on both sides so that `row::text` renders identically. */
const SESSION_SETTINGS = [
  "SET TimeZone = 'UTC'",
  "SET DateStyle = 'ISO, MDY'",
  'SET extra_float_digits = 1',
  "SET bytea_output = 'hex'",
  "SET IntervalStyle = 'postgres'",
  // Qualifies every type/function name in format_type() and regprocedure output.
  "SET search_path = 'pg_catalog'",
];

const USER_SCHEMA = `n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'`;

function notExtensionMember(catalog: string, oid: string): string {
  return `NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '${catalog}'::regclass
            AND d.objid = ${oid} AND d.deptype = 'e')`;
}

const USER_RELATION = `${USER_SCHEMA} AND ${notExtensionMember('pg_class', 'c.oid')}`;
const REL_NAME = `format('%I.%I', n.nspname, c.relname)`;
const FROM_REL = `FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace`;

/** Catalog checks: each query returns (key, value); keys must match and values must be equal. */
const CATALOG_CHECKS: Record<string, string> = {
  relation: `SELECT ${REL_NAME} AS key, c.relkind::text AS value ${FROM_REL} WHERE ${USER_RELATION}`,
  // PG 17+ copies a partitioned table's identity onto its partitions; PG 15 keeps it on the root only.
  // Report a partition column's identity as the root's so both versions read the same.
  column: `SELECT ${REL_NAME} || '.' || quote_ident(a.attname) AS key,
            format('%s notnull=%s generated=%s identity=%s', format_type(a.atttypid, a.atttypmod),
              a.attnotnull, a.attgenerated, CASE WHEN c.relispartition
                THEN (SELECT r.attidentity FROM pg_attribute r
                       WHERE r.attrelid = pg_partition_root(c.oid) AND r.attname = a.attname)
                ELSE a.attidentity END) AS value
           ${FROM_REL} JOIN pg_attribute a ON a.attrelid = c.oid
           WHERE ${USER_RELATION} AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
             AND a.attnum > 0 AND NOT a.attisdropped`,
  index: `SELECT ${REL_NAME} AS key,
            format('on %s unique=%s primary=%s', i.indrelid::regclass, i.indisunique, i.indisprimary) AS value
          ${FROM_REL} JOIN pg_index i ON i.indexrelid = c.oid WHERE ${USER_RELATION}`,
  // contype 'n' (NOT NULL as a catalogued constraint) exists only from PG 18; attnotnull covers it.
  // One the server derived (for partitions) is named by the server, differently across versions: keyed by origin.
  constraint: `SELECT CASE WHEN k.conparentid = 0 THEN format('%s.%I', k.conrelid::regclass, k.conname)
                          ELSE format('%s derived from %I to %s', k.conrelid::regclass,
                                      (WITH RECURSIVE up(oid, parent) AS (SELECT p.oid, p.conparentid FROM pg_constraint p WHERE p.oid = k.conparentid
                                                                          UNION ALL SELECT p.oid, p.conparentid FROM pg_constraint p JOIN up ON p.oid = up.parent)
                                       SELECT r.conname FROM up JOIN pg_constraint r ON r.oid = up.oid WHERE up.parent = 0), k.confrelid::regclass) END AS key,
                      k.contype::text AS value
               FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE ${USER_RELATION} AND k.contype <> 'n'`,
  trigger: `SELECT format('%s.%I', t.tgrelid::regclass, t.tgname) AS key, t.tgenabled::text AS value
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE ${USER_RELATION} AND NOT t.tgisinternal`,
  'large object': `SELECT oid::text AS key, md5(lo_get(oid)) AS value FROM pg_largeobject_metadata`,
  function: `SELECT p.oid::regprocedure::text AS key, p.prokind::text AS value
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE ${USER_SCHEMA} AND ${notExtensionMember('pg_proc', 'p.oid')}`,
  view: `SELECT ${REL_NAME} AS key, c.relkind::text AS value ${FROM_REL}
         WHERE ${USER_RELATION} AND c.relkind IN ('v', 'm')`,
  'database setting': `SELECT split_part(s, '=', 1) AS key, substr(s, strpos(s, '=') + 1) AS value
         FROM pg_db_role_setting r, unnest(r.setconfig) AS s
         WHERE r.setrole = 0 AND r.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND split_part(s, '=', 1) <> 'pgmove.freeze'`,
  comment: `SELECT ${REL_NAME} AS key, obj_description(c.oid, 'pg_class') AS value ${FROM_REL}
            WHERE ${USER_RELATION} AND obj_description(c.oid, 'pg_class') IS NOT NULL
            UNION ALL
            SELECT ${REL_NAME} || '.' || quote_ident(a.attname), col_description(c.oid, a.attnum)
            ${FROM_REL} JOIN pg_attribute a ON a.attrelid = c.oid
            WHERE ${USER_RELATION} AND a.attnum > 0 AND NOT a.attisdropped
              AND col_description(c.oid, a.attnum) IS NOT NULL`,
};

interface Rel {
  schema: string;
  name: string;
  /** Display name, spelled like the catalog checks' keys. */
  key: string;
}

const qualified = (rel: Rel): string => `${escapeIdentifier(rel.schema)}.${escapeIdentifier(rel.name)}`;

async function connect(ref: DbRef): Promise<Client> {
  const client = new Client({ ...ref, application_name: 'pgmove-test-compare' });
  await client.connect();
  for (const sql of SESSION_SETTINGS) await client.query(sql);
  return client;
}

async function keyValues(client: Client, sql: string): Promise<Map<string, string>> {
  const result = await client.query<{ key: string; value: string | null }>(sql);
  return new Map(result.rows.map((row) => [row.key, row.value ?? '']));
}

function diffMaps(kind: string, source: Map<string, string>, target: Map<string, string>): Difference[] {
  const out: Difference[] = [];
  for (const [key, value] of source) {
    const other = target.get(key);
    if (other === undefined) out.push({ kind, object: key, detail: 'missing in target' });
    else if (other !== value) out.push({ kind, object: key, detail: `source: ${value} / target: ${other}` });
  }
  for (const key of target.keys()) {
    if (!source.has(key)) out.push({ kind, object: key, detail: 'only in target' });
  }
  return out;
}

/** last_value and is_called read from each sequence itself (pg_sequences hides is_called). */
async function sequenceStates(client: Client): Promise<Map<string, string>> {
  const sequences = await client.query<Rel>(
    `SELECT n.nspname AS schema, c.relname AS name, ${REL_NAME} AS key ${FROM_REL} WHERE c.relkind = 'S' AND ${USER_RELATION}`,
  );
  const states = new Map<string, string>();
  for (const seq of sequences.rows) {
    const state = await client.query<{ value: string }>(
      `SELECT format('last_value=%s is_called=%s', last_value, is_called) AS value FROM ${qualified(seq)}`,
    );
    states.set(seq.key, state.rows[0]?.value ?? '');
  }
  return states;
}

async function matviewCounts(client: Client): Promise<Map<string, string>> {
  const matviews = await client.query<Rel>(
    `SELECT n.nspname AS schema, c.relname AS name, ${REL_NAME} AS key ${FROM_REL} WHERE c.relkind = 'm' AND ${USER_RELATION}`,
  );
  const counts = new Map<string, string>();
  for (const mv of matviews.rows) {
    const result = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${qualified(mv)}`);
    counts.set(mv.key, result.rows[0]?.n ?? '');
  }
  return counts;
}

async function tableRows(client: Client, rel: Rel): Promise<string[]> {
  const result = await client.query<{ r: string }>(`SELECT t::text AS r FROM ONLY ${qualified(rel)} t`);
  return result.rows.map((row) => row.r).sort();
}

const clip = (text: string): string => (text.length > 300 ? `${text.slice(0, 300)}…` : text);

/** First row present in one sorted multiset and not the other, or undefined when they are equal. */
function firstRowDifference(source: string[], target: string[]): string | undefined {
  let i = 0;
  let j = 0;
  while (i < source.length || j < target.length) {
    const a = source[i];
    const b = target[j];
    if (a !== undefined && b !== undefined && a === b) {
      i++;
      j++;
    } else if (b === undefined || (a !== undefined && a < b)) {
      return `row missing in target: ${clip(a ?? '')}`;
    } else {
      return `row only in target: ${clip(b)}`;
    }
  }
  return undefined;
}

async function compareRows(source: Client, target: Client): Promise<Difference[]> {
  const listSql = `SELECT n.nspname AS schema, c.relname AS name, ${REL_NAME} AS key ${FROM_REL}
                   WHERE c.relkind = 'r' AND ${USER_RELATION} ORDER BY 1, 2`;
  const targetTables = new Set((await target.query<Rel>(listSql)).rows.map((rel) => rel.key));
  const out: Difference[] = [];
  for (const rel of (await source.query<Rel>(listSql)).rows) {
    if (!targetTables.has(rel.key)) continue; // reported by the relation check
    const [a, b] = [await tableRows(source, rel), await tableRows(target, rel)];
    const difference = firstRowDifference(a, b);
    if (difference !== undefined) {
      out.push({
        kind: 'rows',
        object: rel.key,
        detail: `source ${a.length} rows, target ${b.length} rows; ${difference}`,
      });
    }
  }
  return out;
}

/** Every difference between the two databases; an empty list means the target matches the source. */
export async function compareDatabases(source: DbRef, target: DbRef): Promise<Difference[]> {
  const src = await connect(source);
  try {
    const dst = await connect(target);
    try {
      const out: Difference[] = [];
      for (const [kind, sql] of Object.entries(CATALOG_CHECKS)) {
        out.push(...diffMaps(kind, await keyValues(src, sql), await keyValues(dst, sql)));
      }
      out.push(...diffMaps('sequence', await sequenceStates(src), await sequenceStates(dst)));
      out.push(...diffMaps('matview rows', await matviewCounts(src), await matviewCounts(dst)));
      out.push(...(await compareRows(src, dst)));
      return out;
    } finally {
      await dst.end();
    }
  } finally {
    await src.end();
  }
}
