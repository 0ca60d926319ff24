/**
 * What the migration role lacks on the source for the chosen method, and the least that fixes it:
 * memberships (pg_read_all_data, pg_signal_backend) and attributes (REPLICATION) before SUPERUSER,
 * which is granted only when nothing less works. Read-only; runs as the migration role itself.
 */
import type { Client } from 'pg';
import type { MigrationSpec } from '../spec';
import { listTables } from './catalog';
import { ident } from './sql';
import type { MembershipBefore } from '../elevation-spec';

export type { MembershipBefore };

export interface PrivilegeNeeds {
  role: string;
  /** ALTER ROLE attributes to add, e.g. ['REPLICATION'] or ['SUPERUSER']; INHERIT (PostgreSQL < 16) for a NOINHERIT role that needs a membership's privileges. */
  attributes: ('SUPERUSER' | 'REPLICATION' | 'INHERIT')[];
  /** Predefined roles to grant membership in. */
  memberships: string[];
  /** Why, one line per gap. */
  reasons: string[];
  /** The server's major version (memberships carry their own INHERIT option from 16 on). */
  major: number;
}

export interface RoleAttributes {
  superuser: boolean;
  replication: boolean;
  inherit: boolean;
}


export async function roleAttributes(client: Client, role: string): Promise<RoleAttributes> {
  const row = (await client.query<{ rolsuper: boolean; rolreplication: boolean; rolinherit: boolean }>('SELECT rolsuper, rolreplication, rolinherit FROM pg_roles WHERE rolname = $1', [role])).rows[0];
  if (!row) throw new Error(`role ${role} does not exist on the source`);
  return { superuser: row.rolsuper, replication: row.rolreplication, inherit: row.rolinherit };
}

export async function serverMajor(client: Client): Promise<number> {
  return (await client.query<{ major: number }>("SELECT current_setting('server_version_num')::int / 10000 AS major")).rows[0]!.major;
}

/** The role's memberships in the named roles as they are now (pg_auth_members is readable by any role). */
export async function membershipsOf(client: Client, role: string, names: string[]): Promise<Record<string, MembershipBefore>> {
  const major = await serverMajor(client);
  const rows = (
    await client.query<{ name: string; member: boolean; superuser_grant_inherit: boolean | null }>(
      `SELECT g.rolname AS name, count(m.roleid) > 0 AS member,
              ${major >= 16 ? 'bool_or(m.inherit_option) FILTER (WHERE m.grantor = 10)' : 'NULL::boolean'} AS superuser_grant_inherit
         FROM pg_roles g LEFT JOIN pg_auth_members m ON m.roleid = g.oid AND m.member = (SELECT oid FROM pg_roles WHERE rolname = $1)
        WHERE g.rolname = ANY($2::text[]) GROUP BY g.rolname`,
      [role, names],
    )
  ).rows;
  return Object.fromEntries(
    rows.map((row) => [row.name, row.superuser_grant_inherit === null ? { member: row.member } : { member: row.member, superuserGrantInherit: row.superuser_grant_inherit }]),
  );
}

