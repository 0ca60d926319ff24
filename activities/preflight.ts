/**
 * Phase 3, pre-flight: read-only checks of both sides before anything is written. Every failed check
 * carries the exact statement or action that fixes it; any failure ends the migration here with a
 * non-retryable error.
 */
import type { Client } from 'pg';
import { validateSpec, type MigrationSpec } from '../src/spec';
import { classifyConnectError, connect, connectionInfo, describeEndpoint, type ConnectionInfo } from '../src/pg/connect';
import { countLargeObjects, listSequences, listTables, serverMajor, type TableInfo } from '../src/pg/catalog';
import { ident } from '../src/pg/sql';
import { chooseClientTools } from '../src/pg/client-tools';
import type { LogicalPlan, PreflightCheck, PreflightReport } from '../src/model';
import { logicalReadiness } from './preflight-logical';
import { rollbackWindowChecks } from './preflight-rollback';
import { foreignFenceCheck } from './freeze';
import { foreignTargetMarkerCheck } from '../src/pg/target-marker';
import { dmsReadiness } from './preflight-dms';
import { activityLogger } from '../src/log';
import { filterCheck, preflightFailure, sameDatabaseCheck, targetEmptyCheck } from './preflight-scope';
import { assertSpecSecretsAllowed } from '../src/secret-policy';

/** Throughput assumed per parallel job for the duration estimate (measured on 2 cores, binary COPY). */
const ASSUMED_MB_PER_SECOND_PER_JOB = 60;

export interface PreflightResult {
  spec: MigrationSpec;
  report: PreflightReport;
}

/** Set by a cluster migration, whose globals phase creates the target database and roles afterwards. */
export interface ClusterPreflightOptions {
  /** The target database may not exist yet: its server is checked through this database instead. */
  targetMaintenanceDatabase: string;
  /** Roles the cluster migration creates before this database migrates. */
  rolesToCreate: string[];
}

export async function preflight(specInput: unknown, cluster?: ClusterPreflightOptions, migrationId?: string): Promise<PreflightResult> {
  const spec = validateSpec(specInput);
  assertSpecSecretsAllowed(spec);
  const log = activityLogger('preflight');
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  const source = await connect(sourceInfo, 'source', { classify: true });
  try {
    const { target, willBeCreated } = await connectTarget(targetInfo, cluster);
    try {
      // A database that does not exist yet is not the source. Refused alone and first: every other
      // check would only describe the source twice.
      const distinct = willBeCreated ? undefined : await sameDatabaseCheck(source, target, sourceInfo, targetInfo);
      if (distinct && !distinct.check.ok) throw preflightFailure([distinct.check]);
      const report = await inspect(spec, source, target, sourceInfo, targetInfo, { willBeCreated, rolesToCreate: cluster?.rolesToCreate ?? [] });
      if (distinct?.sameServer) report.notes.push(`source and target are databases of one server: ${distinct.check.detail}`);
      const fenced = await foreignFenceCheck(source, sourceInfo.database, migrationId);
      if (fenced) report.checks.push(fenced);
      const claimed = willBeCreated ? undefined : await foreignTargetMarkerCheck(target, migrationId);
      if (claimed) report.checks.push(claimed);
      const failed = report.checks.filter((check) => !check.ok);
      log.info({ failed: failed.length, tables: report.tables, bytes: report.totalBytes }, 'pre-flight finished');
      if (failed.length > 0) throw preflightFailure(failed, report);
      return { spec, report };
    } finally {
      await target.end().catch(() => undefined);
    }
  } finally {
    await source.end().catch(() => undefined);
  }
}

/** The target database, or (cluster migration, database not created yet) the target's maintenance database. */
async function connectTarget(info: ConnectionInfo, cluster: ClusterPreflightOptions | undefined): Promise<{ target: Client; willBeCreated: boolean }> {
  if (!cluster) return { target: await connect(info, 'target', { classify: true }), willBeCreated: false };
  try {
    return { target: await connect(info, 'target'), willBeCreated: false };
  } catch (error) {
    if ((error as { code?: string }).code !== '3D000') throw classifyConnectError(error, info, 'target');
    return { target: await connect({ ...info, database: cluster.targetMaintenanceDatabase }, 'target', { classify: true }), willBeCreated: true };
  }
}

