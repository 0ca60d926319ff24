/**
 * `pgmove cleanup ID [--dry-run] [--delete-target [--no-final-snapshot]]`: the AWS leftovers of an ended
 * migration. Reads the migration's spec (references only) from its history, then runs the
 * cleanupMigration workflow on the workers (their AWS identity created the resources) and prints what
 * was — or would be — deleted. A target the migration completed on or switched to is the product:
 * --delete-target is refused for it (from the history here; from the instance's tags in the activity).
 */
import type { Client } from '@temporalio/client';
import { startedMigration } from './history';
import type { MigrationSpecInput } from '../spec';
import type { DeprovisionResult } from '../aws/model';
import type { MigrationStatus } from '../model';
import { statusQuery } from '../../workflows/messages';
import { errorMessage } from '../error-text';

export interface CleanupOptions {
  dryRun?: boolean;
  deleteTarget?: boolean;
  /** commander's --no-final-snapshot sets finalSnapshot: false. */
  finalSnapshot?: boolean;
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
  if (options.deleteTarget && spec.target.provision) {
    const product = await targetIsProduct(client, id, completed);
    if (product) {
      console.error(
        `refusing --delete-target: ${product}, so its RDS instance is the product and pgmove never deletes it. ` +
          `Run \`pgmove cleanup ${id}\` without --delete-target for the other leftovers; to retire the instance, snapshot and delete it with the AWS console or CLI yourself.`,
      );
      return false;
    }
  }
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
        noFinalSnapshot: options.finalSnapshot === false,
      },
    ],
  })) as DeprovisionResult;
  const verb = result.dryRun ? 'would delete' : 'deleted';
  for (const resource of result.deleted) console.log(`${verb}  ${resource.kind} ${resource.id}${resource.arn ? ` (${resource.arn})` : ''}`);
  for (const snapshot of result.finalSnapshots ?? []) console.log(`${result.dryRun ? 'would snapshot' : 'final snapshot'} ${snapshot} (taken before the instance was deleted; --no-final-snapshot skips it)`);
  for (const skipped of result.skipped) console.log(`left alone    ${skipped}`);
  if (keepInstance && spec.target.provision) {
    console.log(`kept          the RDS instance and its groups (${completed ? 'the migration completed: it is the product' : 'keepTargetOnAbort'}); --delete-target deletes them too`);
  }
  if (result.deleted.length === 0) console.log(`nothing ${result.dryRun ? 'to delete' : 'left to delete'}`);
  return true;
}

/** Why the migration's target is the product (completed, or a cutover switched to it), or undefined. */
async function targetIsProduct(client: Client, id: string, completed: boolean): Promise<string | undefined> {
  if (completed) return `migration ${id} completed`;
  let status: MigrationStatus;
  try {
    status = await client.workflow.getHandle(id).query(statusQuery);
  } catch (error) {
    return `the cutover record of migration ${id} could not be read (${errorMessage(error)}; is a worker running?), so it may have switched`;
  }
  const switched = (status.cutovers ?? []).find((attempt) => attempt.outcome === 'switched');
  return switched ? `migration ${id} switched to its target (cutover started ${switched.startedAt})` : undefined;
}
