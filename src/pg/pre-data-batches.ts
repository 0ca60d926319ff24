/**
 * Pre-data in batches: one transaction per batch instead of one for the whole schema. Every object a
 * transaction creates holds a lock until it commits, and a server's lock table holds only
 * max_locks_per_transaction × (max_connections + max_prepared_transactions) of them: one transaction
 * for 10,000 tables runs a default server out of shared memory. Each batch contains a relation (its
 * witness): the batch committed iff that relation exists on the target, so a retry restores exactly the
 * batches that did not commit (they commit in order, so these are a suffix).
 */
import type { Client } from 'pg';
import type { TocEntry } from './dump';

const PG_CLASS = 1259;
/** Locks one pre-data object may take (the relation, its TOAST table and index, its row type, …). */
const LOCKS_PER_OBJECT = 8;

export interface PreDataBatch {
  entries: TocEntry[];
  /** Source OID of a relation the batch creates; undefined only when the schema has no relation at all. */
  witnessOid?: number;
}

/** How many TOC entries one transaction may restore on this target: an eighth of its lock table, within 50…5,000. */
export async function preDataBatchSize(target: Client): Promise<number> {
  const row = (
    await target.query<{ capacity: string }>(
      `SELECT current_setting('max_locks_per_transaction')::bigint
              * (current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint) AS capacity`,
    )
  ).rows[0];
  return Math.max(50, Math.min(5000, Math.floor(Number(row?.capacity ?? 6400) / LOCKS_PER_OBJECT)));
}

const isRelation = (entry: TocEntry) => entry.catalogOid === PG_CLASS && entry.objectOid !== 0 && /^(TABLE|VIEW|MATERIALIZED VIEW|SEQUENCE|FOREIGN TABLE) /.test(entry.line.replace(/^\d+; \d+ \d+ /, ''));

/** Cuts the TOC (in restore order) into batches of at most `size` entries, each holding a relation when the schema has one. */
export function preDataBatches(entries: TocEntry[], size: number): PreDataBatch[] {
  const batches: PreDataBatch[] = [];
  for (let start = 0; start < entries.length; start += size) {
    const slice = entries.slice(start, start + size);
    batches.push({ entries: slice, witnessOid: slice.find(isRelation)?.objectOid });
  }
  // A batch without a relation joins its predecessor (or the first batch its successor).
  const merged: PreDataBatch[] = [];
  for (const batch of batches) {
    const last = merged.at(-1);
    if (last && (batch.witnessOid === undefined || last.witnessOid === undefined)) {
      last.entries.push(...batch.entries);
      last.witnessOid ??= batch.witnessOid;
    } else {
      merged.push(batch);
    }
  }
  return merged;
}

/** Schema-qualified names of the witnesses on the source (by OID), in `SELECT to_regclass` form. */
export async function witnessNames(source: Client, oids: number[]): Promise<Map<number, string>> {
  const rows = (
    await source.query<{ oid: string; name: string }>(
      `SELECT c.oid::text AS oid, format('%I.%I', n.nspname, c.relname) AS name
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1::oid[])`,
      [oids],
    )
  ).rows;
  return new Map(rows.map((r) => [Number(r.oid), r.name]));
}

/** The witnesses (qualified names) that exist on the target. */
export async function existingRelations(target: Client, names: string[]): Promise<Set<string>> {
  const rows = (await target.query<{ name: string }>(`SELECT name FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NOT NULL`, [names])).rows;
  return new Set(rows.map((r) => r.name));
}
