/**
 * What `pgmove status` and the progress display show: the workflow's `status` query merged with the
 * heartbeat details of its running activities (progress inside a table that is still copying).
 */
import type { WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter, fromPayloadsAtIndex } from '@temporalio/common';
import type { MigrationStatus } from '../model';
import type { Stall } from '../stall';
import { statusQuery } from '../../workflows/messages';
import { copyGenerationsSummary } from '../../workflows/status-markdown';

export interface InFlight {
  activity: string;
  attempt: number;
  details: Record<string, unknown> | undefined;
  lastFailure?: string;
}

export interface StatusSnapshot {
  status: MigrationStatus;
  running: boolean;
  workflowStatus: string;
  inFlight: InFlight[];
  /** Bytes copied including units still running. */
  liveBytes: number;
  liveRows: number;
}

export async function snapshot(handle: WorkflowHandle): Promise<StatusSnapshot> {
  const description = await handle.describe();
  const status = await handle.query(statusQuery);
  const inFlight: InFlight[] = (description.raw.pendingActivities ?? []).map((activity) => ({
    activity: activity.activityType?.name ?? '?',
    attempt: activity.attempt ?? 1,
    details: activity.heartbeatDetails?.payloads?.length
      ? fromPayloadsAtIndex<Record<string, unknown>>(defaultPayloadConverter, 0, activity.heartbeatDetails.payloads)
      : undefined,
    lastFailure: activity.lastFailure?.message ?? undefined,
  }));
  let liveBytes = status.totals.bytes;
  let liveRows = status.totals.rows;
  for (const activity of inFlight) {
    if ((activity.activity === 'copyAtSnapshot' || activity.activity === 'copyAtSlot') && activity.details) {
      liveBytes += Number(activity.details.bytes ?? 0);
      liveRows += Number(activity.details.rows ?? 0);
    }
    if ((activity.activity === 'copyUnit' || activity.activity === 'copyPlannedUnit') && activity.details) {
      const done = (activity.details.completedTables as { rows: number; bytes: number }[] | undefined) ?? [];
      liveBytes += Number(activity.details.bytes ?? 0) + done.reduce((s, t) => s + t.bytes, 0);
      liveRows += Number(activity.details.rows ?? 0) + done.reduce((s, t) => s + t.rows, 0);
    }
  }
  return { status, running: description.status.name === 'RUNNING', workflowStatus: description.status.name, inFlight, liveBytes, liveRows };
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

export function renderStatus(view: StatusSnapshot): string {
  const { status } = view;
  const lines = [
    `migration ${status.migrationId}: ${status.phase} (workflow ${view.workflowStatus})`,
    `method    ${status.method}${status.methodReason ? ` — ${status.methodReason}` : ''}`,
  ];
  const p = status.provisioned;
  if (p) {
    lines.push(`target    RDS instance ${p.instanceIdentifier} (${p.region}) at ${p.endpoint.host}:${p.endpoint.port}, data path ${p.dataPath.host}:${p.dataPath.port}, password ${p.passwordRef}`);
    lines.push(...p.resources.map((r) => `  aws     ${r.kind} ${r.id}${r.detail ? ` — ${r.detail}` : ''}${r.reused ? ' (reused from an earlier attempt)' : ''}`));
  }
  for (const r of status.dms?.resources ?? []) lines.push(`dms       ${r.kind} ${r.id}${r.detail ? ` — ${r.detail}` : ''}${r.reused ? ' (reused)' : ''}`);
  const t = status.dms?.task;
  if (t) lines.push(`dms task  ${t.status}, full load ${t.fullLoadPercent}%, ${t.tablesLoaded} loaded, ${t.tablesLoading} loading, ${t.tablesQueued} queued, ${t.tablesErrored} errored${t.lastFailure ? ` — ${t.lastFailure}` : ''}`);
  for (const r of status.awsCleanup?.deleted ?? []) lines.push(`deleted   ${r.kind} ${r.id}`);
  for (const kept of status.awsCleanup?.kept ?? []) lines.push(`kept      ${kept}`);
  if (status.totals.tables) {
    lines.push(`tables    ${status.totals.tablesDone}/${status.totals.tables} done, ${view.liveRows} rows, ${mb(view.liveBytes)} copied of ~${mb(status.totals.totalBytes)}`);
    const rows = Object.entries(status.tables)
      .sort(([, a], [, b]) => b.totalBytes - a.totalBytes)
      .slice(0, 25)
      .map(([name, t]) => `  ${t.done ? 'done' : `${t.unitsDone}/${t.units}`.padEnd(4)}  ${String(t.rows).padStart(10)} rows  ${mb(t.bytes).padStart(10)}  ${name}`);
    lines.push(...rows);
    if (Object.keys(status.tables).length > 25) lines.push(`  … ${Object.keys(status.tables).length - 25} more`);
    else if (status.totals.tables > Object.keys(status.tables).length) lines.push(`  (the ${Object.keys(status.tables).length} largest of ${status.totals.tables} tables)`);
  }
  const c = status.copyUnits;
  if (c) {
    lines.push(`units     ${c.done}/${c.units} copy units done, in ${c.runs} workflow run(s)`);
    for (const u of c.slowest.slice(0, 5)) lines.push(`  slow    ${u.seconds.toFixed(1).padStart(7)} s  ${String(u.rows).padStart(10)} rows  ${u.tables} table(s)  ${u.unit}`);
  }
  const generations = copyGenerationsSummary(status.copyGenerations);
  if (generations) lines.push(`resumed   ${generations}`);
  for (const activity of view.inFlight) {
    const { stalled, ...details } = activity.details ?? {};
    lines.push(`running   ${activity.activity} (attempt ${activity.attempt})${activity.details ? ` ${JSON.stringify(details).slice(0, 200)}` : ''}${activity.lastFailure ? ` — last failure: ${activity.lastFailure}` : ''}`);
    // The stall watchdog's finding (src/stall.ts): why progress has not moved, and who blocks it.
    const summary = (stalled as Stall | undefined)?.summary;
    if (summary) lines.push(`stalled   ${activity.activity} ${summary}`);
  }
  const timings = Object.entries(status.timings).map(([phase, t]) => `${phase} ${t?.seconds !== undefined ? `${t.seconds.toFixed(1)}s` : 'running'}`);
  if (timings.length) lines.push(`timings   ${timings.join(', ')}`);
  if (status.preflight?.notes.length) lines.push(...status.preflight.notes.map((n) => `note      ${n}`));
  const r = status.replication;
  if (r) lines.push(`stream    lag ${r.lagBytes} bytes / ${r.lagSeconds.toFixed(1)} s, slot holds ${mb(r.retainedWalBytes)} of WAL, ${r.streaming ? 'streaming' : 'NOT streaming'}, ${r.applyErrors} apply error(s) (as of ${r.measuredAt})`);
  if (status.phase === 'syncing') lines.push(`cutover   when ready: pgmove cutover ${status.migrationId}`);
  for (const a of status.cutovers ?? []) {
    const window = a.freezeToReadyMs !== undefined ? `: write freeze ${a.freezeToReadyMs} ms until the target was ready, ${a.freezeToSwitchedMs} ms until switched ${JSON.stringify(a.steps)}` : '';
    lines.push(`cutover   ${a.startedAt} by ${a.requestedBy}: ${a.outcome}${window}${a.error ? ` — ${a.error}` : ''}`);
  }
  for (const warning of [...(status.warnings ?? []), ...(r?.warning ? [r.warning] : [])]) lines.push(`warning   ${warning}`);
  if (status.validation) lines.push(`validate  ${status.validation.summary}`);
  const e = status.privilegeElevation;
  if (e) {
    const changed = e.elevated ? `${e.statements.join(' ')}; granted as ${e.superuser} through a trust line in ${e.hbaFile}, taken out right after` : e.reason;
    lines.push(`privilege ${changed}${e.revertedAt ? ` — reverted ${e.revertedAt}` : e.elevated ? ' — reverted in cleanup' : ''}`);
  }
  if (status.cleanupOwed.length) lines.push(`owed      ${status.cleanupOwed.join('; ')}`);
  for (const failure of status.cleanupFailed ?? []) lines.push(`cleanup   ${failure.step} failed (${failure.error.split('\n')[0]}): finish it with \`${failure.byHand}\``);
  for (const error of status.errors) lines.push(`error     ${error}`);
  return lines.join('\n');
}
