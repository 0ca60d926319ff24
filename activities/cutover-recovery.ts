/**
 * The cutover's recovery: how far a cutover got (`cutoverStage`), taking back one that failed before
 * the switch (`abandonCutover`: unfreeze, drop a reverse stream, then resume the stream), the unfreeze
 * itself, and releasing the old source of an ended migration (`pgmove unfreeze`). The cutover itself is
 * in cutover.ts.
 */

import { ApplicationFailure } from '@temporalio/common';
import { parsedOrBadSpec, parseSpecInput, type MigrationSpecInput } from '../src/spec';
import { durationMs } from '../src/units';
import { connectionInfo, withClient } from '../src/pg/connect';
import { ident } from '../src/pg/sql';
import { readPublicationRecord, replicationNames, subscriptionState, writePublicationRecord } from '../src/pg/replication';
import { ownSubscriptions } from '../src/pg/generations';
import { migrationHookContext, runHook } from '../src/hooks';
import { startHeartbeat } from '../src/heartbeat';
import { activityLogger } from '../src/log';
import { unfreezeSource } from './freeze';
import { dropReverseStream, dropReverseSubscriptionOnSource } from './reverse-stream';
import type { CutoverInput } from './cutover';
import { errorMessage } from '../src/error-text';
/** How far the cutover got, as recorded on the source. */
export async function cutoverStage(input: CutoverInput): Promise<{ switchingAt?: string; switchedAt?: string }> {
  const names = replicationNames(input.migrationId);
  const sourceInfo = await connectionInfo(input.spec.source, 'source');
  const record = await withClient(sourceInfo, 'source', (source) => readPublicationRecord(source, names.publication));
  return { switchingAt: record?.switchingAt, switchedAt: record?.switchedAt };
}

/**
 * After a cutover failed before the switch: the source is unfrozen first (it must never stay frozen,
 * even while the target is unreachable), then the stream resumes.
 */
export async function abandonCutover(input: CutoverInput): Promise<{ resumed: boolean }> {
  const { spec, migrationId } = input;
  if ((await cutoverStage(input)).switchingAt) {
    throw ApplicationFailure.nonRetryable('the cutover had reached the switch: it is finished, not abandoned', 'AlreadySwitching');
  }
  // A reverse stream started before the switch has nothing to carry back. Its subscription goes before the
  // source takes writes again (they would come back from the target once the stream resumes); the rest after.
  if (spec.cutover.rollbackWindow) await dropReverseSubscriptionOnSource({ spec, migrationId });
  await unfreezeAfterCutover(input);
  if (spec.cutover.rollbackWindow) await dropReverseStream({ spec, migrationId });
  const targetInfo = await connectionInfo(spec.target, 'target');
  return withClient(targetInfo, 'target', async (target) => {
    let resumed = false;
    for (const subscription of await ownSubscriptions(target, migrationId)) {
      const state = await subscriptionState(target, subscription);
      if (state.exists && !state.enabled) await target.query(`ALTER SUBSCRIPTION ${ident(subscription)} ENABLE`);
      resumed ||= state.exists;
    }
    return { resumed };
  });
}

/**
 * Unfreezes the source however it was frozen; idempotent. The readOnly freeze is undone from its record
 * on the source; the unfreeze hook runs only when the freeze hook was started (recorded), and a failure
 * is retried like any other (the source must not stay frozen).
 */
export async function unfreezeAfterCutover(input: CutoverInput): Promise<void> {
  const { spec, migrationId } = input;
  if (spec.cutover.freeze !== 'hook') {
    await unfreezeSource(spec, migrationId);
    return;
  }
  const names = replicationNames(migrationId);
  const sourceInfo = await connectionInfo(spec.source, 'source');
  await withClient(sourceInfo, 'source', async (source) => {
    await source.query('SET default_transaction_read_only = off');
    const record = await readPublicationRecord(source, names.publication);
    if (!record?.frozenByHook) return;
    const heartbeat = startHeartbeat(() => ({ step: 'unfreezeHook' }));
    try {
      await runHook('unfreezeHook', spec.cutover.unfreezeHook!, migrationHookContext(spec, migrationId), durationMs(spec.cutover.hookTimeout), heartbeat.signal);
    } catch (error) {
      throw ApplicationFailure.retryable(`${errorMessage(error)} (retried: the source is still frozen)`, 'UnfreezeHookFailed');
    } finally {
      heartbeat.stop();
    }
    await writePublicationRecord(source, names.publication, { ...record, frozenByHook: false });
  });
}

/**
 * `pgmove unfreeze ID`: makes the old source of an ended migration writable again (kept fenced after the
 * switch by `cutover.sourceAfterSwitch: frozen`): pgmove's fence is undone from its record on the source
 * (nothing recorded: nothing to do). Only the migration that froze it may lift it.
 */
export async function releaseSource(input: { spec: MigrationSpecInput; migrationId: string }): Promise<{ released: boolean; how: string }> {
  // The source is all it needs (a provisioned target has no uri in the input).
  const spec = parsedOrBadSpec(() => parseSpecInput(input.spec));
  const { unfrozen, fencedBy } = await unfreezeSource(spec, input.migrationId);
  activityLogger('unfreeze').info({ unfrozen, fencedBy }, 'source release');
  if (fencedBy) throw ApplicationFailure.nonRetryable(`the source is fenced by migration ${fencedBy}, not ${input.migrationId}: run pgmove unfreeze ${fencedBy}`, 'SourceFenced');
  return unfrozen
    ? { released: true, how: 'the former CONNECT grants, read-only default and comment were restored' }
    : { released: false, how: 'pgmove has no freeze recorded on the source (never frozen, or already released)' };
}
