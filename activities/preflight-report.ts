/**
 * Pre-flight's report: runs every check of both sides (source-side in preflight-source.ts, target-side
 * in preflight-target.ts, scope in preflight-scope.ts, the rollback window's in preflight-rollback.ts),
 * chooses the method and says why, and lays out the plan with a size and duration estimate.
 */
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import { describeEndpoint, type ConnectionInfo } from '../src/pg/connect';
import { countLargeObjects, listSequences, listTables, serverMajor } from '../src/pg/catalog';
import { chooseClientTools } from '../src/pg/client-tools';
import type { LogicalPlan, PreflightCheck, PreflightReport } from '../src/model';
import { logicalReadiness } from './preflight-logical';
import { rollbackWindowChecks } from './preflight-rollback';
import { dmsReadiness } from './preflight-dms';
import { filterCheck, targetEmptyCheck } from './preflight-scope';
import { freezePrivilegeChecks, sourcePrivilegeChecks } from './preflight-source';
import { extensionCheck, roleCheck, targetPrivilegeChecks } from './preflight-target';

/** Throughput assumed per parallel job for the duration estimate (measured on 2 cores, binary COPY). */
const ASSUMED_MB_PER_SECOND_PER_JOB = 60;

/** Every check of both sides, the method and why, and the plan (the failed checks are the caller's to refuse). */
export async function preflightReport(
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
