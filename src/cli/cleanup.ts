/**
 * `pgmove cleanup ID [--dry-run] [--delete-target]`: the AWS leftovers of an ended migration. Reads the
 * migration's spec (references only) from its history, then runs the cleanupMigration workflow on the
 * workers (their AWS identity created the resources) and prints what was — or would be — deleted.
 */
import type { Client } from '@temporalio/client';
import { startedMigration } from './history';
import type { MigrationSpecInput } from '../spec';
import type { DeprovisionResult } from '../aws/model';

export interface CleanupOptions {
  dryRun?: boolean;
  deleteTarget?: boolean;
  taskQueue: string;
}

export async function cleanupCommand(client: Client, id: string, options: CleanupOptions): Promise<boolean> {
  const { status, input: spec } = await startedMigration<MigrationSpecInput>(client, id);
  if (status === 'RUNNING') {
    console.error(`migration ${id} is still running: abort it (pgmove abort ${id}); its own cleanup deletes what it created`);
    return false;
  }
  if (!spec?.target || (!spec.target.provision && spec.method !== 'dms')) {
    console.log(`migration ${id} created no AWS resources (no target.provision, method not dms): nothing to clean up`);
    return true;
  }
  const completed = status === 'COMPLETED';
  const keepInstance = !options.deleteTarget && (completed || spec.target.provision?.keepTargetOnAbort === true);
  const result = (await client.workflow.execute('cleanupMigration', {
    taskQueue: options.taskQueue,
    workflowId: `${id}-cleanup-${Date.now()}`,
    args: [
      {
        migrationId: id,
        aws: { region: spec.aws?.region ?? 'us-east-1', endpoint: spec.aws?.endpoint },
        identifier: spec.target.provision?.identifier,
        dmsOnly: keepInstance || !spec.target.provision,
        dryRun: options.dryRun ?? false,
      },
    ],
  })) as DeprovisionResult;
  const verb = result.dryRun ? 'would delete' : 'deleted';
  for (const resource of result.deleted) console.log(`${verb}  ${resource.kind} ${resource.id}${resource.arn ? ` (${resource.arn})` : ''}`);
  for (const skipped of result.skipped) console.log(`left alone    ${skipped}`);
  if (keepInstance && spec.target.provision) {
    console.log(`kept          the RDS instance and its groups (${completed ? 'the migration completed: it is the product' : 'keepTargetOnAbort'}); --delete-target deletes them too`);
  }
  if (result.deleted.length === 0) console.log(`nothing ${result.dryRun ? 'to delete' : 'left to delete'}`);
  return true;
}
