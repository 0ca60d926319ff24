/**
 * Streams one table (or one key range of it) from source to target with COPY, through the worker
 * (./copy-relay: the source's messages relayed as they are), with no intermediate file and bounded
 * memory (stream backpressure). The target side first clears
 * what an earlier attempt may have written (TRUNCATE for a whole table, DELETE for a range) in the
 * same transaction as the COPY, so a retry never duplicates rows.
 */
import { pipeline } from 'node:stream/promises';
import type { Client } from 'pg';
import { RawCopyOut, rawCopyIn } from './copy-relay';
import type { CopyTable, CopyUnit } from '../model';
import { ident, literal, qualified } from './sql';

export interface CopyCounters {
  rows: number;
  bytes: number;
}

/** SQL for the COPY out of the source (exported for tests). */
export function copyOutSql(table: CopyTable, range: CopyUnit['range'], format: 'binary' | 'text'): string {
  const columns = table.columns.map(ident).join(', ');
  if (!range && table.columns.length > 0) {
    return `COPY ${qualified(table)} (${columns}) TO STDOUT (FORMAT ${format})`;
  }
  if (!range) return `COPY ${qualified(table)} TO STDOUT (FORMAT ${format})`;
  return `COPY (SELECT ${columns} FROM ONLY ${qualified(table)} WHERE ${rangePredicate(range)}) TO STDOUT (FORMAT ${format})`;
}

/** Below this size an empty table is copied into without a TRUNCATE (and so without FREEZE). */
export const SMALL_TABLE_BYTES = 1 << 20;

export function copyInSql(table: CopyTable, format: 'binary' | 'text', freeze: boolean): string {
  const columnList = table.columns.length > 0 ? ` (${table.columns.map(ident).join(', ')})` : '';
  return `COPY ${qualified(table)}${columnList} FROM STDIN (FORMAT ${format}${freeze ? ', FREEZE' : ''})`;
}

export function rangePredicate(range: NonNullable<CopyUnit['range']>): string {
  const key = ident(range.key);
  const parts: string[] = [];
  if (range.lo !== null) parts.push(`${key} >= ${literal(range.lo)}`);
  if (range.hi !== null) parts.push(`${key} < ${literal(range.hi)}`);
  return parts.length ? parts.join(' AND ') : 'true';
}

/**
 * Copies one table or range. `source` must already be in the transaction/snapshot wanted; `target` is
 * a dedicated connection (this function opens and commits its transaction).
 */
export async function copyTable(
  source: Client,
  target: Client,
  table: CopyTable,
  range: CopyUnit['range'],
  counters: CopyCounters,
  signal?: AbortSignal,
): Promise<CopyCounters> {
  const format = table.binary ? 'binary' : 'text';
  const before = { ...counters };
  try {
    // An attempt that outlived its heartbeat timeout may still be writing this table or range: wait for
    // it to end, so the DELETE/TRUNCATE below sees (and removes) whatever it committed. One round trip
    // (simple-query protocol, so the lock key is a literal): with 10,000 small tables they add up.
    const lockKey = literal(`pgmove:${table.schema}.${table.name}:${range?.lo ?? ''}:${range?.hi ?? ''}`);
    const lock = `BEGIN; SELECT pg_advisory_xact_lock(hashtextextended(${lockKey}, 0))`;
    // FREEZE writes the rows already frozen (no later anti-wraparound rewrite); it needs the table to be
    // truncated in this transaction, i.e. whole-table copies only. A small table that is still empty
    // (the usual case: nothing copied it yet) is neither truncated nor frozen: a TRUNCATE makes new
    // files for the table, its TOAST table and index, which costs more than the copy of a few rows —
    // at 10,000 tables, seconds — and the rows of a small table are frozen by a cheap vacuum later.
    let freeze = !range;
    if (range) {
      await target.query(`${lock}; DELETE FROM ONLY ${qualified(table)} WHERE ${rangePredicate(range)}`);
    } else if (table.bytes < SMALL_TABLE_BYTES) {
      const results = (await target.query(`${lock}; SELECT EXISTS (SELECT 1 FROM ONLY ${qualified(table)}) AS "hasRows"`)) as unknown as { rows: { hasRows?: boolean }[] }[];
      if (results.at(-1)?.rows[0]?.hasRows) await target.query(`TRUNCATE ONLY ${qualified(table)}`);
      else freeze = false;
    } else {
      await target.query(`${lock}; TRUNCATE ONLY ${qualified(table)}`);
    }
    const inbound = target.query(rawCopyIn(copyInSql(table, format, freeze)));
    const outbound = source.query(new RawCopyOut(copyOutSql(table, range, format), counters));
    await pipeline(outbound, inbound, { signal });
    counters.rows += inbound.rowCount;
    await target.query('COMMIT');
  } catch (error) {
    // The target connection may be mid-COPY; the caller ends it, which rolls the transaction back.
    counters.rows = before.rows;
    counters.bytes = before.bytes;
    throw error;
  }
  return counters;
}
