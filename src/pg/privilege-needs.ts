/**
 * What the migration role lacks on the source for the chosen method, and the least that fixes it:
 * memberships (pg_read_all_data, pg_signal_backend) and attributes (REPLICATION) before SUPERUSER,
 * which is granted only when nothing less works. Read-only; runs as the migration role itself.
 */
import type { Client } from 'pg';
import type { MigrationSpec } from '../spec';
import { listTables } from './catalog';
import { ident } from './sql';

export interface PrivilegeNeeds {
  role: string;
  /** ALTER ROLE attributes to add, e.g. ['REPLICATION'] or ['SUPERUSER']. */
  attributes: ('SUPERUSER' | 'REPLICATION')[];
  /** Predefined roles to grant membership in. */
  memberships: string[];
  /** Why, one line per gap. */
  reasons: string[];
}

export interface RoleAttributes {
  superuser: boolean;
  replication: boolean;
}

export async function roleAttributes(client: Client, role: string): Promise<RoleAttributes> {
  const row = (await client.query<{ rolsuper: boolean; rolreplication: boolean }>('SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = $1', [role])).rows[0];
  if (!row) throw new Error(`role ${role} does not exist on the source`);
  return { superuser: row.rolsuper, replication: row.rolreplication };
}

/** The bootstrap superuser (oid 10): `postgres` in most images; readable by any role. */
export async function bootstrapSuperuser(client: Client): Promise<string> {
  return (await client.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE oid = 10')).rows[0]!.rolname;
}

export async function privilegeNeeds(client: Client, spec: MigrationSpec): Promise<PrivilegeNeeds> {
  const facts = (
    await client.query<{ role: string; superuser: boolean; replication: boolean; owner: boolean; signal: boolean; major: number }>(
      `SELECT current_user AS role, r.rolsuper AS superuser, r.rolreplication AS replication,
              pg_has_role(d.datdba, 'USAGE') AS owner, pg_has_role('pg_signal_backend', 'USAGE') AS signal,
              current_setting('server_version_num')::int / 10000 AS major
         FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()`,
    )
  ).rows[0]!;
  const needs: PrivilegeNeeds = { role: facts.role, attributes: [], memberships: [], reasons: [] };
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
  if (superuser) {
    needs.attributes = ['SUPERUSER'];
    needs.memberships = [];
  }
  return needs;
}

export function hasNeeds(needs: PrivilegeNeeds): boolean {
  return needs.attributes.length > 0 || needs.memberships.length > 0;
}

/** The statements that grant the needs (what an operator would run by hand). */
export function grantStatements(role: string, attributes: string[], memberships: string[]): string[] {
  return [...attributes.map((a) => `ALTER ROLE ${ident(role)} WITH ${a};`), ...memberships.map((m) => `GRANT ${ident(m)} TO ${ident(role)};`)];
}

/** The statements that undo exactly what was granted (attributes the role did not have, memberships added). */
export function revertStatements(role: string, attributes: string[], memberships: string[]): string[] {
  return [...attributes.map((a) => `ALTER ROLE ${ident(role)} WITH NO${a};`), ...memberships.map((m) => `REVOKE ${ident(m)} FROM ${ident(role)};`)];
}