async function inspect(
  spec: MigrationSpec,
  source: Client,
  target: Client,
  sourceInfo: ConnectionInfo,
  targetInfo: ConnectionInfo,
  cluster: { willBeCreated: boolean; rolesToCreate: string[] },
): Promise<PreflightReport> {
  const checks: PreflightCheck[] = [];
  const notes: string[] = [];
  const sourceMajor = await serverMajor(source);
  const targetMajor = await serverMajor(target);
  const sourceVersion = await scalar(source, 'SHOW server_version');
  const targetVersion = await scalar(target, 'SHOW server_version');

  checks.push({
    name: 'versions',
    ok: targetMajor >= sourceMajor,
    detail: `source ${sourceVersion}, target ${targetVersion}`,
    fix: targetMajor >= sourceMajor ? undefined : `use a target of major ${sourceMajor} or newer: PostgreSQL cannot load into an older major`,
  });

  const tools = await chooseClientTools(sourceMajor, spec.tools.pgBinDir).catch((error: Error) => error);
  if (tools instanceof Error) {
    checks.push({ name: 'client tools', ok: false, detail: tools.message });
  } else {
    const ok = tools.major >= sourceMajor;
    checks.push({
      name: 'client tools',
      ok,
      detail: `pg_dump ${tools.version} from ${tools.binDir}`,
      fix: ok ? undefined : `pg_dump ${tools.major} is older than the source (${sourceMajor}): set tools.pgBinDir to PostgreSQL ${sourceMajor}+ client tools`,
    });
  }

  checks.push(await filterCheck(source, spec));
  const tables = await listTables(source, spec);
  const sequences = await listSequences(source, spec);
  const largeObjects = await countLargeObjects(source);
  checks.push(...(await sourcePrivilegeChecks(source, tables, sourceInfo, largeObjects)));
  const logical = spec.method === 'dump' || spec.method === 'dms' ? undefined : await logicalReadiness(spec, source, target, tables, largeObjects, sourceInfo, targetInfo);
  // DMS is offered only when the spec enables it (a dms: block); auto prefers native logical replication.
  // Only when it may be chosen: measuring LOB sizes scans every table holding LOB columns.
  const dmsCandidate = spec.method === 'dms' || (spec.method === 'auto' && (logical?.blockers.length ?? 0) > 0);
  const dms = spec.dms?.enabled && dmsCandidate ? await dmsReadiness(spec, source, tables) : undefined;
  const method =
    spec.method === 'logical' || (spec.method === 'auto' && logical?.blockers.length === 0)
      ? 'logical'
      : spec.method === 'dms' || (spec.method === 'auto' && dms?.blockers.length === 0)
        ? 'dms'
        : 'dump';
  if (spec.method === 'dms') {
    checks.push(
      ...(dms!.blockers.length
        ? dms!.blockers.map((b) => ({ name: 'dms', ok: false, detail: b.detail, fix: b.fix }))
        : [{ name: 'dms', ok: true, detail: `logical decoding on; ${dms!.plan.lobColumns} LOB column(s), largest value ${dms!.plan.maxLobBytes} bytes` }]),
    );
  }
  if (spec.method === 'logical') {
    checks.push(
      ...(logical!.blockers.length
        ? logical!.blockers.map((b) => ({ name: 'logical replication', ok: false, detail: b.detail, fix: `${b.fix} — or set method: dump (offline copy)` }))
        : [{ name: 'logical replication', ok: true, detail: 'the source can publish and keep a slot; the target can subscribe and reach it' }]),
    );
  }
  // The source is frozen for the offline copy, or at the logical cutover (unless a hook does it).
  if (method === 'dump' ? spec.freezeSource : spec.cutover.freeze === 'readOnly') checks.push(...(await freezePrivilegeChecks(source, sourceInfo)));
  checks.push(
    cluster.willBeCreated
      ? { name: 'target is empty', ok: true, detail: `${describeEndpoint(targetInfo)} does not exist yet: the cluster migration creates it` }
      : await targetEmptyCheck(target, targetInfo),
  );
  checks.push(...(await targetPrivilegeChecks(target, targetInfo)));
  checks.push(...(await rollbackWindowChecks({ spec, method, source, target, sourceInfo, targetInfo, tables, largeObjects })));
  checks.push(await extensionCheck(source, target));
  if (!spec.dump.noPrivileges || !spec.dump.noOwner) checks.push(await roleCheck(source, target, spec, cluster.rolesToCreate));

  const noPk = tables.filter((t) => !t.hasPrimaryKey).map((t) => `${t.schema}.${t.name}`);
  if (noPk.length) notes.push(`${noPk.length} table(s) without a primary key (fine offline; online methods need one): ${noPk.slice(0, 10).join(', ')}`);
  const unlogged = tables.filter((t) => t.unlogged).map((t) => `${t.schema}.${t.name}`);
  const atCutover = method === 'logical' ? ' inside the cutover freeze (logical replication does not carry them)' : ' like the others';
  if (unlogged.length) notes.push(`${unlogged.length} unlogged table(s), copied${atCutover}: ${unlogged.slice(0, 10).join(', ')}`);
  if (largeObjects) notes.push(`${largeObjects} large object(s), copied${method === 'logical' ? atCutover : ' after the tables'}`);
  if (method === 'logical' && logical!.plan.replicaIdentityFull.length) {
    notes.push(`REPLICA IDENTITY FULL is set on ${logical!.plan.replicaIdentityFull.length} table(s) for the migration and restored afterwards: ${logical!.plan.replicaIdentityFull.slice(0, 10).join(', ')}`);
  }
  if (method === 'dump' && !spec.freezeSource) {
    notes.push('freezeSource is false: the copy runs at one exported snapshot while the source stays writable; a crash during the copy restarts the whole copy at a new snapshot, and writes after the snapshot are not migrated');
  }

  const totalBytes = tables.reduce((sum, t) => sum + t.bytes, 0);
  const parallel = Math.max(1, Math.min(spec.jobs, tables.length));
  const estimatedSeconds = Math.ceil(totalBytes / (parallel * ASSUMED_MB_PER_SECOND_PER_JOB * 1024 * 1024)) + 5;
  const methodReason =
    spec.method === 'dump' || spec.method === 'dms'
      ? `forced by the spec (method: ${spec.method})`
      : spec.method === 'logical'
        ? 'forced by the spec (method: logical)'
        : method === 'logical'
          ? 'auto: the source allows logical replication (wal_level = logical, a free slot and WAL sender, publication and slot privileges) and the target can subscribe and reach it'
          : method === 'dms'
            ? `auto: AWS DMS (enabled by the spec's dms block), because native logical replication is not possible: ${logical!.blockers.map((b) => b.detail).join('; ')}`
            : `auto: dump (source frozen for the copy), because logical is not possible: ${logical!.blockers.map((b) => `${b.detail} (fix: ${b.fix})`).join('; ')}`;
  if (dms?.plan.excludedTables.length) notes.push(`dms: ${dms.plan.excludedTables.length} table(s) without a primary key are left out of the task: ${dms.plan.excludedTables.slice(0, 10).join(', ')}`);
  const plan = method === 'dms' ? dmsPlanSteps() : method === 'logical' ? logicalPlanSteps(spec, tables.length, totalBytes, sequences.length, logical!.plan) : [
    spec.freezeSource
      ? `freeze ${describeEndpoint(sourceInfo)} (read-only, CONNECT revoked from application roles, their sessions ended) for the copy`
      : 'copy at one exported snapshot; the source stays writable',
    `pre-data schema with pg_dump ${tools instanceof Error ? '?' : tools.version} → ${describeEndpoint(targetInfo)}`,
    `copy ${tables.length} table(s), ${(totalBytes / 1024 / 1024).toFixed(1)} MB, ${spec.jobs} job(s) in parallel${largeObjects ? `, then ${largeObjects} large object(s)` : ''}`,
    'post-data (indexes, constraints, triggers) in parallel',
    `set ${sequences.length} sequence(s) from the source`,
    `validate row counts${spec.validate.checksums ? ' and checksums' : ''}, sequences and schema objects`,
  ];
  const targetExtensions = (await target.query<{ extname: string }>('SELECT extname FROM pg_extension ORDER BY 1')).rows.map((r) => r.extname);
  return {
    targetExtensions,
    sourceVersion,
    targetVersion,
    clientTools: tools instanceof Error ? { binDir: '', version: '' } : { binDir: tools.binDir, version: tools.version },
    method,
    methodReason,
    logicalBlockers: (logical?.blockers ?? []).map((b) => `${b.detail} (fix: ${b.fix})`),
    logical: method === 'logical' ? logical!.plan : undefined,
    dms: method === 'dms' ? dms!.plan : undefined,
    tables: tables.length,
    sequences: sequences.length,
    largeObjects,
    totalBytes,
    estimatedSeconds,
    checks,
    notes,
    plan,
  };
}

