/**
 * cleanupMigration: deletes the AWS resources an ENDED migration left behind (a failed cleanup, a
 * target kept with keepTargetOnAbort, or DMS leftovers), run by a worker — whose AWS identity created
 * them. Only resources tagged with that migration's id are deleted; `dryRun` lists them. Started by
 * `pgmove cleanup ID [--dry-run]` (which reads the migration's spec from its history), or with the
 * `temporal` CLI and the same input. A signal cannot reach an ended workflow, hence a workflow of its own.
 */
import { proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { AwsCleanupInput } from '../activities/cleanup-aws';
import type { DeprovisionResult } from '../src/aws/model';

export async function cleanupMigration(input: AwsCleanupInput): Promise<DeprovisionResult> {
  const { cleanupAwsResources } = proxyActivities<typeof activities>({
    startToCloseTimeout: '2h',
    heartbeatTimeout: '2m',
    retry: { maximumAttempts: 30, initialInterval: '5s', maximumInterval: '1m' },
  });
  return cleanupAwsResources(input);
}
