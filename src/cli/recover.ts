/**
 * `pgmove recover ID [--dry-run] [-f spec]`: undoes what a migration that is no longer running left
 * behind (a terminated run runs no cleanup), found from the records on the servers. The spec
 * (references only) comes from the migration's history, or from `-f` when the history is gone; the
 * work runs on the workers (they hold the secrets) as the recoverMigration workflow.
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { MigrationSpecInput } from '../spec';
import { loadSpecFile } from '../spec-file';
import { startedMigration } from './history';
import { describeFailure } from './follow';
import type { RecoverReport } from '../../workflows/recover';
import type { RecoverFinding } from '../../activities/recover';

export interface RecoverOptions {
  dryRun?: boolean;
  file?: string;
  taskQueue: string;
}

export async function recoverCommand(client: Client, id: string, options: RecoverOptions): Promise<boolean> {
  const spec = await recoverableSpec(client, id, options.file);
  if (!spec) return false;
  let report: RecoverReport;
  try {
    report = (await client.workflow.execute('recoverMigration', {
      taskQueue: options.taskQueue,
      workflowId: `${id}.recover-${Date.now()}`,
      args: [{ spec: spec.input, migrationId: id, dryRun: options.dryRun ?? false }],
    })) as RecoverReport;
  } catch (error) {
    console.error(`recover ${id} failed: ${describeFailure(error)}`);
    return false;
  }
  console.log(`recover ${id}${report.dryRun ? ' (dry run: nothing was changed)' : ''}; spec from ${spec.from}`);
  console.log(renderFindings(report.findings));
  return !report.findings.some((finding) => finding.action === 'failed');
}

/** The findings per server, one line each. */
export function renderFindings(findings: RecoverFinding[]): string {
  const lines: string[] = [];
  for (const server of ['source', 'target', 'worker'] as const) {
    const own = findings.filter((finding) => finding.server === server);
    if (!own.length) continue;
    lines.push(`${server}:`);
    for (const finding of own) lines.push(`  ${finding.item.padEnd(20)} ${finding.action.padEnd(13)} ${finding.detail}`);
  }
  return lines.join('\n');
}

/** The spec to recover with: the history's start input, else the file; undefined (with the reason printed) when refused. */
async function recoverableSpec(client: Client, id: string, file: string | undefined): Promise<{ input: MigrationSpecInput; from: string } | undefined> {
  const started = await startedMigration<MigrationSpecInput>(client, id).catch((error: unknown) => {
    if (error instanceof WorkflowNotFoundError) return undefined;
    throw error;
  });
  if (started) {
    if (started.status === 'RUNNING') {
      console.error(`migration ${id} is still running: recover is for a run that ended without its cleanup (e.g. terminated); pgmove abort ${id} ends this one with its own cleanup`);
      return undefined;
    }
    if (started.workflowType === 'migrateCluster') {
      console.error(`${id} is a cluster migration: recover each of its databases, pgmove recover ${id}.<database>`);
      return undefined;
    }
    if (started.workflowType !== 'migrateDatabase' || !started.input) {
      console.error(`${id} is a ${started.workflowType} workflow, not a migration (migrateDatabase) with a start input: nothing to recover`);
      return undefined;
    }
    if (file) console.log(`note: the spec recorded in ${id}'s history is used; ${file} is not read`);
    return { input: started.input, from: `the history of ${id}` };
  }
  if (!file) {
    console.error(`no workflow ${id} in Temporal (its history is gone?): pass the spec it was started with, pgmove recover ${id} -f spec.yaml`);
    return undefined;
  }
  const { input, spec } = loadSpecFile(file);
  if (spec.id !== undefined && spec.id !== id) {
    console.error(`${file} is the spec of migration ${spec.id}, not ${id}: pass the spec ${id} was started with`);
    return undefined;
  }
  return { input, from: file };
}
