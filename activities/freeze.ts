/**
 * The source write freeze for the offline copy, and its undo.
 *
 * A database-level read-only default alone is no fence (a client can SET it back), so the freeze also
 * revokes CONNECT from every role but ours (and PUBLIC) and ends their sessions. What it changed is
 * written, in the same transaction, into the source database's comment (the one place a database
 * owner who is not a superuser may write; the former comment is kept inside and restored): a retry
 * after a crash finds it and never mistakes the frozen state for the original, and `unfreezeSource`
 * restores exactly that, idempotently, even when the workflow's own record was lost.
 */
import { randomUUID } from 'node:crypto';
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { FreezeState, PreflightCheck } from '../src/model';
import { connectionInfo, withClient } from '../src/pg/connect';
import { ident, literal } from '../src/pg/sql';
import { databaseComment } from '../src/pg/catalog';
import { activityLogger } from '../src/log';
import { ApplicationFailure } from '@temporalio/common';
import { pollUntil } from '../src/poll';

const MARKER_PREFIX = 'pgmove freeze marker: ';

/**
 * Another client's session on this database (alias a = pg_stat_activity). Without pg_read_all_stats,
 * other roles' sessions show no backend_type, so walsenders are recognised by the slots they hold;
 * the cutover's own sessions are spared.
 */
const OTHER_CLIENT_SESSION = `a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.usesysid IS NOT NULL
  AND a.backend_type IS DISTINCT FROM 'walsender'
  AND a.pid NOT IN (SELECT s.active_pid FROM pg_replication_slots s WHERE s.active_pid IS NOT NULL)
  AND NOT (a.usename = current_user AND a.application_name LIKE 'pgmove%')`;

