/**
 * recoverMigration: undoes what a migration that is no longer running left on the servers — after
 * `temporal workflow terminate` (which runs no cleanup) or a lost history — from the records on the
 * servers alone (see activities/recover.ts). Started by `pgmove recover ID [--dry-run] [-f spec]`, or
 * with the `temporal` CLI and the same input. Every step runs on its own and is retried; one failing
 * never skips the others, and each is reported.
 */
import { patched, proxyActivities } from '@temporalio/workflow';
import { PATCHES } from './patches';
import type * as activities from '../activities';
import type { RecoverFinding, RecoverInput, SwitchState } from '../activities/recover';
import { errorText } from '../src/error-text';

export interface RecoverReport {
  migrationId: string;
  dryRun: boolean;
  findings: RecoverFinding[];
}

export async function recoverMigration(input: RecoverInput): Promise<RecoverReport> {
  const acts = proxyActivities<typeof activities>({
    startToCloseTimeout: '15m',
    heartbeatTimeout: '1m',
    retry: { maximumAttempts: 3, initialInterval: '2s', maximumInterval: '30s' },
  });
  const findings: RecoverFinding[] = [];
  const step = async (server: RecoverFinding['server'], item: string, run: () => Promise<RecoverFinding[]>) => {
    try {
      findings.push(...(await run()));
    } catch (error) {
      findings.push({ server, item, action: 'failed', detail: errorText(error) });
    }
  };
  // Read first: a switch recorded (or unreadable) keeps the target and the after-switch fence.
  const switchState: SwitchState = await acts.recoverSwitchState(input).catch((error: unknown) => ({ unknown: errorText(error) }));
  if (switchState.unknown) findings.push({ server: 'source', item: 'switch record', action: 'failed', detail: `not readable (${switchState.unknown}): the target and an after-switch fence are kept` });
  const withSwitch = { ...input, switchState };
  // The source first (fence, then the slot that fills its disk); the elevation last (dropping the slot may need it).
  // A rollback window's reverse stream first: its slot holds WAL on the target, and its apply worker must
  // stop writing into the source before the source's fence is touched.
  if (patched(PATCHES.recoverReverseStream)) await step('target', 'reverse stream', () => acts.recoverReverseStream(input));
  await step('source', 'fence', () => acts.recoverFence(withSwitch));
  await step('target', 'subscription', () => acts.recoverSubscription(withSwitch));
  await step('source', 'replication slot and publication', () => acts.recoverSlotAndPublication(withSwitch));
  await step('target', 'target objects', () => acts.recoverTarget(withSwitch));
  await step('worker', 'scratch files', () => acts.recoverScratch(input));
  await step('source', 'privilege elevation', () => acts.recoverElevation(input));
  return { migrationId: input.migrationId, dryRun: input.dryRun, findings };
}
