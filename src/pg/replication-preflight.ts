/**
 * Pre-flight of a logical stream, either direction: can a server publish and keep one more logical slot
 * (wal_level, free replication slots and free WAL senders, each with the fix), and can the subscriber
 * reach the publisher. Shared by the forward stream's pre-flight and the rollback window's.
 */
import type { Client } from 'pg';
import type { ConnectionInfo } from './connect';
import { createSubscriptionSql, subscriptionConninfo } from './replication';
import { quietStatementLogging, redactPassword } from './statement-privacy';
import { errorMessage } from '../error-text';
import { serverMajor } from './catalog';

export interface CapacityBlocker {
  detail: string;
  fix: string;
}

/**
 * WAL senders in use: pg_stat_activity shows other roles' walsenders only to pg_read_all_stats members,
 * while pg_replication_slots shows every active slot to anyone: the larger count is the better estimate.
 */
const CAPACITY_SQL = `SELECT current_setting('wal_level') AS wal_level,
        current_setting('max_replication_slots') AS slots, (SELECT count(*) FROM pg_replication_slots)::text AS slots_used,
        current_setting('max_wal_senders') AS senders,
        greatest((SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'),
                 (SELECT count(*) FROM pg_replication_slots WHERE active))::text AS senders_used,
        current_setting('rds.logical_replication', true) AS rds`;

/** `side` names the server in the fixes ("source" / "target"). */
export async function replicationCapacityBlockers(client: Client, side: 'source' | 'target'): Promise<CapacityBlocker[]> {
  const row = (await client.query<{ wal_level: string; slots: string; slots_used: string; senders: string; senders_used: string; rds: string | null }>(CAPACITY_SQL)).rows[0]!;
  const blockers: CapacityBlocker[] = [];
  if (row.wal_level !== 'logical') {
    blockers.push({
      detail: `wal_level is ${row.wal_level}: logical needs wal_level = logical`,
      fix: row.rds !== null ? `set rds.logical_replication = 1 in the ${side}'s DB parameter group and reboot it` : `ALTER SYSTEM SET wal_level = logical; then restart the ${side} server`,
    });
  }
  if (Number(row.slots) - Number(row.slots_used) < 1) {
    blockers.push({
      detail: `no free replication slot (max_replication_slots = ${row.slots}, ${row.slots_used} in use)`,
      fix: `ALTER SYSTEM SET max_replication_slots = ${Number(row.slots_used) + 2}; then restart the ${side} (or drop an unused slot)`,
    });
  }
  if (Number(row.senders) - Number(row.senders_used) < 1) {
    blockers.push({
      detail: `no free WAL sender (max_wal_senders = ${row.senders}, ${row.senders_used} in use)`,
      fix: `ALTER SYSTEM SET max_wal_senders = ${Number(row.senders_used) + 2}; then restart the ${side}`,
    });
  }
  return blockers;
}

/**
 * Connects from `subscriber` to the publisher the way a subscription will, inside a transaction that is
 * rolled back (CREATE SUBSCRIPTION without a slot may run in one): nothing stays behind. Returns the
 * error, its password redacted, or undefined when the connection worked. SET LOCAL keeps the statement's
 * text (with the password) out of the subscriber's log even when it fails.
 */
export async function subscriptionProbeError(subscriber: Client, publisher: ConnectionInfo, probeName: string): Promise<string | undefined> {
  const names = { publication: 'pgmove_probe', slot: 'pgmove_probe', subscription: `${probeName}_${process.pid}` };
  // READ WRITE: a subscriber database that is read-only by default (a fenced source) must not fail the probe for that.
  await subscriber.query('BEGIN READ WRITE');
  try {
    await quietStatementLogging(subscriber);
    await subscriber.query(createSubscriptionSql(names, subscriptionConninfo(publisher), { connect: true, enabled: false }));
    return undefined;
  } catch (error) {
    return redactPassword(errorMessage(error), publisher.password);
  } finally {
    await subscriber.query('ROLLBACK').catch(() => undefined);
  }
}

/**
 * May the current role create a subscription here: a superuser, or (PostgreSQL 16+) a member of
 * pg_create_subscription with CREATE on the database. `major` for the caller's fix text.
 */
export async function subscribeRight(client: Client): Promise<{ major: number; allowed: boolean }> {
  const major = await serverMajor(client);
  const row = (
    await client.query<{ superuser: boolean; create_sub: boolean; create_db: boolean }>(
      `SELECT r.rolsuper AS superuser,
              ${major >= 16 ? `pg_has_role('pg_create_subscription', 'USAGE')` : 'false'} AS create_sub,
              has_database_privilege(current_database(), 'CREATE') AS create_db
         FROM pg_roles r WHERE r.rolname = current_user`,
    )
  ).rows[0]!;
  return { major, allowed: row.superuser || (row.create_sub && row.create_db) };
}
