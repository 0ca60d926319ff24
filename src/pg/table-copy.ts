/**
 * Streams one table (or one key range of it) from source to target with COPY, through the worker,
 * with no intermediate file and bounded memory (stream backpressure). The target side first clears
 * what an earlier attempt may have written (TRUNCATE for a whole table, DELETE for a range) in the
 * same transaction as the COPY, so a retry never duplicates rows.
 */
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Client } from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
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
    const clear = range ? `DELETE FROM ONLY ${qualified(table)} WHERE ${rangePredicate(range)}` : `TRUNCATE ONLY ${qualified(table)}`;
    await target.query(`BEGIN; SELECT pg_advisory_xact_lock(hashtextextended(${lockKey}, 0)); ${clear}`);
    // FREEZE writes the rows already frozen (no later anti-wraparound rewrite); it needs the table to be
    // truncated in this transaction, i.e. whole-table copies only.
    const inbound = target.query(copyFrom(copyInSql(table, format, !range)));
    const outbound = source.query(copyTo(copyOutSql(table, range, format)));
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        counters.bytes += chunk.length;
        callback(null, chunk);
      },
    });
    await pipeline(outbound, counter, new PassThrough({ highWaterMark: 1 << 20 }), inbound, { signal });
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
