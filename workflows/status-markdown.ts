/** The short Markdown status shown as "Current Details" in the Temporal Web UI. Pure: workflow-safe. */
import type { ClusterStatus, CopyGeneration, DatabaseRow, MigrationStatus } from '../src/model';

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

/**
 * The logical copy after a crash: what earlier generations kept and what the last one copied again
 * (undefined when the copy ran in one generation).
 */
export function copyGenerationsSummary(generations: CopyGeneration[] | undefined): string | undefined {
  if (!generations || generations.length < 2) return undefined;
  const part = (g: CopyGeneration) => `${g.unitCount ?? g.units.length} unit(s), ${g.tables} table(s), ${g.rows} rows, ${mb(g.bytes)} at generation ${g.generation} (slot ${g.slot})`;
  const last = generations[generations.length - 1]!;
  return `kept ${generations.slice(0, -1).map(part).join('; ')}; copied again ${part(last)}`;
}

export function renderStatusMarkdown(status: MigrationStatus): string {
  const lines = [`## ${status.migrationId}: ${status.phase}`, ''];
  lines.push(`- **method**: ${status.method}${status.methodReason ? ` — ${status.methodReason}` : ''}`);
  const p = status.provisioned;
  if (p) {
    lines.push(`- **target instance**: ${p.instanceIdentifier} (${p.region}) at ${p.endpoint.host}:${p.endpoint.port}${p.dataPath.host !== p.endpoint.host ? `, data path ${p.dataPath.host}:${p.dataPath.port}` : ''}`);
    lines.push(`- **AWS resources**: ${p.resources.map((r) => `${r.kind} ${r.id}${r.reused ? ' (reused)' : ''}`).join(', ')}`);
  }
  const t = status.dms?.task;
  if (t) lines.push(`- **DMS task**: ${t.status}, full load ${t.fullLoadPercent}%, ${t.tablesLoaded} table(s) loaded, ${t.tablesLoading} loading, ${t.tablesQueued} queued, ${t.tablesErrored} errored`);
  if (status.awsCleanup?.deleted.length) lines.push(`- **AWS deleted**: ${status.awsCleanup.deleted.map((r) => `${r.kind} ${r.id}`).join(', ')}`);
  if (status.totals.tables > 0) {
    lines.push(
      `- **tables**: ${status.totals.tablesDone}/${status.totals.tables} done, ${status.totals.rows} rows, ${mb(status.totals.bytes)} copied (of ~${mb(status.totals.totalBytes)} on disk)`,
    );
  }
  const c = status.copyUnits;
  if (c) {
    lines.push(`- **copy units**: ${c.done}/${c.units} done in ${c.runs} workflow run(s)${c.indexesBuilt ? `, ${c.indexesBuilt} indexes built as their tables finished` : ''}`);
    if (c.slowest.length) lines.push(`- **slowest units**: ${c.slowest.slice(0, 3).map((u) => `${u.unit} ${u.seconds.toFixed(1)}s`).join(', ')}`);
  }
  const generations = copyGenerationsSummary(status.copyGenerations);
  if (generations) lines.push(`- **copy resumed**: ${generations}`);
  const timings = Object.entries(status.timings)
    .filter(([, t]) => t?.seconds !== undefined)
    .map(([phase, t]) => `${phase} ${t?.seconds?.toFixed(1)}s`);
  if (timings.length) lines.push(`- **timings**: ${timings.join(', ')}`);
  const r = status.replication;
  if (r && (status.phase === 'syncing' || status.phase === 'cutover')) {
    lines.push(`- **lag**: ${r.lagBytes} bytes, ${r.lagSeconds.toFixed(1)} s; slot holds ${mb(r.retainedWalBytes)} of WAL; ${r.streaming ? 'streaming' : 'NOT streaming'} (as of ${r.measuredAt})`);
    if (status.phase === 'syncing') lines.push(`- **waiting for cutover**: \`pgmove cutover ${status.migrationId}\` or signal \`cutover\``);
  }
  for (const attempt of status.cutovers ?? []) {
    lines.push(`- **cutover** by ${attempt.requestedBy}: ${attempt.outcome}${attempt.freezeToReadyMs !== undefined ? `, write freeze ${attempt.freezeToReadyMs} ms until the target was ready, ${attempt.freezeToSwitchedMs} ms until switched` : ''}${attempt.error ? ` — ${attempt.error.split('\n')[0]}` : ''}`);
  }
  lines.push(...rollbackLines(status));
  for (const warning of [...(status.warnings ?? []).slice(-3), ...(r?.warning ? [r.warning] : [])]) lines.push(`- **warning**: ${warning}`);
  if (status.validation) lines.push(`- **validation**: ${status.validation.summary.split('\n')[0]}`);
  const e = status.privilegeElevation;
  if (e?.elevated) lines.push(`- **privileges**: ${e.statements.join(' ')} (granted as ${e.superuser}; pg_hba.conf trust line only while granting) — ${e.revertedAt ? `reverted ${e.revertedAt}` : 'reverted in cleanup'}`);
  if (status.cleanupOwed.length) lines.push(`- **cleanup owes**: ${status.cleanupOwed.join('; ')}`);
  for (const failure of status.cleanupFailed ?? []) lines.push(`- **cleanup step failed**: ${failure.step} — finish it with \`${failure.byHand}\``);
  if (status.errors.length) {
    lines.push('', '### errors', ...status.errors.slice(-5).map((e) => `- ${e.split('\n')[0]}`));
  }
  return lines.join('\n');
}

