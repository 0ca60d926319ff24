/**
 * A table's checksum is the sum of a 64-bit hash of each row (order-independent: equal multisets of
 * rows give equal sums), computed inside the database. The row hash XORs each column's own extended
 * hash function (the default hash opclass's, type-aware, without text conversion), seeded with the
 * column's position so that values swapped between columns change it; a NULL enters as minus the seed.
 * Columns of user-defined types (an enum hashes its OID, which differs between servers) or without a
 * hash function (json, xml, geometric types) enter as the hash of their text. Calling the column
 * hashes directly costs about 40 % less than hash_record_extended over a ROW (which builds and takes
 * apart a record per row); it detects the same changes. If that fails, 64 bits of md5 of the row's text.
 * The expression is decided on the source and sent to the target with the source's figures, so both
 * sides always hash alike.
 *
 * Small tables go in batches: one catalog query, one probe and one checksum statement per side for up
 * to BATCH_TABLES of them, so 10,000 small tables cost a few hundred round trips rather than 40,000.
 */
import type { Client } from 'pg';
import { displayName, ident, qualified, type TableName } from './sql';

/** A table's row count and checksum on one side, with the row-hash expression used (null: counts only). */
export interface SourceTableChecksum {
  table: string;
  /** The quoted, qualified name (display names can collide: "a"."b.c" and "a.b"."c"); absent from older workers. */
  relation?: string;
  rows: number;
  checksum: string | null;
  rowHash: string | null;
}

export const MD5_ROW_HASH = `('x' || substr(md5(r::text), 1, 16))::bit(64)::bigint`;
/** Up to this many small tables share a statement. */
export const BATCH_TABLES = 100;
/** Tables from this size on get a statement of their own (their time is reported on its own). */
export const BATCH_TABLE_BYTES = 1 << 20;

export function tableChecksumSql(table: TableName, rowHash: string | null): string {
  return `SELECT count(*)::bigint AS rows, ${checksumExpression(rowHash)} AS checksum FROM ONLY ${qualified(table)} AS r`;
}

/** sum(bigint) accumulates in 128 bits and returns numeric: the exact sum as a numeric cast first, ~16 % less CPU. */
function checksumExpression(rowHash: string | null): string {
  return rowHash === null ? 'NULL::text' : `coalesce(sum(${rowHash}), 0)::text`;
}

/** Takes the next tables off the queue: one large table, or a run of up to BATCH_TABLES small ones. */
export function nextBatch<T extends TableName & { bytes?: number }>(queue: T[]): T[] {
  const first = queue.shift();
  if (!first) return [];
  const batch = [first];
  if ((first.bytes ?? 0) >= BATCH_TABLE_BYTES) return batch;
  while (batch.length < BATCH_TABLES && queue.length && (queue[0]!.bytes ?? 0) < BATCH_TABLE_BYTES) batch.push(queue.shift()!);
  return batch;
}

export interface HashedColumn {
  name: string;
  /** A built-in type with a hash function (else the column's text is hashed). */
  native: boolean | null;
  /** That function, when it takes the column's type as it is (timestamptz's, date's and bool's are declared for another type). */
  hashFunction: string | null;
  /** The function is an array's or a range's (it ignores the seed for some values: re-seeded). */
  polymorphic?: boolean | null;
  /** Text-like: hashed in the C collation (a nondeterministic or ICU collation would hash a sort key). */
  collatable?: boolean | null;
}

/**
 * One row's hash: the XOR of each column's hash function called with the column and its position as
 * the seed; the columns whose function wants another type share one hash_record_extended over a ROW.
 * A NULL enters as minus the seed: several functions return the seed itself for 0, NaN or `{}`.
 */
export function rowHashOf(columns: HashedColumn[]): string {
  const terms: string[] = [];
  const viaRecord: string[] = [];
  columns.forEach((c, i) => {
    const seed = `${i + 1}::int8`;
    const nullMarker = `${-(i + 1)}::int8`;
    const column = `r.${ident(c.name)}${c.collatable ? ' COLLATE "C"' : ''}`;
    if (c.hashFunction) {
      const hashed = `${c.hashFunction}(${column}, ${seed})`;
      terms.push(`coalesce(${c.polymorphic ? `pg_catalog.hashint8extended(${hashed}, ${seed})` : hashed}, ${nullMarker})`);
    } else if (c.native) viaRecord.push(column);
    else terms.push(`coalesce(pg_catalog.hashtextextended(r.${ident(c.name)}::text COLLATE "C", ${seed}), ${nullMarker})`);
  });
  if (viaRecord.length) terms.push(`pg_catalog.hash_record_extended(ROW(${viaRecord.join(', ')}), 0)`);
  return terms.length ? `(${terms.join(' # ')})` : '0::int8';
}

