/**
 * Phase 4, globals, for cluster migrations: the plan (which databases, each child's spec), then roles,
 * memberships and the target databases — made safe for RDS (no SUPERUSER/REPLICATION/BYPASSRLS, no
 * password hashes: LOGIN roles get passwords from the spec's references or are created NOLOGIN and
 * reported). Everything created carries an ownership mark (its comment) until the migration completes,
 * so a retry after a crash knows what it made, and an abort drops only that.
 */
import type { Client } from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import { childSpecFor, childWorkflowId, namedDatabases, parseClusterSpec, type ClusterSpec, type DatabaseEntry } from '../src/cluster-spec';
import { parsedOrBadSpec, type MigrationSpecInput } from '../src/spec';
import type { GlobalsReport } from '../src/model';
import { connect, connectionInfo, type ConnectionInfo } from '../src/pg/connect';
import { serverMajor } from '../src/pg/catalog';
import { ident, literal } from '../src/pg/sql';
import { resolveSecret } from '../src/secrets';
import {
  createDatabaseSql,
  createRoleSql,
  droppedAttributes,
  listMemberships,
  listSourceDatabases,
  listSourceRoles,
  ownershipMarker,
  scramVerifier,
  settingClauses,
  type SourceDatabase,
} from '../src/pg/globals-sql';
import { activityLogger } from '../src/log';
import { assertSpecSecretsAllowed } from '../src/secret-policy';
import { errorMessage } from '../src/error-text';

export interface PlannedDatabase {
  database: string;
  targetDatabase: string;
  workflowId: string;
  spec: MigrationSpecInput;
  /**
   * The source database's grants and comment, read before anything froze it: finishGlobals copies
   * these, not the fence a switched source keeps (cutover.sourceAfterSwitch: frozen).
   */
  sourceGrants?: SourceDatabase['grants'];
  sourceComment?: string | null;
}

export interface ClusterPlan {
  spec: ClusterSpec;
  databases: PlannedDatabase[];
  /** Roles the globals phase will create (absent on the target now): children's pre-flight counts them. */
  rolesToCreate: string[];
  /** The target's maintenance database, for pre-flight of databases that do not exist there yet. */
  targetMaintenanceDatabase: string;
}

/** Validates the cluster spec and resolves which databases it means on the source. */
export async function planCluster(input: unknown): Promise<ClusterPlan> {
  const spec = parsedOrBadSpec(() => parseClusterSpec(input));
  assertSpecSecretsAllowed(spec);
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  return withBoth(sourceInfo, targetInfo, async (source, target) => {
    const onSource = await listSourceDatabases(source);
    const entries = selectDatabases(spec, onSource.map((d) => d.name));
    const existingRoles = new Set((await target.query<{ rolname: string }>('SELECT rolname FROM pg_roles')).rows.map((r) => r.rolname));
    const rolesToCreate = spec.roles.migrate ? (await listSourceRoles(source)).map((r) => r.name).filter((name) => !existingRoles.has(name) && !spec.roles.exclude.includes(name)) : [];
    const databases: PlannedDatabase[] = parsedOrBadSpec(() =>
      entries.map((entry) => {
        const onSourceRow = onSource.find((d) => d.name === entry.name);
        return {
          database: entry.name,
          targetDatabase: entry.targetName ?? entry.name,
          workflowId: childWorkflowId(spec.id, entry.name),
          spec: childSpecFor(spec, entry),
          sourceGrants: onSourceRow?.grants ?? null,
          sourceComment: onSourceRow?.comment ?? null,
        };
      }),
    );
    return { spec, databases, rolesToCreate, targetMaintenanceDatabase: targetInfo.database };
  });
}

