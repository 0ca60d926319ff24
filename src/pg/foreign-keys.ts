/**
 * Foreign keys added by pgmove's own sessions, `jobs` at a time, instead of by pg_restore. Measured on
 * 10,000 small tables with one foreign key each (PostgreSQL 18 target): `pg_restore --jobs 2` took
 * 7.2 s for them, one session 4.8 s, two sessions 1.9 s — pg_restore's leader hands out one item at
 * a time, which for tiny items costs more than the items. The statement is the one pg_dump writes
 * (`ALTER TABLE ONLY … ADD CONSTRAINT … <pg_get_constraintdef>`), for foreign keys of ordinary tables
 * only; the rest stay with pg_restore. Keys of small tables commit in groups, others one by one: a
 * retry adds what is missing.
 */
import type { Client } from 'pg';
import type { TocEntry } from './dump';
import { withEmptySearchPath } from './table-indexes';
import { SMALL_TABLE_BYTES } from './table-copy';

const PG_CONSTRAINT = 2606;
/** SQLSTATE deadlock_detected: two sessions adding keys between the same two tables in opposite directions. */
const DEADLOCK = '40P01';
const DEADLOCK_RETRIES = 5;
/** SQLSTATEs that say nothing about the keys: a cancel or shutdown (57), a connection failure (08). */
const NOT_A_KEYS_FAULT = /^(57|08)/;
/** Keys of small tables share a transaction (and a round trip) with up to this many others. */
const KEYS_PER_TRANSACTION = 50;

export interface ForeignKey {
  schema: string;
  table: string;
  name: string;
  objectOid: number;
  /** The table, qualified and quoted. */
  qualifiedTable: string;
  /** The referenced table, qualified and quoted. */
  referencedTable: string;
  /** The referenced key's index, qualified and quoted: the key can be added once the target has it. */
  referencedIndex: string;
  /** Both tables below SMALL_TABLE_BYTES on the source: the key may share a transaction (a larger one commits alone, so a crash keeps every finished check). */
  small: boolean;
  ddl: string;
}

/** The source's definitions of these TOC entries' foreign keys, where pgmove may add them itself. */
export async function foreignKeysOf(source: Client, entries: TocEntry[]): Promise<Map<number, ForeignKey>> {
  const oids = entries.filter((e) => e.type === 'FK CONSTRAINT' && e.catalogOid === PG_CONSTRAINT).map((e) => e.objectOid);
  if (oids.length === 0) return new Map();
  // Printed with an empty search_path, so every name in the definitions is qualified (as pg_dump prints them).
  const rows = await withEmptySearchPath(source, async () =>
    (
      await source.query<ForeignKey>(
        `SELECT n.nspname AS schema, t.relname AS "table", k.conname AS name, k.oid::int8 AS "objectOid",
                pg_catalog.format('%I.%I', n.nspname, t.relname) AS "qualifiedTable",
                pg_catalog.format('%I.%I', fn.nspname, f.relname) AS "referencedTable",
                pg_catalog.format('%I.%I', rn.nspname, ri.relname) AS "referencedIndex",
                pg_catalog.pg_table_size(t.oid) < ${SMALL_TABLE_BYTES} AND pg_catalog.pg_table_size(f.oid) < ${SMALL_TABLE_BYTES} AS small,
                pg_catalog.format('ALTER TABLE ONLY %I.%I ADD CONSTRAINT %I %s', n.nspname, t.relname, k.conname, pg_catalog.pg_get_constraintdef(k.oid)) AS ddl
           FROM pg_catalog.pg_constraint k
           JOIN pg_catalog.pg_class t ON t.oid = k.conrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
           JOIN pg_catalog.pg_class f ON f.oid = k.confrelid
           JOIN pg_catalog.pg_namespace fn ON fn.oid = f.relnamespace
           JOIN pg_catalog.pg_class ri ON ri.oid = k.conindid
           JOIN pg_catalog.pg_namespace rn ON rn.oid = ri.relnamespace
          WHERE k.contype = 'f' AND k.conparentid = 0 AND t.relkind = 'r' AND NOT t.relispartition AND k.oid = ANY ($1::oid[])`,
        [oids],
      )
    ).rows,
  );
  return new Map(rows.map((row) => [Number(row.objectOid), { ...row, objectOid: Number(row.objectOid) }]));
}

/** Of these keys, the ones whose referenced key's index the target has (the others must wait for pg_restore's index builds). */
export async function readyOnTarget(target: Client, keys: ForeignKey[]): Promise<Set<ForeignKey>> {
  if (keys.length === 0) return new Set();
  const rows = (
    await target.query<{ i: string }>(
      `SELECT u.i FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS u(name, i) WHERE pg_catalog.to_regclass(u.name) IS NOT NULL`,
      [keys.map((k) => k.referencedIndex)],
    )
  ).rows;
  return new Set(rows.map((r) => keys[Number(r.i) - 1]!));
}