export async function freezeSource(spec: MigrationSpec, migrationId?: string): Promise<FreezeState> {
  const log = activityLogger('freeze');
  const info = await connectionInfo(spec.source, 'source');
  return withClient(info, 'source', async (client) => {
    await client.query('SET default_transaction_read_only = off');
    const existing = await readFreezeState(client);
    if (existing && foreignFence(existing, migrationId)) throw fencedByOther(info.database, existing.migrationId!);
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
      migrationId,
      revokedConnectFrom: grantees,
      previousReadOnlySetting: settings.get('default_transaction_read_only') ?? null,
      terminatedSessions: 0,
      unfencedSuperusers: superusers,
      token: randomUUID(),
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
      state.previousComment = await databaseComment(client);
      await client.query(`COMMENT ON DATABASE ${db} IS ${literal(MARKER_PREFIX + JSON.stringify(state))}`);
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

/**
 * Undoes the freeze recorded on the source; a no-op when the source is not frozen, or when another
 * migration froze it (`fencedBy` names it: its fence is not ours to lift).
 */
export async function unfreezeSource(spec: Pick<MigrationSpec, 'source'>, migrationId?: string): Promise<{ unfrozen: boolean; fencedBy?: string }> {
  const log = activityLogger('unfreeze');
  const info = await connectionInfo(spec.source, 'source');
  return withClient(info, 'source', async (client) => {
    await client.query('SET default_transaction_read_only = off');
    const state = await readFreezeState(client);
    if (!state) return { unfrozen: false };
    if (foreignFence(state, migrationId)) {
      log.warn({ fencedBy: state.migrationId }, 'source fenced by another migration: left as it is');
      return { unfrozen: false, fencedBy: state.migrationId };
    }
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
      await client.query(`COMMENT ON DATABASE ${db} IS ${state.previousComment ? literal(state.previousComment) : 'NULL'}`);
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
    log.info({ restoredConnect: grantees.length }, 'source unfrozen');
    return { unfrozen: true };
  });
}

/**
 * At the end of a migration (its cleanup runs after any unfreeze): a fence of this migration still there
 * is kept on purpose (after a switch). Recorded, so `pgmove recover` leaves it to `pgmove unfreeze`.
 */
export async function markFenceKept(spec: Pick<MigrationSpec, 'source'>, migrationId: string): Promise<boolean> {
  const info = await connectionInfo(spec.source, 'source');
  return withClient(info, 'source', async (client) => {
    await client.query('SET default_transaction_read_only = off');
    const state = await readFreezeState(client);
    if (!state || foreignFence(state, migrationId) || state.keptAtEnd) return false;
    const kept: FreezeState = { ...state, keptAtEnd: new Date().toISOString() };
    await client.query(`COMMENT ON DATABASE ${ident(info.database)} IS ${literal(MARKER_PREFIX + JSON.stringify(kept))}`);
    return true;
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

/** A fence recorded by a different migration (records without an id predate the field: treated as ours). */
function foreignFence(state: FreezeState, migrationId: string | undefined): boolean {
  return state.migrationId !== undefined && migrationId !== undefined && state.migrationId !== migrationId;
}

export function fencedByOther(database: string, owner: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(
    `the source database ${database} is still fenced by pgmove migration ${owner} (kept frozen after its switch): release it with \`pgmove unfreeze ${owner}\` before migrating it again`,
    'SourceFenced',
  );
}

/** Pre-flight: a source another migration kept fenced after its switch is not this one's to copy or unfreeze. */
export async function foreignFenceCheck(source: Client, database: string, migrationId: string | undefined): Promise<PreflightCheck | undefined> {
  const fence = await readFreezeState(source);
  if (!fence?.migrationId || fence.migrationId === migrationId) return undefined;
  return {
    name: 'source not fenced by another migration',
    ok: false,
    detail: `the source database ${database} is still fenced by pgmove migration ${fence.migrationId} (kept frozen after its switch)`,
    fix: `pgmove unfreeze ${fence.migrationId}, once nothing should write to the old database any more`,
  };
}

export async function readFreezeState(client: Client): Promise<FreezeState | undefined> {
  const comment = await databaseComment(client);
  return comment?.startsWith(MARKER_PREFIX) ? (JSON.parse(comment.slice(MARKER_PREFIX.length)) as FreezeState) : undefined;
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

/**
 * Ends every other client session on the database and waits until they are gone (this migration opens
 * its own only after the freeze, except the cutover's, which is spared). Walsenders stay: the
 * subscription's stream must keep draining.
 */
async function endOtherSessions(client: Client): Promise<number> {
  // Signal them all at once, then wait for them together (pg_terminate_backend's own wait polls every 100 ms per session).
  const pids = (
    await client.query<{ pid: number }>(
      `SELECT a.pid FROM pg_stat_activity a
        WHERE ${OTHER_CLIENT_SESSION}
          AND (NOT coalesce((SELECT rolsuper FROM pg_roles r WHERE r.oid = a.usesysid), false)
               OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))`,
    )
  ).rows.map((r) => r.pid);
  // A separate statement: SQL does not promise to apply the filter above before calling a function.
  if (pids.length) await client.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [pids]);
  if (pids.length) {
    let alive = pids.length;
    await pollUntil(
      async () => {
        alive = (await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ANY($1::int[])`, [pids])).rows[0]!.n;
        return alive === 0 ? true : undefined;
      },
      { intervalMs: 5, timeoutMs: 10_000, what: 'the ended sessions', timeoutError: () => new Error(`${alive} session(s) did not end within 10 s of pg_terminate_backend`) },
    );
  }
  return pids.length;
}

/**
 * The fence holds: no client session of another non-superuser role is left on the database, and none
 * of those roles may connect. (Sessions of our own role are the migration's.)
 */
export async function verifyFence(client: Client): Promise<void> {
  const leftover = (
    await client.query<{ who: string }>(
      `SELECT format('%s (pid %s)', a.usename, a.pid) AS who FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid
        WHERE ${OTHER_CLIENT_SESSION} AND NOT r.rolsuper AND r.rolname <> current_user`,
    )
  ).rows.map((r) => r.who);
  if (leftover.length) {
    throw ApplicationFailure.nonRetryable(`the source is not fenced: sessions still open after the freeze: ${leftover.join(', ')}`, 'FreezeFailed');
  }
  await assertFenced(client, (await client.query<{ db: string }>('SELECT current_database() AS db')).rows[0]!.db);
}

/** True when the source is currently frozen by pgmove (for status and tests). */
export async function isSourceFrozen(client: Client): Promise<boolean> {
  return (await readFreezeState(client)) !== undefined;
}
