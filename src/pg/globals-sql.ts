/**
 * Server-wide objects of a cluster migration: databases, roles, memberships, settings — the catalog
 * reads on the source and the statements that recreate them on the target. Identifiers are quoted,
 * values are literals; a role's password is sent only as a SCRAM verifier computed here, so the clear
 * text never reaches the target's statement log.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type { Client } from 'pg';
import { escapeLiteral } from 'pg';
import { ident } from './sql';

/** Marks what a cluster migration created on the target (database and role comments) until it completes. */
export function ownershipMarker(migrationId: string): string {
  return `pgmove: created by migration ${migrationId}`;
}

export interface SourceDatabase {
  name: string;
  owner: string;
  encoding: string;
  collate: string;
  ctype: string;
  /** c (libc), i (icu) or b (builtin, 17+). */
  localeProvider: string;
  /** ICU or builtin locale when the provider is not libc. */
  locale: string | null;
  connectionLimit: number;
  comment: string | null;
  /** Per-database settings (ALTER DATABASE ... SET), and per role in this database. */
  settings: string[];
  roleSettings: { role: string; settings: string[] }[];
  /** aclexplode of datacl; null when the database has the default privileges. */
  grants: { grantee: string; privilege: string; grantable: boolean }[] | null;
}

export async function listSourceDatabases(source: Client): Promise<SourceDatabase[]> {
  const major = Number((await source.query<{ v: string }>(`SELECT current_setting('server_version_num') AS v`)).rows[0]!.v) / 10000;
  const locale = major >= 17 ? 'd.datlocale' : 'd.daticulocale';
  const rows = (
    await source.query<SourceDatabase>(
      `SELECT d.datname AS name, pg_get_userbyid(d.datdba) AS owner, pg_encoding_to_char(d.encoding) AS encoding,
              d.datcollate AS collate, d.datctype AS ctype, d.datlocprovider::text AS "localeProvider", ${locale} AS locale,
              d.datconnlimit AS "connectionLimit", shobj_description(d.oid, 'pg_database') AS comment,
              coalesce((SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}') AS settings,
              coalesce((SELECT json_agg(json_build_object('role', pg_get_userbyid(s.setrole), 'settings', s.setconfig))
                          FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole <> 0), '[]') AS "roleSettings",
              CASE WHEN d.datacl IS NULL THEN NULL ELSE
                (SELECT json_agg(json_build_object('grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                                                   'privilege', a.privilege_type, 'grantable', a.is_grantable))
                   FROM aclexplode(d.datacl) a WHERE a.grantee <> d.datdba) END AS grants
         FROM pg_database d
        WHERE NOT d.datistemplate AND d.datallowconn
        ORDER BY d.datname`,
    )
  ).rows;
  return rows.map((row) => ({ ...row, grants: row.grants === null ? null : (row.grants ?? []) }));
}

export interface SourceRole {
  name: string;
  superuser: boolean;
  inherit: boolean;
  createRole: boolean;
  createDb: boolean;
  login: boolean;
  replication: boolean;
  bypassRls: boolean;
  connectionLimit: number;
  validUntil: string | null;
  comment: string | null;
  settings: string[];
}

/** Roles an operator creates (not the predefined pg_* roles, not RDS's own). */
export async function listSourceRoles(source: Client): Promise<SourceRole[]> {
  return (
    await source.query<SourceRole>(
      `SELECT r.rolname AS name, r.rolsuper AS superuser, r.rolinherit AS inherit, r.rolcreaterole AS "createRole",
              r.rolcreatedb AS "createDb", r.rolcanlogin AS login, r.rolreplication AS replication, r.rolbypassrls AS "bypassRls",
              r.rolconnlimit AS "connectionLimit", r.rolvaliduntil::text AS "validUntil",
              shobj_description(r.oid, 'pg_authid') AS comment,
              coalesce((SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setrole = r.oid AND s.setdatabase = 0), '{}') AS settings
         FROM pg_roles r
        WHERE r.rolname !~ '^pg_' AND r.rolname !~ '^rds' AND r.rolname <> 'rdsadmin'
        ORDER BY r.rolname`,
    )
  ).rows;
}

export interface Membership {
  role: string;
  member: string;
  adminOption: boolean;
}

export async function listMemberships(source: Client): Promise<Membership[]> {
  return (
    await source.query<Membership>(
      `SELECT pg_get_userbyid(m.roleid) AS role, pg_get_userbyid(m.member) AS member, m.admin_option AS "adminOption"
         FROM pg_auth_members m ORDER BY 1, 2`,
    )
  ).rows;
}

/** Attributes pgmove never copies (RDS refuses them; a migration must not widen privileges). */
export function droppedAttributes(role: SourceRole): string[] {
  return [role.superuser && 'SUPERUSER', role.replication && 'REPLICATION', role.bypassRls && 'BYPASSRLS'].filter((a): a is string => Boolean(a));
}

/** CREATE ROLE without SUPERUSER/REPLICATION/BYPASSRLS; LOGIN only with a password verifier. */
export function createRoleSql(role: SourceRole, passwordVerifier: string | undefined): string {
  const options = [
    role.login && passwordVerifier ? 'LOGIN' : 'NOLOGIN',
    role.inherit ? 'INHERIT' : 'NOINHERIT',
    role.createRole ? 'CREATEROLE' : 'NOCREATEROLE',
    role.createDb ? 'CREATEDB' : 'NOCREATEDB',
    `CONNECTION LIMIT ${Number(role.connectionLimit)}`,
    role.validUntil ? `VALID UNTIL ${escapeLiteral(role.validUntil)}` : '',
    passwordVerifier ? `PASSWORD ${escapeLiteral(passwordVerifier)}` : '',
  ].filter(Boolean);
  return `CREATE ROLE ${ident(role.name)} ${options.join(' ')}`;
}

/** `name=value` entries of setconfig as SET clauses. */
export function settingClauses(settings: string[]): { name: string; sql: string }[] {
  return settings.map((entry) => {
    const at = entry.indexOf('=');
    const name = entry.slice(0, at);
    return { name, sql: `SET ${ident(name)} = ${escapeLiteral(entry.slice(at + 1))}` };
  });
}

export function createDatabaseSql(database: SourceDatabase, targetName: string, owner: string, targetMajor: number): string {
  const options = [`TEMPLATE template0`, `ENCODING ${escapeLiteral(database.encoding)}`, `OWNER ${ident(owner)}`];
  if (database.localeProvider === 'i') options.push(`LOCALE_PROVIDER icu`, `ICU_LOCALE ${escapeLiteral(database.locale ?? 'und')}`);
  if (database.localeProvider === 'b') {
    if (targetMajor < 17) throw new Error(`database ${database.name} uses the builtin locale provider, which needs a target of PostgreSQL 17 or newer`);
    options.push(`LOCALE_PROVIDER builtin`, `BUILTIN_LOCALE ${escapeLiteral(database.locale ?? 'C')}`);
  }
  options.push(`LC_COLLATE ${escapeLiteral(database.collate)}`, `LC_CTYPE ${escapeLiteral(database.ctype)}`);
  if (database.connectionLimit >= 0) options.push(`CONNECTION LIMIT ${Number(database.connectionLimit)}`);
  return `CREATE DATABASE ${ident(targetName)} ${options.join(' ')}`;
}

/** A SCRAM-SHA-256 verifier (RFC 5802/7677) as PostgreSQL stores it: the server never sees the password. */
export function scramVerifier(password: string, iterations = 4096): string {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}