/** cutover.rollbackWindow: the reverse stream while the window is open, the rollback attempts, how it ended. */
function rollbackLines(status: MigrationStatus): string[] {
  const w = status.rollback;
  if (!w) return [];
  const lines: string[] = [];
  const r = w.reverse;
  if (w.state === 'open') {
    lines.push(`- **rollback window**: open until ${w.until}; \`pgmove rollback ${status.migrationId}\` switches back to the source, \`pgmove finalize ${status.migrationId}\` ends the window`);
    if (r) lines.push(`- **reverse stream**: the source is ${r.lagBytes} bytes behind the target; the reverse slot holds ${mb(r.retainedWalBytes)} of WAL on the target; ${r.streaming ? 'streaming' : 'NOT streaming'} (as of ${r.measuredAt})${r.warning ? ` — ${r.warning}` : ''}`);
  } else {
    lines.push(`- **rollback window**: ${w.state}${w.endedBecause ? ` — ${w.endedBecause}` : ''}`);
  }
  for (const attempt of w.attempts ?? []) {
    lines.push(`- **rollback** by ${attempt.requestedBy}: ${attempt.outcome}${attempt.freezeToReadyMs !== undefined ? `, target frozen ${attempt.freezeToReadyMs} ms until the source was ready, ${attempt.freezeToSwitchedMs} ms until switched back` : ''}${attempt.error ? ` — ${attempt.error.split('\n')[0]}` : ''}`);
  }
  return lines;
}

/** The cluster parent's Current Details: one line per database (lists render well in the Web UI). */
export function renderClusterMarkdown(status: ClusterStatus): string {
  const counts = (state: DatabaseRow['status']) => status.databases.filter((r) => r.status === state).length;
  const lines = [
    `## ${status.migrationId}: ${status.phase}`,
    '',
    `- **databases**: ${counts('completed')} completed, ${counts('running')} running, ${counts('pending')} pending, ${counts('failed')} failed, ${counts('skipped')} skipped, ${counts('aborted')} aborted (concurrency ${status.concurrency})`,
  ];
  for (const r of status.databases) {
    const took = r.seconds !== undefined ? `, ${r.seconds.toFixed(1)} s` : '';
    lines.push(`- **${r.database}** → ${r.targetDatabase}: ${r.status}, ${r.method}, phase ${r.phase}${took}${r.error ? ` — ${r.error.split('\n')[0]}` : ''}`);
  }
  const g = status.globals;
  if (g) {
    lines.push(`- **roles**: ${g.rolesCreated.length} created, ${g.rolesExisting.length} already there${g.rolesNeedingPassword.length ? `; NOLOGIN until you set a password: ${g.rolesNeedingPassword.join(', ')}` : ''}`);
  }
  for (const attempt of status.cutovers ?? []) lines.push(`- **cluster cutover** by ${attempt.requestedBy}: ${attempt.outcome}${attempt.error ? ` — ${attempt.error.split('\n')[0]}` : ''}`);
  for (const warning of status.warnings.slice(-3)) lines.push(`- **warning**: ${warning.split('\n')[0]}`);
  if (status.errors.length) lines.push('', '### errors', ...status.errors.slice(-5).map((e) => `- ${e.split('\n')[0]}`));
  return lines.join('\n');
}