/**
 * Each table's row-hash expression from the source's catalog, not yet tried (see withRowHashes).
 * The hash function is looked up once per column type, not once per column.
 */
export async function rowHashCandidates(source: Client, tables: TableName[]): Promise<string[]> {
  const columns = (
    await source.query<HashedColumn & { ord: string }>(
      `WITH cols AS (
         SELECT r.ord, a.attnum, a.attname, a.atttypid
           FROM unnest($1::text[]) WITH ORDINALITY AS r(relation, ord)
           JOIN pg_attribute a ON a.attrelid = r.relation::regclass
          WHERE a.attnum > 0 AND NOT a.attisdropped),
       decided AS (
         SELECT t.oid AS atttypid, t.typcollation <> 0 AS collatable, h.polymorphic,
                h.native, CASE WHEN h.proargtype IN (bt.oid, 'anyarray'::regtype, 'anyrange'::regtype)
                                    OR EXISTS (SELECT 1 FROM pg_cast k WHERE k.castsource = bt.oid AND k.casttarget = h.proargtype AND k.castcontext = 'i')
                               THEN h.function END AS "hashFunction"
           FROM (SELECT DISTINCT atttypid FROM cols) c
           JOIN pg_type t ON t.oid = c.atttypid
           JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
           LEFT JOIN LATERAL (
             SELECT true AS native, format('%I.%I', pn.nspname, p.proname) AS function, p.proargtypes[0] AS proargtype,
                    oc.opcintype <> bt.oid AS polymorphic
               FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
               JOIN pg_amproc ap ON ap.amprocfamily = oc.opcfamily AND ap.amprocnum = 2
                AND ap.amproclefttype = oc.opcintype AND ap.amprocrighttype = oc.opcintype
               JOIN pg_proc p ON p.oid = ap.amproc JOIN pg_namespace pn ON pn.oid = p.pronamespace
              WHERE bt.oid < 16384 AND am.amname = 'hash' AND oc.opcdefault
                AND oc.opcintype IN (bt.oid,
                     CASE WHEN bt.typelem <> 0 AND bt.typlen = -1 THEN 'anyarray'::regtype END,
                     CASE WHEN bt.typtype = 'r' THEN 'anyrange'::regtype END)
                -- An array hashes its elements with their own function: json[], xml[], point[] have none.
                AND (oc.opcintype <> 'anyarray'::regtype OR EXISTS (
                      SELECT 1 FROM pg_opclass oe JOIN pg_am ae ON ae.oid = oe.opcmethod
                        JOIN pg_amproc pe ON pe.amprocfamily = oe.opcfamily AND pe.amprocnum = 2 AND pe.amproclefttype = oe.opcintype
                       WHERE ae.amname = 'hash' AND oe.opcdefault AND oe.opcintype = bt.typelem))
              ORDER BY oc.opcintype = bt.oid DESC LIMIT 1) h ON true)
       SELECT c.ord, c.attname AS name, d.collatable, d.polymorphic, d.native, d."hashFunction"
         FROM cols c JOIN decided d USING (atttypid)
        ORDER BY c.ord, c.attnum`,
      [tables.map(qualified)],
    )
  ).rows;
  return tables.map((_, i) => rowHashOf(columns.filter((c) => Number(c.ord) === i + 1)));
}

/** The expressions that run on the source; one that fails is replaced by the md5 of the row's text. */
export async function probeRowHashes(source: Client, tables: TableName[], expressions: string[]): Promise<string[]> {
  // One probe for the batch (simple-query protocol); if any fails, each table is probed on its own.
  const probe = (indexes: number[]) => `SAVEPOINT probe; ${indexes.map((i) => `SELECT ${expressions[i]} FROM ONLY ${qualified(tables[i]!)} AS r LIMIT 1`).join('; ')}; RELEASE SAVEPOINT probe`;
  const undo = 'ROLLBACK TO SAVEPOINT probe; RELEASE SAVEPOINT probe';
  try {
    await source.query(probe(tables.map((_, i) => i)));
    return expressions;
  } catch {
    await source.query(undo);
  }
  const decided: string[] = [];
  for (const i of tables.keys()) {
    try {
      await source.query(probe([i]));
      decided.push(expressions[i]!);
    } catch {
      await source.query(undo);
      decided.push(MD5_ROW_HASH);
    }
  }
  return decided;
}

/** Each table's row count and checksum (null: counts only), in the order asked. */
export type TableSums = { rows: number; checksum: string | null }[];

/**
 * Counts and checksums of the tables in one statement (the target side uses the source's row hashes);
 * `rowHashes[i]` null means count only. Inside a savepoint: a failing statement leaves the session's
 * transaction usable (withRowHashes then tries again with probed expressions).
 */
