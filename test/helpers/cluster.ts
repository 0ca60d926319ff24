/** A source server with several databases sharing roles, and helpers to watch a cluster migration. */
import type { WorkflowHandle } from '@temporalio/client';
import { adminQuery, type ClusterHandle } from './stack';
import { waitFor } from '../../src/dev/ports';
import { clusterStatusQuery } from '../../workflows/messages';
import type { ClusterStatus } from '../../src/model';

export const APP_RW_PASSWORD = 'app-rw-secret-pw';

/** Shared roles: an owner, a read-write login, a read-only login (no password reference), a group, an ex-superuser. */
export async function createSharedRoles(cluster: ClusterHandle): Promise<void> {
  await adminQuery(
    cluster,
    'postgres',
    `CREATE ROLE app_owner NOLOGIN;
     CREATE ROLE app_rw LOGIN PASSWORD '${APP_RW_PASSWORD}' CONNECTION LIMIT 20;
     CREATE ROLE app_ro LOGIN PASSWORD 'ro-pw' VALID UNTIL '2031-01-01';
     CREATE ROLE reporting NOLOGIN NOINHERIT CREATEDB;
     CREATE ROLE "ops admin" LOGIN SUPERUSER REPLICATION PASSWORD 'ops-pw';
     GRANT app_owner TO app_rw;
     GRANT reporting TO app_ro WITH ADMIN OPTION;
     ALTER ROLE app_ro SET statement_timeout = '30s';
     COMMENT ON ROLE reporting IS 'reporting group'`,
  );
}

/** A database owned by app_owner with `rows` rows in two tables, grants and default privileges. */
export async function createAppDatabase(cluster: ClusterHandle, database: string, rows: number): Promise<void> {
  await adminQuery(cluster, 'postgres', `CREATE DATABASE "${database}" OWNER app_owner`);
  await adminQuery(
    cluster,
    database,
    `SET ROLE app_owner;
     CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL, payload jsonb, created timestamptz NOT NULL DEFAULT now());
     CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item_id bigint REFERENCES items(id), kind text);
     CREATE INDEX ON events (item_id);
     INSERT INTO items (name, payload) SELECT '${database}-' || g, jsonb_build_object('g', g) FROM generate_series(1, ${rows}) g;
     INSERT INTO events (item_id, kind) SELECT 1 + g % ${rows}, 'k' || (g % 7) FROM generate_series(1, ${rows}) g;
     GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_ro;
     GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_rw;
     ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO app_ro;
     RESET ROLE`,
  );
}

export async function waitForCluster(handle: WorkflowHandle, what: string, check: (status: ClusterStatus) => boolean, timeoutMs = 180_000): Promise<ClusterStatus> {
  let last: ClusterStatus | undefined;
  return waitFor(what, async () => {
    last = await handle.query(clusterStatusQuery).catch(() => undefined);
    return last && check(last) ? last : undefined;
  }, timeoutMs, 200).catch((error: Error) => {
    throw new Error(`${error.message}; last status: ${JSON.stringify({ phase: last?.phase, databases: last?.databases, errors: last?.errors, warnings: last?.warnings })}`);
  });
}

export interface RoleState {
  login: boolean;
  superuser: boolean;
  replication: boolean;
  createdb: boolean;
  inherit: boolean;
  connlimit: number;
  memberOf: string[];
  comment: string | null;
}

export async function roleState(cluster: ClusterHandle, role: string): Promise<RoleState | undefined> {
  const [row] = await adminQuery<RoleState>(
    cluster,
    'postgres',
    `SELECT r.rolcanlogin AS login, r.rolsuper AS superuser, r.rolreplication AS replication, r.rolcreatedb AS createdb,
            r.rolinherit AS inherit, r.rolconnlimit AS connlimit, shobj_description(r.oid, 'pg_authid') AS comment,
            coalesce((SELECT array_agg(pg_get_userbyid(m.roleid)::text || CASE WHEN m.admin_option THEN '+admin' ELSE '' END ORDER BY 1)
                        FROM pg_auth_members m WHERE m.member = r.oid), '{}') AS "memberOf"
       FROM pg_roles r WHERE r.rolname = $1`,
    [role],
  );
  return row;
}
