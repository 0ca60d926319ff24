/**
 * unfreezeMigrationSource: makes the old source of an ENDED migration writable again — it stays fenced after a
 * switch with `cutover.sourceAfterSwitch: frozen`. Started by `pgmove unfreeze ID` (which reads the
 * migration's spec, references only, from its history) or with the `temporal` CLI and the same input.
 * A workflow of its own: a signal cannot reach an ended workflow.
 */
import { proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { MigrationSpecInput } from '../src/spec';

export async function unfreezeMigrationSource(input: { spec: MigrationSpecInput; migrationId: string }): Promise<{ released: boolean; how: string }> {
  const { releaseSource } = proxyActivities<typeof activities>({
    startToCloseTimeout: '10m',
    heartbeatTimeout: '30s',
    retry: { maximumAttempts: 5, initialInterval: '2s' },
  });
  return releaseSource(input);
}
