/**
 * The source write freeze for the offline copy, and its undo.
 *
 * A database-level read-only default alone is no fence (a client can SET it back), so the freeze also
 * revokes CONNECT from every role but ours (and PUBLIC) and ends their sessions. What it changed is
 * written, in the same transaction, into a database-level setting `pgmove.freeze_state` on the source: a retry
 * after a crash finds it and never mistakes the frozen state for the original, and `unfreezeSource`
 * restores exactly that, idempotently, even when the workflow's own record was lost.
 */
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { FreezeState } from '../src/model';
import { connectionInfo, withClient } from '../src/pg/connect';
import { ident, literal } from '../src/pg/sql';
import { activityLogger } from '../src/log';
import { ApplicationFailure } from '@temporalio/common';

const MARKER = 'pgmove.freeze_state';

export async function freezeSource(spec: MigrationSpec): Promise<FreezeState> {
  const log = activityLogger('freeze');
  const info = await connectionInfo(spec.source, 'source');
  return withClient(info, 'source', async (client) => {
    await client.query('SET default_transaction_read_only = off');
    const existing = await readMarker(client);
    if (existing) {
      log.info('source already frozen by this migration; re-ending stray sessions');
      await endOtherSessions(client);
      return existing;
    }
    const settings = await databaseSettings(client);
    const grantees = (
      await client.query<{ grantee: string }>(
        `SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
           FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
          WHERE d.datname = current_database() AND a.privilege_type = 'CONNECT'
            AND a.grantee <> (SELECT oid FROM pg_roles WHERE rolname = current_user)`,
      )
    ).rows.map((r) => r.grantee);
    const superusers = (
      await client.query<{ rolname: string }>(
        `SELECT rolname FROM pg_roles WHERE rolsuper AND rolcanlogin AND rolname <> current_user ORDER BY 1`,
      )
    ).rows.map((r) => r.rolname);
    const state: FreezeState = {
      database: info.database,
      revokedConnectFrom: grantees,
      previousReadOnlySetting: settings.get('default_transaction_read_only') ?? null,
      terminatedSessions: 0,
      unfencedSuperusers: superusers,
    };
    const db = ident(info.database);
    await client.query('BEGIN');
    try {
      // grantees come from regrole::text, which is already a quoted identifier (or PUBLIC).
      if (grantees.length) await client.query(`REVOKE CONNECT ON DATABASE ${db} FROM ${grantees.join(', ')}`);
      // A member of the owner role connects through grants just revoked: keep our own way in.
      if (!(await canConnect(client, 'current_user'))) {
        await client.query(`GRANT CONNECT ON DATABASE ${db} TO CURRENT_USER`);
        state.grantedConnectToSelf = true;
      }
      await assertFenced(client, info.database);
      await client.query(`ALTER DATABASE ${db} SET default_transaction_read_only = on`);
      // The record of what changed commits with the change itself.
      await client.query(`ALTER DATABASE ${db} SET ${MARKER} = ${literal(JSON.stringify(state))}`);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
    state.terminatedSessions = await endOtherSessions(client);
    log.info({ revoked: grantees.length, terminated: state.terminatedSessions }, 'source frozen');
    return state;
  });
}

/** Undoes the freeze recorded on the source; a no-op when the source is not frozen. */
export async function unfreezeSource(spec: MigrationSpec): Promise<{ unfrozen: boolean }> {
  const log = activityLogger('unfreeze');
  const info = await connectionInfo(spec.source, 'source');
  return withClient(info, 'source', async (client) => {
    await client.query('SET default_transaction_read_only = off');
    const state = await readMarker(client);
    if (!state) return { unfrozen: false };
    const db = ident(info.database);
    const existingRoles = new Set(
      (await client.query<{ name: string }>(`SELECT oid::regrole::text AS name FROM pg_roles`)).rows.map((r) => r.name),
    );
    const grantees = state.revokedConnectFrom.filter((g) => g === 'PUBLIC' || existingRoles.has(g));
    await client.query('BEGIN');
    try {
      if (grantees.length) await client.query(`GRANT CONNECT ON DATABASE ${db} TO ${grantees.join(', ')}`);
      if (state.grantedConnectToSelf) await client.query(`REVOKE CONNECT ON DATABASE ${db} FROM CURRENT_USER`);
      if (state.previousReadOnlySetting === null) {
        await client.query(`ALTER DATABASE ${db} RESET default_transaction_read_only`);
      } else {
        await client.query(`ALTER DATABASE ${db} SET default_transaction_read_only = ${literal(state.previousReadOnlySetting)}`);
      }
      await client.query(`ALTER DATABASE ${db} RESET ${MARKER}`);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
    log.info({ restoredConnect: grantees.length }, 'source unfrozen');
    return { unfrozen: true };
  });
}

/** Database-level settings (ALTER DATABASE ... SET) of the current database, name → value. */
async function databaseSettings(client: Client): Promise<Map<string, string>> {
  const result = await client.query<{ setting: string }>(
    `SELECT unnest(s.setconfig) AS setting FROM pg_db_role_setting s
      WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND s.setrole = 0`,
  );
  const settings = new Map<string, string>();
  for (const { setting } of result.rows) {
    const eq = setting.indexOf('=');
    settings.set(setting.slice(0, eq), setting.slice(eq + 1));
  }
  return settings;
}

async function readMarker(client: Client): Promise<FreezeState | undefined> {
  const value = (await databaseSettings(client)).get(MARKER);
  return value ? (JSON.parse(value) as FreezeState) : undefined;
}

async function canConnect(client: Client, role: string): Promise<boolean> {
  const result = await client.query<{ ok: boolean }>(`SELECT has_database_privilege(${role}, current_database(), 'CONNECT') AS ok`);
  return result.rows[0]?.ok === true;
}

/**
 * After the REVOKEs, no login role but ours (and superusers, which bypass privileges) may still be able
 * to connect — e.g. through a grant made by another grantor, which our REVOKE does not remove.
 */
async function assertFenced(client: Client, database: string): Promise<void> {
  const open = (
    await client.query<{ rolname: string }>(
      `SELECT r.rolname FROM pg_roles r
        WHERE r.rolcanlogin AND NOT r.rolsuper AND r.rolname <> current_user
          AND has_database_privilege(r.oid, current_database(), 'CONNECT')
        ORDER BY 1`,
    )
  ).rows.map((r) => r.rolname);
  if (open.length) {
    throw ApplicationFailure.nonRetryable(
      `cannot fence ${database}: ${open.join(', ')} can still connect after REVOKE CONNECT (a grant made by another grantor, or membership in the owner role); revoke it as its grantor, or set freezeSource: false`,
      'FreezeFailed',
    );
  }
}

/** Ends every other session on the database (this migration opens its own only after the freeze). */
async function endOtherSessions(client: Client): Promise<number> {
  const result = await client.query<{ n: string }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(a.pid)) AS n
       FROM pg_stat_activity a
      WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
        AND (NOT coalesce((SELECT rolsuper FROM pg_roles r WHERE r.oid = a.usesysid), false)
             OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))`,
  );
  return Number(result.rows[0]?.n ?? 0);
}

/** True when the source is currently frozen by pgmove (for status and tests). */
export async function isSourceFrozen(client: Client): Promise<boolean> {
  return (await readMarker(client)) !== undefined;
}
