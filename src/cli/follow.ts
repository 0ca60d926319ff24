/**
 * Follows a running migration on the terminal until it ends: a progress bar (bytes copied, tables
 * done, rows, rate, phase) on a TTY, a line every few seconds otherwise; then the validation report.
 */
import { SingleBar } from 'cli-progress';
import type { WorkflowHandle } from '@temporalio/client';
import { WorkflowFailedError } from '@temporalio/client';
import type { MigrationResult } from '../../workflows/migrate-database';
import type { ValidationReport } from '../model';
import { snapshot } from './status-view';
import { errorMessage } from '../error-text';

const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);

export async function follow(handle: WorkflowHandle, out: NodeJS.WriteStream = process.stdout): Promise<boolean> {
  const tty = Boolean(out.isTTY);
  const bar = new SingleBar(
    {
      stream: out,
      format: ' {phase} |{bar}| {percentage}% | {copied}/{total} MB | tables {tablesDone}/{tables} | {rows} rows | {rate} MB/s',
      hideCursor: true,
      noTTYOutput: false,
    },
  );
  let started = false;
  let lastPhase = '';
  let lastLine = 0;
  const t0 = Date.now();
  let ended = false;
  const resultPromise = handle.result().finally(() => (ended = true));
  resultPromise.catch(() => undefined);
  while (!ended) {
    try {
      const view = await snapshot(handle);
      const { status } = view;
      const payload = {
        phase: status.phase.padEnd(9),
        copied: mb(view.liveBytes),
        total: mb(status.totals.totalBytes),
        tablesDone: status.totals.tablesDone,
        tables: status.totals.tables,
        rows: view.liveRows,
        rate: mb(view.liveBytes / Math.max(1, (Date.now() - Date.parse(status.timings.copy?.startedAt ?? new Date().toISOString())) / 1000)),
      };
      if (tty) {
        if (!started) {
          bar.start(Math.max(1, status.totals.totalBytes), 0, payload);
          started = true;
        }
        bar.setTotal(Math.max(1, status.totals.totalBytes, view.liveBytes));
        bar.update(view.liveBytes, payload);
      } else if (status.phase !== lastPhase || Date.now() - lastLine > 5000) {
        const stream = status.phase === 'syncing' && status.replication
          ? `; lag ${status.replication.lagBytes} bytes, ${status.replication.lagSeconds.toFixed(1)} s — cut over with: pgmove cutover ${status.migrationId}`
          : '';
        out.write(`[${((Date.now() - t0) / 1000).toFixed(0)}s] ${status.phase}: tables ${payload.tablesDone}/${payload.tables}, ${payload.rows} rows, ${payload.copied}/${payload.total} MB${stream}\n`);
        lastLine = Date.now();
      }
      lastPhase = status.phase;
    } catch {
      // The workflow may not have run its first task yet; try again.
    }
    await Promise.race([resultPromise.catch(() => undefined), new Promise((r) => setTimeout(r, 1000))]);
  }
  if (started) bar.stop();
  try {
    const result = (await resultPromise) as MigrationResult;
    if (result.outcome === 'dryRun' && result.status.preflight) {
      out.write(`\ndry run: pre-flight passed. The migration would:\n${result.status.preflight.plan.map((p) => `  - ${p}`).join('\n')}\n`);
      out.write(`estimate: ${result.status.preflight.totalBytes} bytes, ~${result.status.preflight.estimatedSeconds}s\n`);
      for (const note of result.status.preflight.notes) out.write(`note: ${note}\n`);
    } else if (result.status.validation) {
      out.write(`\n${renderValidation(result.status.validation)}\n`);
      const timings = Object.entries(result.status.timings).map(([p, t]) => `${p} ${t?.seconds?.toFixed(1)}s`);
      out.write(`timings: ${timings.join(', ')}\n`);
      const switched = result.status.cutovers?.find((c) => c.outcome === 'switched');
      if (switched?.freezeToReadyMs !== undefined) {
        out.write(`cutover: writes frozen ${switched.freezeToReadyMs} ms until the target was ready, ${switched.freezeToSwitchedMs} ms until the switch hook had run\n`);
      }
    }
    return true;
  } catch (error) {
    out.write(`\nmigration failed: ${describeFailure(error)}\n`);
    return false;
  }
}

export function renderValidation(report: ValidationReport): string {
  const lines = [report.summary, '', '  table                                     source rows   target rows  checksum'];
  for (const t of report.tables) {
    lines.push(`  ${t.table.padEnd(40).slice(0, 40)}  ${String(t.sourceRows).padStart(11)}   ${String(t.targetRows).padStart(11)}  ${t.ok ? 'equal' : 'DIFFERENT'}`);
  }
  if (report.tablesOmitted) lines.push(`  … and ${report.tablesOmitted} more equal table(s) (${report.tablesChecked} checked, ${report.rowsChecked} rows; listed: the differing and the slowest)`);
  if (report.sequences.length) lines.push('', `  sequences: ${report.sequences.filter((s) => s.ok).length}/${report.sequences.length} equal`);
  lines.push(`  large objects: ${report.largeObjects.source} on source, ${report.largeObjects.target} on target${report.largeObjects.ok ? ', equal' : ', DIFFERENT'}`);
  return lines.join('\n');
}

export function describeFailure(error: unknown): string {
  if (error instanceof WorkflowFailedError) {
    let message = error.cause?.message ?? error.message;
    let cause = error.cause?.cause as Error | undefined;
    while (cause) {
      message += `\n  caused by: ${cause.message}`;
      cause = (cause as { cause?: Error }).cause;
    }
    return message;
  }
  return errorMessage(error);
}
