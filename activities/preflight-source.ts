/**
 * Pre-flight's checks of the source's privileges: reading every table and large object in scope, and
 * (when pgmove freezes it) making the database read-only and ending other sessions.
 */
import type { Client } from 'pg';
import type { ConnectionInfo } from '../src/pg/connect';
import type { TableInfo } from '../src/pg/catalog';
import { ident } from '../src/pg/sql';
import type { PreflightCheck } from '../src/model';

export async function sourcePrivilegeChecks(
  source: Client,
  tables: TableInfo[],
  info: ConnectionInfo,
  largeObjects: number,
): Promise<PreflightCheck[]> {
  const checks: PreflightCheck[] = [];
  const schemas = [...new Set(tables.map((t) => t.schema))];
  const noUsage = (
    await source.query<{ s: string }>(`SELECT s FROM unnest($1::text[]) s WHERE NOT has_schema_privilege(s, 'USAGE')`, [schemas])
  ).rows.map((r) => r.s);
  const unreadable = (
    await source.query<{ schema: string; name: string }>(
      `SELECT schema, name FROM unnest($1::text[], $2::text[]) AS t(schema, name)
        WHERE NOT has_table_privilege(format('%I.%I', schema, name), 'SELECT')`,
      [tables.map((t) => t.schema), tables.map((t) => t.name)],
    )
  ).rows;
  const fixes = [
    ...noUsage.map((s) => `GRANT USAGE ON SCHEMA ${ident(s)} TO ${ident(info.user)};`),
    ...[...new Set(unreadable.map((t) => t.schema))].map((s) => `GRANT SELECT ON ALL TABLES IN SCHEMA ${ident(s)} TO ${ident(info.user)};`),
  ];
  checks.push({
    name: 'source read privileges',
    ok: fixes.length === 0,
    detail: fixes.length === 0 ? `${info.user} can read all ${tables.length} table(s)` : `${info.user} cannot read ${unreadable.length} table(s) / ${noUsage.length} schema(s): ${unreadable.slice(0, 5).map((t) => `${t.schema}.${t.name}`).join(', ')}`,
    fix: fixes.length ? `on the source, as an owner or superuser: ${fixes.join(' ')}` : undefined,
  });
  if (largeObjects > 0) {
    const readable = await source
      .query('SELECT count(lo_get(oid, 0, 0)) FROM pg_largeobject_metadata')
      .then(() => true)
      .catch(() => false);
    checks.push({
      name: 'source large objects',
      ok: readable,
      detail: readable ? `${largeObjects} large object(s) readable` : `${info.user} cannot read every large object`,
      fix: readable ? undefined : `GRANT SELECT ON LARGE OBJECT <oid> TO ${ident(info.user)} for each, or run as their owner`,
    });
  }
  return checks;
}

export async function freezePrivilegeChecks(source: Client, info: ConnectionInfo): Promise<PreflightCheck[]> {
  const row = (
    await source.query<{ owner: boolean; superuser: boolean; signal: boolean }>(
      `SELECT pg_has_role(d.datdba, 'USAGE') AS owner,
              (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
              pg_has_role('pg_signal_backend', 'USAGE') AS signal
         FROM pg_database d WHERE d.datname = current_database()`,
    )
  ).rows[0];
  const canAlter = Boolean(row?.owner || row?.superuser);
  const canSignal = Boolean(row?.signal || row?.superuser);
  return [
    {
      name: 'source freeze privileges',
      ok: canAlter && canSignal,
      detail: canAlter && canSignal
        ? `${info.user} can make ${info.database} read-only and end other sessions`
        : `${info.user} ${canAlter ? '' : 'does not own the database'}${!canAlter && !canSignal ? ' and ' : ''}${canSignal ? '' : 'cannot end other sessions'}`,
      fix: canAlter && canSignal
        ? undefined
        : `${canAlter ? '' : `ALTER DATABASE ${ident(info.database)} OWNER TO ${ident(info.user)}; `}${canSignal ? '' : `GRANT pg_signal_backend TO ${ident(info.user)}; `}— or set freezeSource: false to copy at a snapshot instead`,
    },
  ];
}
