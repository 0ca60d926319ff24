/**
 * The rollback window's reverse stream (cutover.rollbackWindow): started inside the cutover while the
 * source is frozen and before the switch, measured while the window is open, and dropped on both
 * servers when the window ends (finalize, its end, a rollback, or the migration's cleanup).
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { ReplicationState } from '../src/model';
import { connect, connectionInfo, withClient, type ConnectionInfo } from '../src/pg/connect';
import { listTables, type TableInfo } from '../src/pg/catalog';
import { displayName } from '../src/pg/sql';
import { readPublicationRecord } from '../src/pg/replication';
import { dropReversePublisher, dropReverseSubscription, reverseNames, reverseSlotState, reverseSubscriptionState, startReverseStream } from '../src/pg/reverse-replication';
import { errorMessage } from '../src/error-text';
import { pollUntil } from '../src/poll';
import { activityLogger } from '../src/log';

export interface RollbackInput {
  spec: MigrationSpec;
  migrationId: string;
}

/** The spec seen from the new server: it is the side that is frozen and read from during a rollback. */
export function reversedSpec(spec: MigrationSpec): MigrationSpec {
  return { ...spec, source: { ...spec.target }, target: { ...spec.source } };
}

/** The new server as the old one reaches it: logical.targetUriFromSource, else target.uri (sslrootcert only from the former). */
async function newServerAsOldSeesIt(spec: MigrationSpec): Promise<ConnectionInfo> {
  const info = await connectionInfo({ uri: spec.logical.targetUriFromSource ?? spec.target.uri, password: spec.target.password }, 'target');
  if (!spec.logical.targetUriFromSource) delete info.sslrootcert;
  return info;
}

/** Inside the cutover, with the source frozen and before the switch: the new server publishes, the old one subscribes. */
export async function startReverseAtCutover(spec: MigrationSpec, migrationId: string, source: Client, target: Client, tables: TableInfo[], knownTables: string[]): Promise<void> {
  const logged = tables.filter((t) => !t.unlogged);
  const onTarget = new Map((await listTables(target, spec, { sizes: false })).map((t) => [displayName(t), t]));
  const needFullIdentity = logged.filter((t) => onTarget.get(displayName(t))?.hasReplicaIdentity === false);
  await startReverseStream(source, target, migrationId, { tables: logged, needFullIdentity, knownTables, newServerFromOld: await newServerAsOldSeesIt(spec) });
  // Before the switch mark: a window whose stream never started would only look like a way back.
  await pollUntil(async () => ((await reverseSubscriptionState(source, migrationId)).streaming ? true : undefined), {
    intervalMs: 50,
    timeoutMs: 30_000,
    what: 'the reverse stream',
    timeoutError: () =>
      ApplicationFailure.nonRetryable(
        "the reverse stream's apply worker did not start on the source within 30 s (see the source's server log; max_logical_replication_workers and max_worker_processes must leave one free): the cutover does not switch without a way back",
        'ReverseStreamFailed',
      ),
  });
  activityLogger('rollback').info({ stream: reverseNames(migrationId).slot, tables: logged.length }, 'reverse stream started: the old source follows the target');
}

/** Both servers, each session allowed to write although either may be fenced (ours bypass the fence). */
export async function withBothServers<T>(spec: MigrationSpec, purpose: string, fn: (oldServer: Client, newServer: Client) => Promise<T>): Promise<T> {
  const oldServer = await connect(await connectionInfo(spec.source, 'source'), 'source', { applicationName: `pgmove ${purpose}` });
  try {
    const newServer = await connect(await connectionInfo(spec.target, 'target'), 'target', { applicationName: `pgmove ${purpose}` });
    try {
      await oldServer.query('SET default_transaction_read_only = off');
      await newServer.query('SET default_transaction_read_only = off');
      return await fn(oldServer, newServer);
    } finally {
      await newServer.end().catch(() => undefined);
    }
  } finally {
    await oldServer.end().catch(() => undefined);
  }
}