export async function checksumsWith(client: Client, tables: TableName[], rowHashes: (string | null)[]): Promise<TableSums> {
  const sql = tables
    .map((table, i) => `SELECT ${i} AS i, count(*)::bigint AS rows, ${checksumExpression(rowHashes[i] ?? null)} AS checksum FROM ONLY ${qualified(table)} AS r`)
    .join('\nUNION ALL\n');
  let results: { rows: { i: number; rows: string; checksum: string | null }[] }[];
  try {
    results = (await client.query(`SAVEPOINT sums; ${sql}; RELEASE SAVEPOINT sums`)) as unknown as typeof results;
  } catch (error) {
    await client.query('ROLLBACK TO SAVEPOINT sums; RELEASE SAVEPOINT sums').catch(() => undefined);
    throw error;
  }
  const found = new Map(results[1]!.rows.map((r) => [Number(r.i), r]));
  return tables.map((_, i) => ({ rows: Number(found.get(i)?.rows ?? 0), checksum: found.get(i)?.checksum ?? null }));
}

/** SQLSTATE classes of a row hash that cannot run: an undefined function or cast, a data exception, an unsupported feature. */
const EXPRESSION_FAILURE = /^(42|22|0A)/;

/**
 * Runs `sums` with the tables' row hashes (null each without checksums). The expressions come from the
 * source's catalog and are tried by the checksum statements themselves; only when those fail with an
 * expression's error are they probed one by one on the source (a probe of every batch cost as much as
 * its checksums: 23 ms against 5–10 ms for 100 small tables, measured). `sums` must settle every
 * statement it started before it throws, so that the retry's statements queue after their rollback.
 */
export async function withRowHashes<T>(source: Client, tables: TableName[], withChecksums: boolean, sums: (rowHashes: (string | null)[]) => Promise<T>): Promise<{ rowHashes: (string | null)[]; result: T }> {
  if (!withChecksums || tables.length === 0) {
    const rowHashes = tables.map(() => null);
    return { rowHashes, result: await sums(rowHashes) };
  }
  const candidates = await rowHashCandidates(source, tables);
  try {
    return { rowHashes: candidates, result: await sums(candidates) };
  } catch (error) {
    if (!EXPRESSION_FAILURE.test((error as { code?: string }).code ?? '')) throw error;
    const rowHashes = await probeRowHashes(source, tables, candidates);
    return { rowHashes, result: await sums(rowHashes) };
  }
}

/** Like Promise.all, but every promise has settled when it throws (the first failure). */
export async function allSettledOrThrow<T extends readonly unknown[]>(promises: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
  return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

/** The source side: the row hash decided per table, then counts and checksums (a session already normalized). */
export async function sourceChecksums(source: Client, tables: TableName[], withChecksums: boolean): Promise<SourceTableChecksum[]> {
  const results: SourceTableChecksum[] = [];
  const queue = [...tables];
  for (let batch = nextBatch(queue); batch.length; batch = nextBatch(queue)) {
    const { rowHashes, result: counted } = await withRowHashes(source, batch, withChecksums, (hashes) => checksumsWith(source, batch, hashes));
    batch.forEach((table, i) => results.push({ table: displayName(table), relation: qualified(table), rowHash: rowHashes[i]!, ...counted[i]! }));
  }
  return results;
}

/** One table compared on both servers: counts, and checksums when a row hash was decided. */
export interface TableCheck {
  /** The display name (schema.name, unquoted: for reports). */
  table: string;
  /** The quoted, qualified name: unique, unlike the display name ("a"."b.c" and "a.b"."c"). */
  relation: string;
  sourceRows: number;
  targetRows: number;
  sourceChecksum: string | null;
  targetChecksum: string | null;
  ok: boolean;
}

/**
 * Compares tables on both servers (sessions normalized, in a transaction): the row hashes are decided on
 * the source, then both sides count and sum at the same time — on two servers, in the time of one.
 */
export async function checkTables(source: Client, target: Client, tables: TableName[], withChecksums: boolean): Promise<TableCheck[]> {
  const checks: TableCheck[] = [];
  const queue = [...tables];
  for (let batch = nextBatch(queue); batch.length; batch = nextBatch(queue)) {
    const { result: [sourceSide, targetSide] } = await withRowHashes(source, batch, withChecksums, (hashes) =>
      allSettledOrThrow<[TableSums, TableSums]>([checksumsWith(source, batch, hashes), checksumsWith(target, batch, hashes)]),
    );
    batch.forEach((table, i) => {
      const s = sourceSide[i]!;
      const t = targetSide[i]!;
      checks.push({ table: displayName(table), relation: qualified(table), sourceRows: s.rows, targetRows: t.rows, sourceChecksum: s.checksum, targetChecksum: t.checksum, ok: s.rows === t.rows && s.checksum === t.checksum });
    });
  }
  return checks;
}
