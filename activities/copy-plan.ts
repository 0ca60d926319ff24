/**
 * Phase 6 (offline) with the plan kept on the target: `storeCopyPlan` plans once and stores the units in
 * `pgmove_scratch` (a retry finds them), returning counts only; `copyPlannedUnit` copies unit N, read
 * from there, and returns totals; `dropCopyPlan` removes the scratch schema when the copy has ended.
 * The workflow's payloads and history stay small whatever the number of tables (README, "Many tables").
 */
import { Context } from '@temporalio/activity';
import type { MigrationSpec } from '../src/spec';
import type { CopyPlanSummary, PlannedUnitResult } from '../src/model';
import { connectionInfo, withClient } from '../src/pg/connect';
import { dropPlan, loadPlanSummary, loadUnit, markUnitDone, storePlan, summarizePlan } from '../src/pg/copy-plan-store';
import { stallTimeoutMs } from '../src/stall';
import { planCopy, runUnit } from './copy';

export interface PlanRefInput {
  spec: MigrationSpec;
  migrationId: string;
}

export async function storeCopyPlan(input: PlanRefInput): Promise<CopyPlanSummary> {
  const target = await connectionInfo(input.spec.target, 'target');
  // Stored once: a retry (or a continued run) copies exactly the units the first plan cut.
  const stored = await withClient(target, 'target', (client) => loadPlanSummary(client, input.migrationId));
  if (stored) return stored;
  const plan = await planCopy(input.spec);
  const summary = summarizePlan(plan);
  await withClient(target, 'target', (client) => storePlan(client, input.migrationId, plan, summary));
  return summary;
}

export async function copyPlannedUnit(input: PlanRefInput & { index: number }): Promise<PlannedUnitResult> {
  const previous = Context.current().info.heartbeatDetails as { completedTables?: { table: string; rows: number; bytes: number }[] } | undefined;
  const sourceInfo = await connectionInfo(input.spec.source, 'source');
  const targetInfo = await connectionInfo(input.spec.target, 'target');
  const unit = await withClient(targetInfo, 'target', (client) => loadUnit(client, input.migrationId, input.index));
  const result = await runUnit(unit, sourceInfo, targetInfo, undefined, previous?.completedTables ?? [], undefined, undefined, stallTimeoutMs(input.spec));
  const tablesDone = await withClient(targetInfo, 'target', (client) => markUnitDone(client, input.migrationId, input.index, unit));
  return {
    unitId: result.unitId,
    index: input.index,
    seconds: result.seconds,
    tables: result.tables.length,
    tablesDone,
    rows: result.tables.reduce((n, t) => n + t.rows, 0),
    bytes: result.tables.reduce((n, t) => n + t.bytes, 0),
    table: unit.tables.length === 1 ? result.tables[0] : undefined,
  };
}

export async function dropCopyPlan(input: PlanRefInput): Promise<void> {
  const target = await connectionInfo(input.spec.target, 'target');
  await withClient(target, 'target', (client) => dropPlan(client, input.migrationId));
}
