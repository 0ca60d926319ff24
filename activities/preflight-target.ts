/**
 * Pre-flight's checks of the target: its write privileges, and that it has what the source's schema
 * needs (the extensions in use, the roles named by grants and owners).
 */
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { ConnectionInfo } from '../src/pg/connect';
import { ident } from '../src/pg/sql';
import type { PreflightCheck } from '../src/model';

export async function targetPrivilegeChecks(target: Client, info: ConnectionInfo): Promise<PreflightCheck[]> {
  const row = (
    await target.query<{ create_db: boolean; create_public: boolean }>(
      `SELECT has_database_privilege(current_database(), 'CREATE') AS create_db,
              coalesce(has_schema_privilege('public', 'CREATE'), true) AS create_public`,
    )
  ).rows[0];
  const fixes: string[] = [];
  if (!row?.create_db) fixes.push(`GRANT CREATE ON DATABASE ${ident(info.database)} TO ${ident(info.user)};`);
  if (!row?.create_public) fixes.push(`GRANT CREATE ON SCHEMA public TO ${ident(info.user)};`);
  return [
    {
      name: 'target write privileges',
      ok: fixes.length === 0,
      detail: fixes.length === 0 ? `${info.user} can create schemas and tables` : `${info.user} lacks CREATE privileges on the target`,
      fix: fixes.length ? `on the target, as an owner or superuser: ${fixes.join(' ')}` : undefined,
    },
  ];
}

export async function extensionCheck(source: Client, target: Client): Promise<PreflightCheck> {
  const used = (await source.query<{ extname: string }>(`SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1`)).rows.map((r) => r.extname);
  const available = new Set(
    (await target.query<{ name: string }>('SELECT name FROM pg_available_extensions')).rows.map((r) => r.name),
  );
  const missing = used.filter((name) => !available.has(name));
  return {
    name: 'extensions',
    ok: missing.length === 0,
    detail: missing.length === 0 ? `available on the target: ${used.join(', ') || 'none used'}` : `missing on the target: ${missing.join(', ')}`,
    fix: missing.length ? `install the packages that provide ${missing.join(', ')} on the target server (e.g. postgresql-<major>-<extension>), or allow them on RDS` : undefined,
  };
}

/** Roles named by the grants (and, without noOwner, the owners) in scope must exist on the target. */
export async function roleCheck(source: Client, target: Client, spec: MigrationSpec, rolesToCreate: string[]): Promise<PreflightCheck> {
  const inScope = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'`;
  const roles = (
    await source.query<{ rolname: string }>(
      `WITH acls AS (
         SELECT c.relacl AS acl, c.relowner AS owner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ${inScope}
         UNION ALL SELECT n.nspacl, n.nspowner FROM pg_namespace n WHERE ${inScope} AND n.nspname <> 'public'
         UNION ALL SELECT p.proacl, p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ${inScope}
         UNION ALL SELECT t.typacl, t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE ${inScope}
         UNION ALL SELECT a.attacl, NULL FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ${inScope} AND a.attacl IS NOT NULL
         UNION ALL SELECT m.lomacl, m.lomowner FROM pg_largeobject_metadata m)
       SELECT DISTINCT r.rolname FROM pg_roles r
        WHERE ($1 AND r.oid IN (SELECT (aclexplode(acl)).grantee FROM acls WHERE acl IS NOT NULL))
           OR ($2 AND r.oid IN (SELECT owner FROM acls))
        ORDER BY 1`,
      [!spec.dump.noPrivileges, !spec.dump.noOwner],
    )
  ).rows.map((r) => r.rolname);
  const existing = new Set((await target.query<{ rolname: string }>('SELECT rolname FROM pg_roles')).rows.map((r) => r.rolname).concat(rolesToCreate));
  const missing = roles.filter((role) => !existing.has(role));
  return {
    name: 'roles on the target',
    ok: missing.length === 0,
    detail: missing.length === 0 ? `all ${roles.length} role(s) named by grants${spec.dump.noOwner ? '' : ' and owners'} exist on the target` : `missing on the target: ${missing.join(', ')}`,
    fix: missing.length
      ? `create them on the target first (${missing.map((r) => `CREATE ROLE ${ident(r)} NOLOGIN;`).join(' ')}), or set dump.noPrivileges: true to leave grants out`
      : undefined,
  };
}