function dmsPlanSteps(): string[] {
  return [
    'pre-data schema with pg_dump → target',
    'DMS replication subnet group, replication instance, source and target endpoints, task full-load-and-cdc',
    'start the task; follow the full load (tables loaded/errored), then post-data (indexes, constraints)',
    'sync (CDC) until the cutover: freeze the source, wait until the DMS slot has confirmed the frozen WAL position, stop the task, set sequences, validate',
    'delete the DMS resources',
  ];
}

function logicalPlanSteps(spec: MigrationSpec, tables: number, totalBytes: number, sequences: number, plan: LogicalPlan): string[] {
  return [
    'pre-data schema with pg_dump → target',
    `publication + replication slot on the source; copy ${tables} table(s), ${(totalBytes / 1024 / 1024).toFixed(1)} MB, at the slot's snapshot, ${spec.jobs} job(s) in parallel; the source stays writable`,
    'post-data (indexes, constraints, triggers) in parallel, then the subscription streams changes from the slot',
    `syncing: waits for the cutover signal or update${spec.cutover.autoCutover ? ' (autoCutover is on)' : ''}; lag and retained WAL in the status`,
    `cutover: freeze the source (${spec.cutover.freeze}), drain, set ${sequences} sequence(s)${plan.unloggedTables.length || plan.largeObjects ? ', copy unlogged tables and large objects' : ''}, compare row counts${spec.cutover.switchHook ? ', run the switch hook' : ''}`,
    `validate checksums${spec.validate.checksums ? '' : ' (off: counts only)'}; drop subscription, slot and publication; ${spec.cutover.sourceAfterSwitch === 'frozen' && spec.cutover.freeze === 'readOnly' ? 'the old source stays frozen (pgmove unfreeze ID releases it)' : 'unfreeze the source'}`,
  ];
}

async function scalar(client: Client, sql: string, params: unknown[] = []): Promise<string> {
  const result = await client.query(sql, params);
  const row = result.rows[0] as Record<string, unknown> | undefined;
  return row ? String(Object.values(row)[0]) : '';
}

async function sourcePrivilegeChecks(
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

async function freezePrivilegeChecks(source: Client, info: ConnectionInfo): Promise<PreflightCheck[]> {
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

async function targetPrivilegeChecks(target: Client, info: ConnectionInfo): Promise<PreflightCheck[]> {
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

async function extensionCheck(source: Client, target: Client): Promise<PreflightCheck> {
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
async function roleCheck(source: Client, target: Client, spec: MigrationSpec, rolesToCreate: string[]): Promise<PreflightCheck> {
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