/** The bootstrap superuser (oid 10): `postgres` in most images; readable by any role. */
export async function bootstrapSuperuser(client: Client): Promise<string> {
  return (await client.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE oid = 10')).rows[0]!.rolname;
}

export async function privilegeNeeds(client: Client, spec: MigrationSpec): Promise<PrivilegeNeeds> {
  const facts = (
    await client.query<{ role: string; superuser: boolean; replication: boolean; inherit: boolean; owner: boolean; signal: boolean; major: number }>(
      `SELECT current_user AS role, r.rolsuper AS superuser, r.rolreplication AS replication, r.rolinherit AS inherit,
              pg_has_role(d.datdba, 'USAGE') AS owner, pg_has_role('pg_signal_backend', 'USAGE') AS signal,
              current_setting('server_version_num')::int / 10000 AS major
         FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()`,
    )
  ).rows[0]!;
  const needs: PrivilegeNeeds = { role: facts.role, attributes: [], memberships: [], reasons: [], major: facts.major };
  if (facts.superuser) return needs;
  let superuser = false;
  const tables = await listTables(client, spec);
  const unreadable = (
    await client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM unnest($1::text[], $2::text[]) AS t(schema, name)
        WHERE NOT has_schema_privilege(schema, 'USAGE') OR NOT has_table_privilege(format('%I.%I', schema, name), 'SELECT')`,
      [tables.map((t) => t.schema), tables.map((t) => t.name)],
    )
  ).rows[0]!.n;
  if (unreadable > 0) {
    needs.reasons.push(`${facts.role} cannot read ${unreadable} table(s)`);
    if (facts.major >= 14) needs.memberships.push('pg_read_all_data');
    else superuser = true; // pg_read_all_data came with PostgreSQL 14
  }
  const largeObjectsReadable = await client
    .query('SELECT count(lo_get(oid, 0, 0)) FROM pg_largeobject_metadata')
    .then(() => true)
    .catch(() => false);
  if (!largeObjectsReadable) {
    needs.reasons.push(`${facts.role} cannot read every large object (no predefined role grants that)`);
    superuser = true;
  }
  const logical = spec.method === 'logical';
  if (logical && !facts.replication) {
    needs.reasons.push(`${facts.role} lacks REPLICATION (the logical method creates a replication slot)`);
    needs.attributes.push('REPLICATION');
  }
  if (logical) {
    const notOwned = (
      await client.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE format('%I.%I', n.nspname, c.relname) = ANY($1::text[]) AND NOT pg_has_role(c.relowner, 'USAGE')`,
        [tables.map((t) => `${ident(t.schema)}.${ident(t.name)}`)],
      )
    ).rows[0]!.n;
    if (notOwned > 0) {
      needs.reasons.push(`${facts.role} does not own ${notOwned} table(s) (a publication needs ownership)`);
      superuser = true;
    }
  }
  const freezes = spec.method === 'logical' ? spec.cutover.freeze === 'readOnly' : spec.freezeSource;
  if (freezes && !facts.owner) {
    needs.reasons.push(`${facts.role} does not own the database (the freeze makes it read-only)`);
    superuser = true;
  }
  if (freezes && !facts.signal) {
    needs.reasons.push(`${facts.role} cannot end other sessions (the freeze ends them)`);
    needs.memberships.push('pg_signal_backend');
  }
  if (!facts.inherit && facts.major < 16 && needs.memberships.length > 0) {
    // Before 16 a NOINHERIT role uses no membership's privileges (an existing one included) without SET ROLE.
    needs.reasons.push(`${facts.role} is NOINHERIT (it would not use the privileges of ${needs.memberships.join(', ')})`);
    needs.attributes.push('INHERIT');
  }
  if (superuser) {
    needs.attributes = ['SUPERUSER'];
    needs.memberships = [];
  }
  return needs;
}

export function hasNeeds(needs: PrivilegeNeeds): boolean {
  return needs.attributes.length > 0 || needs.memberships.length > 0;
}

/**
 * The statements that grant the needs (what an operator would run by hand). From PostgreSQL 16 on a
 * membership is granted WITH INHERIT TRUE: a NOINHERIT role, or an existing grant without INHERIT, would
 * not use its privileges otherwise.
 */
export function grantStatements(role: string, attributes: string[], memberships: string[], major = 0): string[] {
  const inherit = major >= 16 ? ' WITH INHERIT TRUE' : '';
  return [...attributes.map((a) => `ALTER ROLE ${ident(role)} WITH ${a};`), ...memberships.map((m) => `GRANT ${ident(m)} TO ${ident(role)}${inherit};`)];
}

/** What the role had before the elevation; absent in records written before pgmove kept it. */
export interface RoleBefore {
  attributes?: Partial<RoleAttributes>;
  memberships?: Record<string, MembershipBefore>;
}

/**
 * The statements that undo exactly what pgmove added: an attribute only when the role lacked it, a
 * membership only when the role was no member; from 16 on an existing grant gets its former INHERIT
 * option back instead of being revoked (pgmove's WITH INHERIT TRUE changed that grant).
 */
export function revertStatements(role: string, attributes: string[], memberships: string[], before: RoleBefore = {}, major = 0): string[] {
  const statements = attributes
    .filter((a) => before.attributes?.[a.toLowerCase() as keyof RoleAttributes] !== true)
    .map((a) => `ALTER ROLE ${ident(role)} WITH NO${a};`);
  for (const m of memberships) {
    const had = before.memberships?.[m];
    if (major >= 16 && had?.superuserGrantInherit !== undefined) statements.push(`GRANT ${ident(m)} TO ${ident(role)} WITH INHERIT ${had.superuserGrantInherit ? 'TRUE' : 'FALSE'};`);
    else if (major >= 16 || !had?.member) statements.push(`REVOKE ${ident(m)} FROM ${ident(role)};`);
  }
  return statements;
}