/**
 * The post-data entries split in three, in the order they are applied: what pg_restore restores first
 * (everything but these keys, their comments and security labels, and event triggers, which may refuse
 * DDL), the keys pgmove adds, and what pg_restore restores after them.
 */
export function splitAroundForeignKeys(entries: TocEntry[], keys: Map<number, ForeignKey>): { before: TocEntry[]; keys: TocEntry[]; after: TocEntry[] } {
  const before: TocEntry[] = [];
  const ours: TocEntry[] = [];
  const after: TocEntry[] = [];
  let followsKey = false;
  let eventTriggers = false;
  for (const entry of entries) {
    // A comment or security label follows its object in the TOC (pg_dump writes it right after).
    const attached = entry.type === 'COMMENT' || entry.type === 'SECURITY LABEL';
    eventTriggers ||= entry.type === 'EVENT TRIGGER';
    if (entry.type === 'FK CONSTRAINT' && keys.has(entry.objectOid)) {
      ours.push(entry);
      followsKey = true;
    } else if (eventTriggers || (attached && followsKey)) {
      after.push(entry);
    } else {
      before.push(entry);
      followsKey = false;
    }
  }
  return { before, keys: ours, after };
}

/**
 * One transaction for these keys. It first locks every table they name, in one global order (by name),
 * in the mode ADD FOREIGN KEY takes: two lanes then wait for each other instead of deadlocking.
 */
export function foreignKeysSql(keys: ForeignKey[]): string {
  const tables = [...new Set(keys.flatMap((k) => [k.qualifiedTable, k.referencedTable]))].sort();
  return `BEGIN; LOCK TABLE ${tables.map((t) => `ONLY ${t}`).join(', ')} IN SHARE ROW EXCLUSIVE MODE; ${keys.map((k) => `${k.ddl};`).join(' ')} COMMIT`;
}

/** Keys of small tables in consecutive groups of KEYS_PER_TRANSACTION. */
function transactionsOf(keys: ForeignKey[]): ForeignKey[][] {
  const groups: ForeignKey[][] = [];
  for (let start = 0; start < keys.length; start += KEYS_PER_TRANSACTION) groups.push(keys.slice(start, start + KEYS_PER_TRANSACTION));
  return groups;
}

/**
 * Adds the keys over the given sessions. A deadlock (a partitioned table's partitions are locked by the
 * statement itself) is retried; any other failure names the key and the server's reason, found by
 * trying the failed transaction's keys one at a time.
 */
export async function addForeignKeys(sessions: Client[], keys: ForeignKey[], options: { signal?: AbortSignal; onAdded?: (count: number) => void } = {}): Promise<void> {
  let failed = false;
  const run = async (session: Client, group: ForeignKey[]) => {
    for (let attempt = 1; ; attempt++) {
      try {
        await session.query(foreignKeysSql(group));
        options.onAdded?.(group.length);
        return;
      } catch (error) {
        await session.query('ROLLBACK').catch(() => undefined);
        const code = (error as { code?: string }).code;
        if (code === DEADLOCK && attempt < DEADLOCK_RETRIES) continue;
        // One key at a time names the failing key; not after a cancel or a lost connection (no key failed).
        if (group.length > 1 && code !== undefined && !NOT_A_KEYS_FAULT.test(code)) {
          for (const key of group) await run(session, [key]);
          return;
        }
        failed = true;
        const key = group[0]!;
        const reason = error instanceof Error ? error.message : String(error);
        // The server's SQLSTATE, detail and hint come along: a violated key (23503) is not retried (worker/classify-errors.ts).
        const { detail, hint } = error as { detail?: string; hint?: string };
        throw Object.assign(new Error(`adding the foreign key ${key.name} of ${key.schema}.${key.table} on the target failed: ${reason}`, { cause: error }), { code, detail, hint });
      }
    }
  };
  // Keys between small tables: a contiguous share per session (by table, so lanes rarely need the same
  // tables; a shared queue would make neighbouring groups wait for each other). Larger keys, whose
  // checks take long, are then taken from a shared queue as sessions free up.
  const small = keys.filter((k) => k.small);
  const large = keys.filter((k) => !k.small);
  const share = Math.ceil(small.length / Math.max(1, sessions.length));
  const lane = async (session: Client, index: number) => {
    await session.query(`SET search_path = ''; SET row_security = off; SET statement_timeout = 0; SET lock_timeout = 0`);
    const groups = transactionsOf(small.slice(index * share, (index + 1) * share));
    for (let group = groups.shift() ?? large.splice(0, 1); group.length > 0 && !failed; group = groups.shift() ?? large.splice(0, 1)) {
      options.signal?.throwIfAborted();
      await run(session, group);
    }
  };
  const lanes = await Promise.allSettled(sessions.map(lane));
  const failure = lanes.find((l): l is PromiseRejectedResult => l.status === 'rejected');
  if (failure) throw failure.reason;
}
