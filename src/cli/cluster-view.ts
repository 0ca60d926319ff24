/** `pgmove status` and `--wait` for a cluster migration: one row per database, then roles and cutovers. */
import type { WorkflowHandle } from '@temporalio/client';
import type { ClusterStatus } from '../model';
import { clusterStatusQuery } from '../../workflows/messages';
import { describeFailure } from './follow';

export function renderClusterStatus(status: ClusterStatus, workflowStatus: string): string {
  const lines = [`cluster migration ${status.migrationId}: ${status.phase} (workflow ${workflowStatus}, run ${status.runs}, concurrency ${status.concurrency})`, ''];
  lines.push(`  ${'database'.padEnd(20)} ${'target'.padEnd(20)} ${'method'.padEnd(8)} ${'phase'.padEnd(10)} ${'status'.padEnd(10)} ${'seconds'.padStart(8)}  error`);
  for (const r of status.databases) {
    const seconds = r.seconds !== undefined ? r.seconds.toFixed(1) : r.startedAt ? 'running' : '';
    lines.push(`  ${r.database.padEnd(20)} ${r.targetDatabase.padEnd(20)} ${r.method.padEnd(8)} ${String(r.phase).padEnd(10)} ${r.status.padEnd(10)} ${seconds.padStart(8)}  ${(r.error ?? '').split('\n')[0]}`);
  }
  lines.push('');
  const g = status.globals;
  if (g) {
    lines.push(`roles     ${g.rolesCreated.length} created (${g.rolesCreated.join(', ') || 'none'}), ${g.rolesExisting.length} already on the target, ${g.membershipsGranted} membership(s) granted`);
    if (g.rolesNeedingPassword.length) lines.push(`action    created NOLOGIN (no password reference in roles.passwords): ${g.rolesNeedingPassword.map((r) => `ALTER ROLE "${r}" LOGIN PASSWORD '…';`).join(' ')}`);
    for (const [role, attributes] of Object.entries(g.attributesDropped)) lines.push(`note      ${role} was ${attributes.join(', ')} on the source: not copied (RDS-safe)`);
    lines.push(`databases created: ${g.databasesCreated.join(', ') || 'none'}${g.databasesExisting.length ? `; already there: ${g.databasesExisting.join(', ')}` : ''}`);
    for (const warning of g.warnings) lines.push(`warning   ${warning}`);
  }
  for (const a of status.cutovers ?? []) lines.push(`cutover   ${a.startedAt} by ${a.requestedBy}: ${a.outcome}${a.error ? ` — ${a.error}` : ''}`);
  const online = status.databases.filter((r) => r.status === 'running' && r.method === 'logical');
  if (online.length && online.every((r) => r.phase === 'syncing')) lines.push(`cutover   when ready: pgmove cutover ${status.migrationId} (every online database switches together)`);
  for (const warning of status.warnings) lines.push(`warning   ${warning}`);
  for (const error of status.errors) lines.push(`error     ${error}`);
  return lines.join('\n');
}

/** Prints the table whenever a database changes phase or status, until the cluster migration ends. */
export async function followCluster(handle: WorkflowHandle, out: NodeJS.WriteStream = process.stdout): Promise<boolean> {
  let ended = false;
  const resultPromise = handle.result().finally(() => (ended = true));
  resultPromise.catch(() => undefined);
  let last = '';
  while (!ended) {
    try {
      const status = await handle.query(clusterStatusQuery);
      const summary = status.databases.map((r) => `${r.database}:${r.phase}:${r.status}`).join(' ') + status.phase;
      if (summary !== last) out.write(`${renderClusterStatus(status, 'RUNNING')}\n\n`);
      last = summary;
    } catch {
      // The first workflow task may not have run yet.
    }
    await Promise.race([resultPromise.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 1000))]);
  }
  try {
    const result = (await resultPromise) as { status: ClusterStatus };
    out.write(`${renderClusterStatus(result.status, 'COMPLETED')}\n`);
    return true;
  } catch (error) {
    out.write(`\ncluster migration failed: ${describeFailure(error)}\n`);
    return false;
  }
}