function selectDatabases(spec: ClusterSpec, onSource: string[]): DatabaseEntry[] {
  if (spec.databases === 'all') {
    return onSource.filter((name) => name !== 'postgres' && !spec.exceptDatabases.includes(name)).map((name) => ({ name }));
  }
  const entries = namedDatabases(spec);
  const missing = entries.filter((entry) => !onSource.includes(entry.name)).map((entry) => entry.name);
  if (missing.length) {
    throw ApplicationFailure.nonRetryable(
      `databases not found on the source (or not accepting connections): ${missing.join(', ')}; the source has ${onSource.join(', ')} — fix the names in databases`,
      'BadSpec',
    );
  }
  const duplicate = entries.map((e) => e.targetName ?? e.name).find((name, i, all) => all.indexOf(name) !== i);
  if (duplicate) throw ApplicationFailure.nonRetryable(`two databases would migrate into target database ${duplicate}: give one a targetName`, 'BadSpec');
  return entries;
}

export interface GlobalsInput {
  spec: ClusterSpec;
  databases: PlannedDatabase[];
}

/** Roles, memberships and target databases; idempotent (what exists with our mark was ours). */
export async function migrateGlobals(input: GlobalsInput): Promise<GlobalsReport> {
  const { spec } = input;
  const log = activityLogger('globals');
  const marker = ownershipMarker(spec.id);
  const report: GlobalsReport = { rolesCreated: [], rolesExisting: [], rolesNeedingPassword: [], attributesDropped: {}, membershipsGranted: 0, databasesCreated: [], databasesExisting: [], warnings: [] };
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  await withBoth(sourceInfo, targetInfo, async (source, target) => {
    const ours = await markedRoles(target, marker);
    const existing = new Set((await target.query<{ rolname: string }>('SELECT rolname FROM pg_roles')).rows.map((r) => r.rolname));
    if (spec.roles.migrate) {
      for (const role of await listSourceRoles(source)) {
        if (spec.roles.exclude.includes(role.name)) continue;
        if (existing.has(role.name) && !ours.has(role.name)) {
          report.rolesExisting.push(role.name);
          continue;
        }
        const dropped = droppedAttributes(role);
        if (dropped.length) report.attributesDropped[role.name] = dropped;
        const reference = spec.roles.passwords[role.name];
        const password = reference ? await resolveSecret(reference, `roles.passwords.${role.name}`) : undefined;
        if (role.login && !password) report.rolesNeedingPassword.push(role.name);
        if (!ours.has(role.name)) {
          await target.query('BEGIN');
          await target.query(createRoleSql(role, password === undefined ? undefined : scramVerifier(password)));
          await target.query(`COMMENT ON ROLE ${ident(role.name)} IS ${literal(marker)}`);
          await target.query('COMMIT');
          existing.add(role.name);
        }
        report.rolesCreated.push(role.name);
        for (const setting of settingClauses(role.settings)) {
          await target.query(`ALTER ROLE ${ident(role.name)} ${setting.sql}`).catch((error: Error) => report.warnings.push(`role ${role.name}: setting ${setting.name} not applied (${error.message})`));
        }
      }
      report.membershipsGranted = await grantMemberships(source, target, new Set(report.rolesCreated), existing, report.warnings);
    }
    const databases = new Map((await listSourceDatabases(source)).map((d) => [d.name, d]));
    const targetMajor = await serverMajor(target);
    for (const planned of input.databases) {
      const found = (await target.query<{ comment: string | null }>(`SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1`, [planned.targetDatabase])).rows[0];
      if (found && found.comment !== marker) {
        report.databasesExisting.push(planned.targetDatabase);
        continue;
      }
      if (!found) {
        const database = databases.get(planned.database)!;
        const owner = existing.has(database.owner) ? database.owner : targetInfo.user;
        try {
          await target.query(createDatabaseSql(database, planned.targetDatabase, owner, targetMajor));
        } catch (error) {
          throw ApplicationFailure.nonRetryable(
            `cannot create target database ${planned.targetDatabase} like the source's (${database.encoding}, collate ${database.collate}, ctype ${database.ctype}): ${errorMessage(error)}; create it on the target by hand (empty) and start again`,
            'GlobalsFailed',
          );
        }
        await target.query(`COMMENT ON DATABASE ${ident(planned.targetDatabase)} IS ${literal(marker)}`);
        await applyDatabaseSettings(target, database, planned.targetDatabase, existing, report.warnings);
      }
      report.databasesCreated.push(planned.targetDatabase);
    }
  });
  log.info({ roles: report.rolesCreated.length, databases: report.databasesCreated.length, needPassword: report.rolesNeedingPassword }, 'globals done');
  return report;
}

