/**
 * unfreezeMigrationSource: makes the old source of an ENDED migration writable again — it stays fenced after a
 * switch with `cutover.sourceAfterSwitch: frozen` — and the target after a rollback (cutover.rollbackWindow). Started by `pgmove unfreeze ID` (which reads the
 * migration's spec, references only, from its history) or with the `temporal` CLI and the same input.
 * A workflow of its own: a signal cannot reach an ended workflow.
 */
import { patched, proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { MigrationSpecInput } from '../src/spec';
import { PATCHES } from './patches';

export interface Released {
  released: boolean;
  how: string;
  /** Which servers became writable (absent in results of older workers: the source). */
  sides?: ('source' | 'target')[];
}

export async function unfreezeMigrationSource(input: { spec: MigrationSpecInput; migrationId: string }): Promise<Released> {
  const { releaseSource, releaseRolledBackTarget } = proxyActivities<typeof activities>({
    startToCloseTimeout: '10m',
    heartbeatTimeout: '30s',
    retry: { maximumAttempts: 5, initialInterval: '2s' },
  });
  const source = await releaseSource(input);
  if (!patched(PATCHES.releaseRolledBackTarget)) return source;
  // After a rollback (cutover.rollbackWindow) the fence to lift is the target's.
  const target = await releaseRolledBackTarget(input);
  if (!target.released) return { ...source, sides: source.released ? ['source'] : [] };
  return {
    released: true,
    how: source.released ? `${source.how}; on the target: ${target.how}` : `on the target: ${target.how}`,
    sides: source.released ? ['source', 'target'] : ['target'],
  };
}
