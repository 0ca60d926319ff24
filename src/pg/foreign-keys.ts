/**
 * Foreign keys added by pgmove's own sessions, `jobs` at a time, instead of by pg_restore. Measured on
 * 10,000 small tables with one foreign key each (PostgreSQL 18 target): `pg_restore --jobs 2` took
 * 7.2 s for them, one session 4.8 s, two sessions 1.9 s — pg_restore's leader hands out one item at
 * a time, which for tiny items costs more than the items. The statement is the one pg_dump writes
 * (`ALTER TABLE ONLY … ADD CONSTRAINT … <pg_get_constraintdef>`), for foreign keys of ordinary tables
 * only; the rest stay with pg_restore. Each key commits on its own: a retry adds what is missing.
 */
import type { Client } from 'pg';
import type { TocEntry } from './dump';
import { withEmptySearchPath } from './table-indexes';

const PG_CONSTRAINT = 2606;
/** SQLSTATE deadlock_detected: two sessions adding keys between the same two tables in opposite directions. */
const DEADLOCK = '40P01';
const DEADLOCK_RETRIES = 5;

export interface ForeignKey {
  schema: string;
  table: string;
  name: string;
  objectOid: number;
  /** The referenced key's index, qualified and quoted: the key can be added once the target has it. */
  referencedIndex: string;
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
                pg_catalog.format('%I.%I', rn.nspname, ri.relname) AS "referencedIndex",
                pg_catalog.format('ALTER TABLE ONLY %I.%I ADD CONSTRAINT %I %s', n.nspname, t.relname, k.conname, pg_catalog.pg_get_constraintdef(k.oid)) AS ddl
           FROM pg_catalog.pg_constraint k
           JOIN pg_catalog.pg_class t ON t.oid = k.conrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
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
 * Adds the keys over the given sessions (one per lane), each in its own transaction. A deadlock between
 * two lanes aborts one statement, which is tried again. A failure names the key and the server's reason.
 */
export async function addForeignKeys(sessions: Client[], keys: ForeignKey[], options: { signal?: AbortSignal; onAdded?: () => void } = {}): Promise<void> {
  const queue = [...keys];
  let failed = false;
  const lane = async (session: Client) => {
    await session.query(`SET search_path = ''; SET row_security = off; SET statement_timeout = 0; SET lock_timeout = 0`);
    for (let key = queue.shift(); key && !failed; key = queue.shift()) {
      options.signal?.throwIfAborted();
      for (let attempt = 1; ; attempt++) {
        try {
          await session.query(key.ddl);
          break;
        } catch (error) {
          if ((error as { code?: string }).code === DEADLOCK && attempt < DEADLOCK_RETRIES) continue;
          failed = true;
          const reason = error instanceof Error ? error.message : String(error);
          throw new Error(`adding the foreign key ${key.name} of ${key.schema}.${key.table} on the target failed: ${reason}`, { cause: error });
        }
      }
      options.onAdded?.();
    }
  };
  const lanes = await Promise.allSettled(sessions.map(lane));
  const failure = lanes.find((l): l is PromiseRejectedResult => l.status === 'rejected');
  if (failure) throw failure.reason;
}
