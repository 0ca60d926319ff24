/** The short Markdown status shown as "Current Details" in the Temporal Web UI. Pure: workflow-safe. */
import type { MigrationStatus } from '../src/model';

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

export function renderStatusMarkdown(status: MigrationStatus): string {
  const lines = [`## ${status.migrationId}: ${status.phase}`, ''];
  lines.push(`- **method**: ${status.method}${status.methodReason ? ` — ${status.methodReason}` : ''}`);
  if (status.totals.tables > 0) {
    lines.push(
      `- **tables**: ${status.totals.tablesDone}/${status.totals.tables} done, ${status.totals.rows} rows, ${mb(status.totals.bytes)} copied (of ~${mb(status.totals.totalBytes)} on disk)`,
    );
  }
  const timings = Object.entries(status.timings)
    .filter(([, t]) => t?.seconds !== undefined)
    .map(([phase, t]) => `${phase} ${t?.seconds?.toFixed(1)}s`);
  if (timings.length) lines.push(`- **timings**: ${timings.join(', ')}`);
  if (status.validation) lines.push(`- **validation**: ${status.validation.summary.split('\n')[0]}`);
  if (status.cleanupOwed.length) lines.push(`- **cleanup owes**: ${status.cleanupOwed.join('; ')}`);
  if (status.errors.length) {
    lines.push('', '### errors', ...status.errors.slice(-5).map((e) => `- ${e.split('\n')[0]}`));
  }
  return lines.join('\n');
}
