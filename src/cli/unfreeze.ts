/**
 * `pgmove unfreeze ID`: the old source of an ended migration becomes writable again (after a switch it
 * stays fenced with `cutover.sourceAfterSwitch: frozen`). For a cluster migration, every database's.
 * The work runs on the workers (they hold the secrets) as the unfreezeMigrationSource workflow.
 */
import type { Client } from '@temporalio/client';
import type { MigrationSpecInput } from '../spec';
import type { ClusterResult } from '../../workflows/migrate-cluster';
import { startedMigration } from './history';
import { describeFailure } from './follow';
import type { Released } from '../../workflows/unfreeze';

export async function unfreezeCommand(client: Client, id: string, taskQueue: string): Promise<boolean> {
  const migration = await startedMigration<MigrationSpecInput>(client, id);
  if (migration.status === 'RUNNING') {
    console.error(`migration ${id} is still running: its source is unfrozen (or kept frozen after a switch) when it ends; pgmove abort ${id} ends it`);
    return false;
  }
  const ids = migration.workflowType === 'migrateCluster' ? await clusterChildren(client, id) : [id];
  if (!ids) return false;
  let ok = true;
  for (const childId of ids) {
    const child = childId === id ? migration : await startedMigration<MigrationSpecInput>(client, childId);
    if (!child.input) {
      console.error(`${childId}: no start input in its history: nothing to unfreeze`);
      ok = false;
      continue;
    }
    try {
      const result = (await client.workflow.execute('unfreezeMigrationSource', {
        taskQueue,
        workflowId: `${childId}.unfreeze-${Date.now()}`,
        args: [{ spec: child.input, migrationId: childId }],
      })) as Released;
      console.log(`${childId}: ${result.released ? `${(result.sides?.length ? result.sides : ['source']).join(' and ')} writable again` : 'nothing to do'}: ${result.how}`);
    } catch (error) {
      // One database's failure does not keep the others fenced.
      console.error(`${childId}: not released: ${describeFailure(error)}`);
      ok = false;
    }
  }
  return ok;
}

/** The databases of an ended cluster migration, from its result (started, so possibly frozen). */
async function clusterChildren(client: Client, id: string): Promise<string[] | undefined> {
  try {
    const result = (await client.workflow.getHandle(id).result()) as ClusterResult;
    return result.status.databases.filter((row) => row.status !== 'skipped' && row.status !== 'pending').map((row) => row.workflowId);
  } catch {
    console.error(`cluster migration ${id} did not complete, so its databases are not listed in a result: run pgmove unfreeze ${id}.<database> for each database`);
    return undefined;
  }
}