/**
 * One measurement of the reverse stream while the window is open. The new server first and on its own:
 * the WAL its slot holds there is what the window's guardrail needs, above all while the old server is
 * unreachable (then nothing consumes the slot, and the stream counts as not streaming).
 */
export async function reverseStreamStatus(input: RollbackInput): Promise<ReplicationState> {
  const { spec, migrationId } = input;
  const names = reverseNames(migrationId);
  const { record, slot, newTables } = await withClient(await connectionInfo(spec.target, 'target'), 'target', async (newServer) => {
    const record = await readPublicationRecord(newServer, names.publication);
    const known = new Set(record?.knownTables ?? []);
    const newTables = record?.knownTables ? (await listTables(newServer, spec, { sizes: false })).map(displayName).filter((t) => !known.has(t)).sort() : [];
    return { record, slot: await reverseSlotState(newServer, migrationId), newTables };
  });
  const subscription = await withClient(await connectionInfo(spec.source, 'source'), 'source', (oldServer) => reverseSubscriptionState(oldServer, migrationId)).catch((error: unknown) => {
    activityLogger('rollback').warn({ error: errorMessage(error) }, 'the source is unreachable: the reverse stream counts as not streaming');
    return undefined;
  });
  if (!record || !slot || subscription?.exists === false) {
    const missing = [!record && 'its publication', !slot && 'its slot', subscription?.exists === false && 'its subscription on the source'].filter(Boolean).join(', ');
    throw ApplicationFailure.nonRetryable(`the rollback window's reverse stream is broken (${missing} gone or invalidated): a rollback would lose writes, so the window closes`, 'ReverseStreamLost');
  }
  return {
    lagBytes: slot.lagBytes,
    lagSeconds: slot.lagSeconds,
    retainedWalBytes: slot.retainedWalBytes,
    streaming: subscription?.streaming === true && slot.activePid !== null,
    applyErrors: subscription?.applyErrors ?? 0,
    newTables,
    measuredAt: new Date().toISOString(),
  };
}

/** The reverse subscription on the source only (its slot and publication on the target stay for dropReverseStream). */
export async function dropReverseSubscriptionOnSource(input: RollbackInput): Promise<void> {
  await withClient(await connectionInfo(input.spec.source, 'source'), 'source', async (oldServer) => {
    await oldServer.query('SET default_transaction_read_only = off');
    await dropReverseSubscription(oldServer, input.migrationId);
  });
}

/** Inside the cutover (its sessions): drops what an earlier attempt made of the reverse stream. */
export async function dropReverseStreamWith(source: Client, target: Client, migrationId: string): Promise<void> {
  if (await dropReverseSubscription(source, migrationId)) activityLogger('rollback').info('dropped the reverse subscription of an earlier cutover attempt');
  await dropReversePublisher(target, migrationId);
}

/** Drops the reverse stream on both servers; each side on its own (an unreachable one never keeps the other's objects). Idempotent. */
export async function dropReverseStream(input: RollbackInput): Promise<{ dropped: string[] }> {
  const { spec, migrationId } = input;
  const dropped: string[] = [];
  const oldError = await withClient(await connectionInfo(spec.source, 'source'), 'source', async (oldServer) => {
    await oldServer.query('SET default_transaction_read_only = off');
    if (await dropReverseSubscription(oldServer, migrationId)) dropped.push(`subscription ${reverseNames(migrationId).subscription} on the old server`);
  }).catch((error: unknown) => error);
  await withClient(await connectionInfo(spec.target, 'target'), 'target', async (newServer) => {
    await newServer.query('SET default_transaction_read_only = off');
    dropped.push(...(await dropReversePublisher(newServer, migrationId)));
  });
  activityLogger('rollback').info({ dropped }, 'reverse stream dropped');
  if (oldError) throw oldError;
  return { dropped };
}
