/**
 * Phase 3, pre-flight: read-only checks of both sides before anything is written. Every failed check
 * carries the exact statement or action that fixes it; any failure ends the migration here with a
 * non-retryable error. The checks and the plan are assembled in preflight-report.ts.
 */
import type { Client } from 'pg';
import { validateSpec, type MigrationSpec } from '../src/spec';
import { classifyConnectError, connect, connectionInfo, type ConnectionInfo } from '../src/pg/connect';
import type { PreflightReport } from '../src/model';
import { foreignFenceCheck } from './freeze';
import { foreignTargetMarkerCheck } from '../src/pg/target-marker';
import { activityLogger } from '../src/log';
import { preflightFailure, sameDatabaseCheck } from './preflight-scope';
import { preflightReport } from './preflight-report';
import { assertSpecSecretsAllowed } from '../src/secret-policy';

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
      const report = await preflightReport(spec, source, target, sourceInfo, targetInfo, { willBeCreated, rolesToCreate: cluster?.rolesToCreate ?? [] });
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
