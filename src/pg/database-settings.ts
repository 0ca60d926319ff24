/**
 * Database-level settings: ALTER DATABASE ... SET and ALTER ROLE ... IN DATABASE ... SET of the
 * connected database. Post-data copies the source's to the target; a reset puts the target's back.
 */
import type { Client } from 'pg';
import { ident, literal } from './sql';

export interface DatabaseSetting {
  /** null: the database's own setting; else the role's in this database. */
  role: string | null;
  name: string;
  value: string;
}

export async function readDatabaseSettings(client: Client): Promise<DatabaseSetting[]> {
  const result = await client.query<{ role: string | null; setting: string }>(
    `SELECT r.rolname AS role, unnest(s.setconfig) AS setting
       FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
      WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())`,
  );
  return result.rows.map(({ role, setting }) => {
    const eq = setting.indexOf('=');
    return { role, name: setting.slice(0, eq), value: setting.slice(eq + 1) };
  });
}

/** Settings whose stored value is a list of quoted names (as pg_dump's variable_is_guc_list_quote). */
const LIST_SETTINGS = new Set(['search_path', 'temp_tablespaces', 'session_preload_libraries', 'local_preload_libraries', 'shared_preload_libraries', 'unix_socket_directories']);

/** A stored setting value as SQL: list settings element by element, anything else as one literal. */
export function settingValueSql(name: string, value: string): string {
  if (!LIST_SETTINGS.has(name)) return literal(value);
  const elements: string[] = [];
  const pattern = /\s*(?:"((?:[^"]|"")*)"|([^,\s][^,]*?))\s*(?:,|$)/gy;
  let match: RegExpExecArray | null;
  while (pattern.lastIndex < value.length && (match = pattern.exec(value)) !== null) {
    elements.push(match[1] !== undefined ? match[1].replace(/""/g, '"') : (match[2] ?? '').trim());
  }
  return elements.length ? elements.map(literal).join(', ') : literal(value);
}

/** Puts the connected database's settings back to `before` exactly (a reset target's former settings). */
export async function restoreDatabaseSettings(client: Client, before: DatabaseSetting[]): Promise<void> {
  const database = ident((await client.query<{ db: string }>('SELECT current_database() AS db')).rows[0]!.db);
  const scope = (role: string | null) => (role === null ? `DATABASE ${database}` : `ROLE ${ident(role)} IN DATABASE ${database}`);
  const now = await readDatabaseSettings(client);
  for (const role of new Set(now.map((s) => s.role))) await client.query(`ALTER ${scope(role)} RESET ALL`);
  for (const setting of before) await client.query(`ALTER ${scope(setting.role)} SET ${ident(setting.name)} = ${settingValueSql(setting.name, setting.value)}`);
}
