/**
 * `pgmove recover ID`: undoes what a run that is no longer running left behind — typically one ended
 * with `temporal workflow terminate`, which runs no cleanup. Everything is found from the records on
 * the servers themselves, never from the workflow's state, so it also works when the history is gone:
 *   source  the fence (database comment), the unfreeze hook owed (publication comment), the slot, the
 *           publication and the replica identities it changed (publication comment), the privilege
 *           elevation (state file next to pg_hba.conf);
 *   target  the subscription, the rollback window's reverse stream (its subscription is on the source), and what pre-data and the copy put there (the target marker in the
 *           database comment: only a target this run filled and did not switch to is reset);
 *   worker  the scratch directory.
 * One activity per server and item, each reusing the migration's own undo; with `dryRun` they only
 * read. Each is idempotent: a second recover finds nothing.
 */
import { stat, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { Client } from 'pg';
import { parsedOrBadSpec, parseSpecInput, type MigrationSpec, type MigrationSpecInput, type ParsedSpec } from '../src/spec';
import { connectionInfo, withClient } from '../src/pg/connect';
import { displayName } from '../src/pg/sql';
import { dropPublication, dropSlot, dropSubscription, readPublicationRecord, replicationNames, slotState, subscriptionState } from '../src/pg/replication';
import { ownSourceObjects, ownSubscriptions } from '../src/pg/generations';
import { readTargetMarker, removeTargetMarker } from '../src/pg/target-marker';
import { workDirPath } from '../src/pg/dump';
import { formatBytes } from '../src/units';
import { activityLogger } from '../src/log';
import { readFreezeState, unfreezeSource } from './freeze';
import { unfreezeAfterCutover } from './cutover-recovery';
import { resetMarkedTarget } from './cleanup';
import { recordedElevation, revertPrivileges } from './elevate-privileges';
import { reverseNames } from '../src/pg/reverse-replication';
import { dropReverseStream } from './reverse-stream';

export interface RecoverInput {
  /** The migration's spec as it was started (references only, never a secret). */
  spec: MigrationSpecInput;
  migrationId: string;
  dryRun: boolean;
}

export type RecoverAction = 'undone' | 'would undo' | 'kept' | 'nothing found' | 'failed';

export interface RecoverFinding {
  server: 'source' | 'target' | 'worker';
  item: string;
  action: RecoverAction;
  detail: string;
}

/** Whether a switch to the target is recorded; `unknown` (with the reason) when a record could not be read. */
export interface SwitchState {
  switchingAt?: string;
  unknown?: string;
}

export interface RecoverStepInput extends RecoverInput {
  switchState: SwitchState;
}

function parsed(input: RecoverInput): ParsedSpec {
  return parsedOrBadSpec(() => parseSpecInput(input.spec));
}

/** The spec with its target, or undefined for a provisioned target (its address is not in the spec). */
function withTarget(spec: ParsedSpec): MigrationSpec | undefined {
  return spec.target.uri === undefined ? undefined : { ...spec, target: { uri: spec.target.uri, password: spec.target.password } };
}

async function onSource<T>(spec: ParsedSpec, fn: (source: Client) => Promise<T>): Promise<T> {
  return withClient(await connectionInfo(spec.source, 'source'), 'source', async (source) => {
    await source.query('SET default_transaction_read_only = off'); // the source may be frozen
    return fn(source);
  });
}

async function onTarget<T>(spec: MigrationSpec, fn: (target: Client) => Promise<T>): Promise<T> {
  return withClient(await connectionInfo(spec.target, 'target'), 'target', fn);
}

/** The switch records: the publication's comment on the source and the target marker. Read-only. */
export async function recoverSwitchState(input: RecoverInput): Promise<SwitchState> {
  const spec = parsed(input);
  const names = replicationNames(input.migrationId);
  const problems: string[] = [];
  const unread = (side: string) => (error: Error) => {
    problems.push(`${side}: ${error.message}`);
    return undefined;
  };
  const onPublication = await onSource(spec, (source) => readPublicationRecord(source, names.publication)).catch(unread('source'));
  const ready = withTarget(spec);
  const marker = ready ? await onTarget(ready, readTargetMarker).catch(unread('target')) : undefined;
  const switchingAt = onPublication?.switchingAt ?? (marker?.migrationId === input.migrationId ? marker.switchingAt : undefined);
  if (switchingAt) return { switchingAt };
  return problems.length ? { unknown: problems.join('; ') } : {};
}

/** The fence (pgmove's readOnly freeze) and an owed unfreeze hook. */
export async function recoverFence(input: RecoverStepInput): Promise<RecoverFinding[]> {
  const spec = parsed(input);
  const { migrationId, dryRun, switchState } = input;
  const findings: RecoverFinding[] = [];
  const state = await onSource(spec, readFreezeState);
  const keptAfterSwitch = spec.cutover.sourceAfterSwitch === 'frozen' && (switchState.switchingAt !== undefined || switchState.unknown !== undefined);
  if (!state) {
    findings.push({ server: 'source', item: 'fence', action: 'nothing found', detail: 'no pgmove freeze recorded in the database comment' });
  } else if (state.migrationId !== undefined && state.migrationId !== migrationId) {
    findings.push({ server: 'source', item: 'fence', action: 'kept', detail: `fenced by migration ${state.migrationId}, not this one: pgmove unfreeze ${state.migrationId} releases it` });
  } else if (state.keptAtEnd) {
    findings.push({ server: 'source', item: 'fence', action: 'kept', detail: `the migration ended (${state.keptAtEnd}) and kept the old source fenced on purpose: pgmove unfreeze ${migrationId} releases it` });
  } else if (keptAfterSwitch) {
    const why = switchState.switchingAt ? `a switch to the target is recorded (${switchState.switchingAt})` : `whether a switch happened could not be read (${switchState.unknown})`;
    findings.push({ server: 'source', item: 'fence', action: 'kept', detail: `${why}: the old source stays fenced (cutover.sourceAfterSwitch: frozen); pgmove unfreeze ${migrationId} releases it` });
  } else {
    const what = `CONNECT revoked from ${state.revokedConnectFrom.join(', ') || 'nobody'}, read-only default, comment`;
    if (dryRun) findings.push({ server: 'source', item: 'fence', action: 'would undo', detail: `would restore ${what}` });
    else {
      await unfreezeSource(spec, migrationId);
      findings.push({ server: 'source', item: 'fence', action: 'undone', detail: `restored ${what}` });
    }
  }
  if (spec.cutover.freeze === 'hook') {
    const names = replicationNames(migrationId);
    const record = await onSource(spec, (source) => readPublicationRecord(source, names.publication));
    const ready = withTarget(spec);
    if (!record?.frozenByHook) findings.push({ server: 'source', item: 'unfreeze hook', action: 'nothing found', detail: 'no freeze hook run recorded on the publication' });
    else if (dryRun || !ready) findings.push({ server: 'source', item: 'unfreeze hook', action: dryRun ? 'would undo' : 'failed', detail: ready ? 'would run cutover.unfreezeHook (the freeze hook ran)' : 'a provisioned target: the hook context needs its address' });
    else {
      await unfreezeAfterCutover({ spec: ready, migrationId, knownTables: [] });
      findings.push({ server: 'source', item: 'unfreeze hook', action: 'undone', detail: 'cutover.unfreezeHook ran (the freeze hook had run)' });
    }
  }
  return findings;
}

/** The subscriptions on the target, one per copy generation (dropped before the slots they stream from). */
export async function recoverSubscription(input: RecoverStepInput): Promise<RecoverFinding[]> {
  const ready = withTarget(parsed(input));
  if (!ready) return [provisionedTarget('subscription')];
  return onTarget(ready, async (target) => {
    const subscriptions = await ownSubscriptions(target, input.migrationId);
    if (!subscriptions.length) return [{ server: 'target', item: 'subscription', action: 'nothing found', detail: `no subscription ${replicationNames(input.migrationId).subscription}` }];
    const findings: RecoverFinding[] = [];
    for (const subscription of subscriptions) {
      const state = await subscriptionState(target, subscription);
      const what = `subscription ${subscription} (${state.enabled ? 'enabled' : 'disabled'})`;
      if (input.dryRun) findings.push({ server: 'target', item: 'subscription', action: 'would undo', detail: `would drop ${what}` });
      else {
        await dropSubscription(target, subscription);
        findings.push({ server: 'target', item: 'subscription', action: 'undone', detail: `dropped ${what}` });
      }
    }
    return findings;
  });
}

/**
 * Every copy generation's slot (a forgotten one fills the source's disk), then the unit publications and
 * last the main publication, whose record restores the replica identities it changed.
 */
export async function recoverSlotAndPublication(input: RecoverStepInput): Promise<RecoverFinding[]> {
  const names = replicationNames(input.migrationId);
  return onSource(parsed(input), async (source) => {
    const findings: RecoverFinding[] = [];
    const own = await ownSourceObjects(source, input.migrationId);
    if (!own.slots.length) findings.push({ server: 'source', item: 'replication slot', action: 'nothing found', detail: `no slot ${names.slot}` });
    for (const name of own.slots) {
      const slot = await slotState(source, name);
      if (!slot) continue;
      const what = `slot ${name} (holding ${formatBytes(slot.retainedWalBytes)} of WAL${slot.activePid === null ? '' : ', in use'})`;
      if (input.dryRun) findings.push({ server: 'source', item: 'replication slot', action: 'would undo', detail: `would drop ${what}` });
      else {
        await dropSlot(source, name);
        findings.push({ server: 'source', item: 'replication slot', action: 'undone', detail: `dropped ${what}` });
      }
    }
    if (!own.publications.length) findings.push({ server: 'source', item: 'publication', action: 'nothing found', detail: `no publication ${names.publication}` });
    for (const publication of own.publications) {
      const record = publication === names.publication ? await readPublicationRecord(source, publication) : undefined;
      const identities = (record?.replicaIdentityChanged ?? []).map((t) => `${displayName(t)} FULL → ${t.before === 'n' ? 'NOTHING' : 'DEFAULT'}`);
      const what = `publication ${publication}${identities.length ? `; replica identity ${identities.join(', ')}` : ''}`;
      if (input.dryRun) findings.push({ server: 'source', item: 'publication', action: 'would undo', detail: `would drop ${what}` });
      else {
        await dropPublication(source, publication);
        findings.push({ server: 'source', item: 'publication', action: 'undone', detail: `dropped ${what}` });
      }
    }
    return findings;
  });
}

/** What pre-data and the copy put on the target: reset only when its marker is this run's and no switch is recorded. */
export async function recoverTarget(input: RecoverStepInput): Promise<RecoverFinding[]> {
  const ready = withTarget(parsed(input));
  const { migrationId, dryRun, switchState } = input;
  if (!ready) return [provisionedTarget('target objects')];
  return onTarget(ready, async (target) => {
    const marker = await readTargetMarker(target);
    if (!marker) return [{ server: 'target', item: 'target objects', action: 'nothing found', detail: 'no pgmove target marker in the database comment: nothing on the target is this run\'s (pre-data never started, or the run ended with its cleanup)' }];
    if (marker.migrationId !== migrationId) return [{ server: 'target', item: 'target objects', action: 'kept', detail: `the target carries the marker of migration ${marker.migrationId}, not this one` }];
    const switchingAt = marker.switchingAt ?? switchState.switchingAt;
    if (switchingAt || switchState.unknown) {
      const why = switchingAt ? `a switch to this target is recorded (${switchingAt}): it is the application's database` : `whether a switch happened could not be read (${switchState.unknown})`;
      if (dryRun || !switchingAt) return [{ server: 'target', item: 'target objects', action: 'kept', detail: `${why}; ${switchingAt ? 'would take out the target marker' : 'nothing changed'}` }];
      await removeTargetMarker(target, migrationId);
      return [{ server: 'target', item: 'target objects', action: 'kept', detail: `${why}; the target marker was taken out` }];
    }
    const extensions = marker.extensionsBefore.filter((name) => name !== 'plpgsql');
    const kept = extensions.length ? ` (extensions there before are kept: ${extensions.join(', ')})` : '';
    if (dryRun) return [{ server: 'target', item: 'target objects', action: 'would undo', detail: `would drop everything in the target database${kept} and restore its settings and comment` }];
    const dropped = await resetMarkedTarget(target, marker);
    return [{ server: 'target', item: 'target objects', action: 'undone', detail: `reset: ${dropped} object(s) dropped${kept}, database settings and comment restored` }];
  });
}

/** The dump scratch directory, on the worker that runs this (the migration's worker, when they share a volume). */
export async function recoverScratch(input: RecoverInput): Promise<RecoverFinding[]> {
  const dir = workDirPath(input.migrationId);
  const exists = await stat(dir).then(() => true, () => false);
  const where = `${dir} on worker ${hostname()}`;
  if (!exists) return [{ server: 'worker', item: 'scratch files', action: 'nothing found', detail: `no ${where}` }];
  if (input.dryRun) return [{ server: 'worker', item: 'scratch files', action: 'would undo', detail: `would remove ${where}` }];
  await rm(dir, { recursive: true, force: true });
  return [{ server: 'worker', item: 'scratch files', action: 'undone', detail: `removed ${where}` }];
}

/** The privilege hack, last (dropping the slot may have needed the REPLICATION it granted). */
export async function recoverElevation(input: RecoverInput): Promise<RecoverFinding[]> {
  const spec = parsed(input);
  if (!spec.source.privilegeElevation?.allow) return [{ server: 'source', item: 'privilege elevation', action: 'nothing found', detail: 'the spec allows no privilege elevation' }];
  const elevation = { spec: input.spec, migrationId: input.migrationId };
  const found = await recordedElevation(elevation);
  if (!found) return [{ server: 'source', item: 'privilege elevation', action: 'nothing found', detail: 'no elevation state file next to pg_hba.conf' }];
  const what = `${[...found.attributesSet, ...found.membershipsGranted].join(', ') || 'nothing'} granted to ${found.role}, recorded next to ${found.hbaFile}`;
  if (input.dryRun) return [{ server: 'source', item: 'privilege elevation', action: 'would undo', detail: `would revoke ${what} (only what pgmove added; pgmove's trust line taken out of pg_hba.conf if a run left it there)` }];
  const reverted = await revertPrivileges(elevation);
  activityLogger('recover').info({ migrationId: input.migrationId, role: found.role }, 'privilege elevation reverted');
  return [{ server: 'source', item: 'privilege elevation', action: 'undone', detail: `revoked ${what}; ${reverted?.reason ?? 'reverted'}` }];
}

function provisionedTarget(item: string): RecoverFinding {
  return { server: 'target', item, action: 'kept', detail: 'the target is a provisioned RDS instance (its address is not in the spec): pgmove cleanup ID deletes it' };
}

/** The rollback window's reverse stream (cutover.rollbackWindow): its subscription on the source, its slot (filling the target's disk) and publication on the target. */
export async function recoverReverseStream(input: RecoverInput): Promise<RecoverFinding[]> {
  const parsedSpec = parsed(input);
  const spec = withTarget(parsedSpec);
  const names = reverseNames(input.migrationId);
  if (!spec) {
    // The subscription on the source goes without the target (slot_name = NONE first); the slot on a provisioned target is out of reach.
    const exists = await onSource(parsedSpec, async (source) => (await subscriptionState(source, names.subscription)).exists);
    if (exists && !input.dryRun) await onSource(parsedSpec, (source) => dropSubscription(source, names.subscription));
    return [
      { server: 'source', item: 'reverse stream', action: exists ? (input.dryRun ? 'would undo' : 'undone') : 'nothing found', detail: exists ? `subscription ${names.subscription}` : `no subscription ${names.subscription}` },
      provisionedTarget('reverse stream (its slot and publication)'),
    ];
  }
  const found = await onSource(spec, async (source) => (await subscriptionState(source, names.subscription)).exists);
  const onNewServer = await onTarget(spec, async (target) => ({
    slot: (await slotState(target, names.slot)) !== undefined,
    publication: (await readPublicationRecord(target, names.publication)) !== undefined,
  }));
  const what = [found && `subscription ${names.subscription} on the source`, onNewServer.slot && `slot ${names.slot} on the target`, onNewServer.publication && `publication ${names.publication} on the target`].filter(Boolean).join(', ');
  if (!what) return [{ server: 'target', item: 'reverse stream', action: 'nothing found', detail: `no rollback window stream ${names.slot}` }];
  if (input.dryRun) return [{ server: 'target', item: 'reverse stream', action: 'would undo', detail: `would drop ${what}` }];
  await dropReverseStream({ spec, migrationId: input.migrationId });
  return [{ server: 'target', item: 'reverse stream', action: 'undone', detail: `dropped ${what}` }];
}
