/**
 * SQL for native logical replication: names derived from the migration id, the publication (with the
 * record of what it changed on the source, kept in its comment), the slot and the subscription, and LSN
 * arithmetic. Identifiers are always quoted; the subscription's connection string is built here.
 */
import { createHash } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from 'pg';
import type { ReplicationNames } from '../model';
import { ident, literal, qualified, type TableName } from './sql';
import { keepaliveConninfo, type ConnectionInfo } from './connect';
import { pollUntil } from '../poll';

/** Slot names allow [a-z0-9_] only and 63 bytes: a readable prefix of the id plus a hash of all of it. */
export function replicationNames(migrationId: string): ReplicationNames {
  const readable = migrationId.toLowerCase().replace(/[^a-z0-9_]/g, '_').slice(0, 40);
  const hash = createHash('sha256').update(migrationId).digest('hex').slice(0, 8);
  const base = `pgmove_${readable}_${hash}`;
  return { publication: base, slot: base, subscription: base };
}

/** "16/B374D848" → a number of bytes since 0/0. */
export function lsnToBigInt(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
}

/** What the publication changed on the source, so cleanup restores it exactly (stored as its comment). */
export interface PublicationRecord {
  /** Tables whose replica identity was set to FULL, with the identity before (d = default, n = nothing, i = index). */
  replicaIdentityChanged: (TableName & { before: 'd' | 'n' | 'i' })[];
  /** Set before the cutover's freeze hook runs: the unfreeze hook is owed (cleared once it ran). */
  frozenByHook?: boolean;
  /** When the current cutover attempt started freezing the source: a retry after a lost worker measures the freeze from here. */
  freezeStartedAt?: string;
  /** Set before the switch hook runs: from here on a cutover never goes back (no unfreeze, no resumed stream). */
  switchingAt?: string;
  /** Set once the switch hook has run. */
  switchedAt?: string;
  /**
   * The tables the migration started with (display names, unlogged ones included): any other table found
   * on the source later is new (DDL is not replicated). Kept here rather than in the workflow's payloads,
   * which would carry 10,000 names at every status interval. Absent in records of older workers, which
   * pass the list along instead.
   */
  knownTables?: string[];
}

export async function readPublicationRecord(source: Client, publication: string): Promise<PublicationRecord | undefined> {
  const row = (
    await source.query<{ comment: string | null }>(
      `SELECT obj_description(p.oid, 'pg_publication') AS comment FROM pg_publication p WHERE p.pubname = $1`,
      [publication],
    )
  ).rows[0];
  if (!row) return undefined;
  try {
    return JSON.parse(row.comment ?? '') as PublicationRecord;
  } catch {
    return { replicaIdentityChanged: [] };
  }
}

export async function writePublicationRecord(source: Client, publication: string, record: PublicationRecord): Promise<void> {
  await source.query(`COMMENT ON PUBLICATION ${ident(publication)} IS ${literal(JSON.stringify(record))}`);
}

/**
 * Creates the publication for the tables, in one transaction with the REPLICA IDENTITY FULL changes it
 * needs and their record. Returns the record (the existing one when an earlier attempt committed it).
 */