async function markedRoles(target: Client, marker: string): Promise<Set<string>> {
  const rows = (await target.query<{ rolname: string }>(`SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') = $1`, [marker])).rows;
  return new Set(rows.map((r) => r.rolname));
}

/** Memberships whose member pgmove created (pre-existing roles are not changed: reported instead). */
async function grantMemberships(source: Client, target: Client, created: Set<string>, existing: Set<string>, warnings: string[]): Promise<number> {
  let granted = 0;
  for (const membership of await listMemberships(source)) {
    if (!existing.has(membership.role) && !membership.role.startsWith('pg_')) continue;
    const sql = `GRANT ${ident(membership.role)} TO ${ident(membership.member)}${membership.adminOption ? ' WITH ADMIN OPTION' : ''}`;
    if (!created.has(membership.member)) {
      if (existing.has(membership.member)) {
        const has = (await target.query<{ ok: boolean }>('SELECT pg_has_role($1, $2, \'MEMBER\') AS ok', [membership.member, membership.role]).catch(() => ({ rows: [{ ok: false }] }))).rows[0]?.ok;
        if (!has) warnings.push(`${membership.member} existed on the target and was left as is; the source also grants it ${membership.role}: ${sql};`);
      }
      continue;
    }
    try {
      await target.query(sql);
      granted += 1;
    } catch (error) {
      warnings.push(`membership not granted (${errorMessage(error)}): ${sql};`);
    }
  }
  return granted;
}

/** ALTER DATABASE ... SET, and per-role settings in that database. Grants come at the end (finishGlobals). */
async function applyDatabaseSettings(target: Client, database: SourceDatabase, targetName: string, roles: Set<string>, warnings: string[]): Promise<void> {
  for (const setting of settingClauses(database.settings)) {
    await target.query(`ALTER DATABASE ${ident(targetName)} ${setting.sql}`).catch((error: Error) => warnings.push(`database ${targetName}: setting ${setting.name} not applied (${error.message})`));
  }
  for (const { role, settings } of database.roleSettings) {
    if (!roles.has(role)) continue;
    for (const setting of settingClauses(settings)) {
      await target.query(`ALTER ROLE ${ident(role)} IN DATABASE ${ident(targetName)} ${setting.sql}`).catch((error: Error) => warnings.push(`role ${role} in ${targetName}: ${setting.name} not applied (${error.message})`));
    }
  }
}

export interface FinishGlobalsInput {
  spec: ClusterSpec;
  /** Databases whose migration completed: they get the source's grants and comment. */
  completed: PlannedDatabase[];
}

/**
 * After the databases completed: database-level grants and comments as on the source, and the
 * ownership marks replaced by the source's comments (what was created is now the product).
 */
export async function finishGlobals(input: FinishGlobalsInput): Promise<{ warnings: string[] }> {
  const { spec } = input;
  const marker = ownershipMarker(spec.id);
  const warnings: string[] = [];
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  await withBoth(sourceInfo, targetInfo, async (source, target) => {
    const databases = new Map((await listSourceDatabases(source)).map((d) => [d.name, d]));
    const roles = new Set((await target.query<{ rolname: string }>('SELECT rolname FROM pg_roles')).rows.map((r) => r.rolname));
    for (const planned of input.completed) {
      const database = databases.get(planned.database);
      if (!database) continue;
      // As planned (before any freeze); a plan from before these fields existed reads them now.
      const grants = planned.sourceGrants !== undefined ? planned.sourceGrants : database.grants;
      const comment = planned.sourceComment !== undefined ? planned.sourceComment : database.comment;
      const name = ident(planned.targetDatabase);
      if (grants !== null) {
        // Non-default privileges: PUBLIC loses what the source took away, named roles get theirs.
        await target.query(`REVOKE ALL ON DATABASE ${name} FROM PUBLIC`);
        for (const grant of grants) {
          if (grant.grantee !== 'PUBLIC' && !roles.has(grant.grantee)) {
            warnings.push(`database ${planned.targetDatabase}: ${grant.privilege} for ${grant.grantee} not granted (no such role on the target)`);
            continue;
          }
          const grantee = grant.grantee === 'PUBLIC' ? 'PUBLIC' : ident(grant.grantee);
          await target.query(`GRANT ${grant.privilege} ON DATABASE ${name} TO ${grantee}${grant.grantable ? ' WITH GRANT OPTION' : ''}`);
        }
      }
      const current = (await target.query<{ comment: string | null }>(`SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1`, [planned.targetDatabase])).rows[0];
      if (current?.comment === marker) await target.query(`COMMENT ON DATABASE ${name} IS ${comment === null ? 'NULL' : literal(comment)}`);
    }
    const sourceComments = new Map((await listSourceRoles(source)).map((r) => [r.name, r.comment]));
    for (const role of await markedRoles(target, marker)) {
      const comment = sourceComments.get(role) ?? null;
      await target.query(`COMMENT ON ROLE ${ident(role)} IS ${comment === null ? 'NULL' : literal(comment)}`);
    }
  });
  return { warnings };
}

export interface DropGlobalsInput {
  spec: ClusterSpec;
  /** Target databases to drop when this migration created them (their migration did not complete). */
  databases: string[];
  /** Drop the roles this migration created (only when no migrated database is kept). */
  dropRoles: boolean;
}

/** Undo of the globals phase after an abort or a failure: only what carries this migration's mark. */
export async function dropGlobals(input: DropGlobalsInput): Promise<{ dropped: string[]; kept: string[] }> {
  const marker = ownershipMarker(input.spec.id);
  const targetInfo = await connectionInfo(input.spec.target, 'target');
  const dropped: string[] = [];
  const kept: string[] = [];
  const target = await connect(targetInfo, 'target', { applicationName: 'pgmove cleanup' });
  try {
    for (const name of input.databases) {
      const row = (await target.query<{ comment: string | null }>(`SELECT shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1`, [name])).rows[0];
      if (!row) continue;
      if (row.comment !== marker) {
        kept.push(`database ${name} (not created by this migration)`);
        continue;
      }
      await target.query(`DROP DATABASE ${ident(name)} WITH (FORCE)`);
      dropped.push(`database ${name}`);
    }
    if (input.dropRoles) {
      const roles = [...(await markedRoles(target, marker))];
      // Grants and default privileges of our roles may remain in databases we did not create (the
      // objects themselves were reset by the children): they were made by this migration too.
      if (roles.length) {
        const databases = (await target.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1')).rows.map((r) => r.datname);
        for (const database of databases) {
          const client = await connect({ ...targetInfo, database }, 'target', { applicationName: 'pgmove cleanup' });
          try {
            // One role at a time: a default ACL naming two of the roles fails a combined DROP OWNED
            // ("could not find tuple for default ACL").
            for (const role of roles) await client.query(`DROP OWNED BY ${ident(role)}`);
          } finally {
            await client.end().catch(() => undefined);
          }
        }
      }
      for (const role of roles) {
        try {
          await target.query(`DROP ROLE ${ident(role)}`);
          dropped.push(`role ${role}`);
        } catch (error) {
          kept.push(`role ${role} (${errorMessage(error)})`);
        }
      }
    }
  } finally {
    await target.end().catch(() => undefined);
  }
  return { dropped, kept };
}

async function withBoth<T>(sourceInfo: ConnectionInfo, targetInfo: ConnectionInfo, fn: (source: Client, target: Client) => Promise<T>): Promise<T> {
  const source = await connect(sourceInfo, 'source', { classify: true, applicationName: 'pgmove globals' });
  try {
    const target = await connect(targetInfo, 'target', { classify: true, applicationName: 'pgmove globals' });
    try {
      return await fn(source, target);
    } finally {
      await target.end().catch(() => undefined);
    }
  } finally {
    await source.end().catch(() => undefined);
  }
}