export async function createPublication(
  source: Client,
  publication: string,
  tables: TableName[],
  needFullIdentity: TableName[],
  knownTables?: string[],
): Promise<PublicationRecord> {
  const existing = await readPublicationRecord(source, publication);
  if (existing) return existing;
  const record: PublicationRecord = { replicaIdentityChanged: [], knownTables };
  await source.query('BEGIN');
  try {
    for (const table of needFullIdentity) {
      const before = (
        await source.query<{ r: 'd' | 'n' | 'i' }>(`SELECT relreplident AS r FROM pg_class WHERE oid = $1::regclass`, [qualified(table)])
      ).rows[0]!.r;
      await source.query(`ALTER TABLE ${qualified(table)} REPLICA IDENTITY FULL`);
      record.replicaIdentityChanged.push({ schema: table.schema, name: table.name, before });
    }
    const list = tables.map(qualified).join(', ');
    await source.query(`CREATE PUBLICATION ${ident(publication)}${list ? ` FOR TABLE ${list}` : ''}`);
    await writePublicationRecord(source, publication, record);
    await source.query('COMMIT');
  } catch (error) {
    await source.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
  return record;
}

/** Restores the replica identities the publication changed and drops it; a no-op when it is gone. */
export async function dropPublication(source: Client, publication: string): Promise<boolean> {
  const record = await readPublicationRecord(source, publication);
  if (!record) return false;
  await source.query('BEGIN');
  try {
    // A unit publication of a copy generation changed nothing (its comment is another record).
    for (const { schema, name: table, before } of record.replicaIdentityChanged ?? []) {
      const name = qualified({ schema, name: table });
      const exists = (await source.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [name])).rows[0] as { ok: boolean };
      if (!exists.ok) continue;
      // An index identity cannot be named back without its index: DEFAULT is the closest safe state.
      await source.query(`ALTER TABLE ${name} REPLICA IDENTITY ${before === 'n' ? 'NOTHING' : 'DEFAULT'}`);
    }
    await source.query(`DROP PUBLICATION IF EXISTS ${ident(publication)}`);
    await source.query('COMMIT');
  } catch (error) {
    await source.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
  return true;
}

export interface SlotState {
  currentLsn: string;
  confirmedFlushLsn: string | null;
  restartLsn: string | null;
  activePid: number | null;
  walStatus: string | null;
  lagBytes: number;
  retainedWalBytes: number;
  lagSeconds: number;
}

/** The slot as the source sees it, or undefined when it does not exist. */
export async function slotState(source: Client, slot: string): Promise<SlotState | undefined> {
  const row = (
    await source.query<{
      current: string;
      confirmed: string | null;
      restart: string | null;
      active_pid: number | null;
      wal_status: string | null;
      lag_bytes: string | null;
      retained: string | null;
      lag_seconds: string | null;
    }>(
      `SELECT pg_current_wal_lsn()::text AS current, s.confirmed_flush_lsn::text AS confirmed, s.restart_lsn::text AS restart,
              s.active_pid, s.wal_status,
              pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint::text AS lag_bytes,
              pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint::text AS retained,
              (SELECT extract(epoch FROM coalesce(r.replay_lag, interval '0'))::text FROM pg_stat_replication r WHERE r.pid = s.active_pid) AS lag_seconds
         FROM pg_replication_slots s WHERE s.slot_name = $1`,
      [slot],
    )
  ).rows[0];
  if (!row) return undefined;
  return {
    currentLsn: row.current,
    confirmedFlushLsn: row.confirmed,
    restartLsn: row.restart,
    activePid: row.active_pid,
    walStatus: row.wal_status,
    lagBytes: Math.max(0, Number(row.lag_bytes ?? 0)),
    retainedWalBytes: Math.max(0, Number(row.retained ?? 0)),
    lagSeconds: Number(row.lag_seconds ?? 0),
  };
}

/** Drops the slot, ending the walsender that holds it first; true when there was one. */
export async function dropSlot(source: Client, slot: string, deadlineMs = 30_000): Promise<boolean> {
  let stillActive: unknown;
  return pollUntil(
    async () => {
      const row = (await source.query<{ pid: number | null }>(`SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = $1`, [slot])).rows[0];
      if (!row) return false;
      if (row.pid !== null) await source.query('SELECT pg_terminate_backend($1, 5000)', [row.pid]).catch(() => undefined);
      try {
        await source.query('SELECT pg_drop_replication_slot($1)', [slot]);
        return true;
      } catch (error) {
        // 55006: still active (the walsender has not exited yet); 42704: dropped meanwhile.
        const code = (error as { code?: string }).code;
        if (code === '42704') return false;
        if (code !== '55006') throw error;
        stillActive = error;
        return undefined;
      }
    },
    // Past the time limit, PostgreSQL's own "still active" error.
    { intervalMs: 100, timeoutMs: deadlineMs, what: `dropping replication slot ${slot}`, timeoutError: () => stillActive as Error },
  );
}

/** libpq conninfo for the subscription: values single-quoted with ' and \ escaped. */
export function subscriptionConninfo(info: ConnectionInfo): string {
  const quote = (value: string) => `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  const parts = [`host=${quote(info.host)}`, `port=${info.port}`, `dbname=${quote(info.database)}`, `user=${quote(info.user)}`];
  if (info.password !== undefined) parts.push(`password=${quote(info.password)}`);
  // TLS of the target server's connection to the source: the sslmode as given (absent: libpq's prefer);
  // sslrootcert names a file on the TARGET server, so only a URI written for it carries one (sourceAsTargetSeesIt).
  if (info.sslmode) parts.push(`sslmode=${quote(info.sslmode)}`);
  if (info.sslrootcert) parts.push(`sslrootcert=${quote(info.sslrootcert)}`);
  parts.push(`application_name=${quote('pgmove')}`);
  // The subscription's walreceiver on the target notices a dead path to the source, as ours do.
  parts.push(keepaliveConninfo());
  return parts.join(' ');
}

/**
 * How the target applies the stream (logical.applyStreaming), as CREATE SUBSCRIPTION options.
 * auto: `streaming = parallel` on a PostgreSQL 16+ target — a large transaction is applied by a parallel
 * apply worker while it still runs on the source, instead of being spilled to a file and applied at its
 * commit (a publisher before 16 is asked for `on` by the same setting: streamed and spilled on the
 * target). Binary transfer is not turned on: measured (bench:apply-rate) it changed nothing within the
 * noise, and it fails where a type's binary form differs between the servers.
 * off: `streaming = off` (14+; PostgreSQL 18's default is parallel).
 */
export function subscriptionApplyOptions(targetMajor: number, mode: 'auto' | 'off'): string[] {
  if (targetMajor < 14) return []; // streaming = off does not exist before 14
  if (mode === 'off') return ['streaming = off'];
  return targetMajor >= 16 ? ['streaming = parallel'] : [];
}

/**
 * `publications`: the subscription's publications when not only the migration's main one (copy
 * generations); `apply`: subscriptionApplyOptions (absent: the target's defaults).
 */
export function createSubscriptionSql(names: ReplicationNames, conninfo: string, options: { connect: boolean; enabled: boolean; publications?: string[]; apply?: string[] }): string {
  const withOptions = options.connect
    ? [`create_slot = false, slot_name = ${literal(names.slot)}, copy_data = false, enabled = ${options.enabled}`, ...(options.apply ?? [])].join(', ')
    : `connect = false`;
  return `CREATE SUBSCRIPTION ${ident(names.subscription)} CONNECTION ${literal(conninfo)} PUBLICATION ${(options.publications ?? [names.publication]).map(ident).join(', ')} WITH (${withOptions})`;
}

export interface SubscriptionState {
  exists: boolean;
  enabled: boolean;
  /** The apply worker runs (it is connected to the source). */
  streaming: boolean;
  applyErrors: number;
}

export async function subscriptionState(target: Client, subscription: string): Promise<SubscriptionState> {
  // pg_stat_subscription_stats exists from PostgreSQL 15 on; a rollback window's subscriber (the source) may be older.
  const hasStats = (await target.query<{ ok: boolean }>(`SELECT to_regclass('pg_catalog.pg_stat_subscription_stats') IS NOT NULL AS ok`)).rows[0]!.ok;
  const errors = hasStats ? 'coalesce((SELECT apply_error_count FROM pg_stat_subscription_stats t WHERE t.subid = s.oid), 0)' : '0';
  const row = (
    await target.query<{ enabled: boolean; streaming: boolean; errors: string }>(
      `SELECT s.subenabled AS enabled,
              EXISTS (SELECT 1 FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.pid IS NOT NULL AND w.relid IS NULL) AS streaming,
              ${errors}::text AS errors
         FROM pg_subscription s WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      [subscription],
    )
  ).rows[0];
  if (!row) return { exists: false, enabled: false, streaming: false, applyErrors: 0 };
  return { exists: true, enabled: row.enabled, streaming: row.streaming, applyErrors: Number(row.errors) };
}

/** Drops the subscription without touching the slot (pgmove drops that on the source itself). */
export async function dropSubscription(target: Client, subscription: string): Promise<boolean> {
  const state = await subscriptionState(target, subscription);
  if (!state.exists) return false;
  const name = ident(subscription);
  if (state.enabled) await target.query(`ALTER SUBSCRIPTION ${name} DISABLE`);
  await target.query(`ALTER SUBSCRIPTION ${name} SET (slot_name = NONE)`);
  await target.query(`DROP SUBSCRIPTION ${name}`);
  return true;
}

/** The tables the migration started with: as given by an older workflow, else from the publication's record. */
export async function knownTablesOf(source: Client, migrationId: string, given: string[] | undefined): Promise<string[]> {
  if (given) return given;
  const publication = replicationNames(migrationId).publication;
  const known = (await readPublicationRecord(source, publication))?.knownTables;
  if (!known) {
    throw ApplicationFailure.nonRetryable(
      `the record of publication ${publication} on the source has no list of the migration's tables (the publication is gone, or its comment was changed): new tables cannot be told apart; abort the migration and start it again`,
      'PublicationRecordMissing',
    );
  }
  return known;
}
