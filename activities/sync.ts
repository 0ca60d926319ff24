/**
 * Phases 6 and 8 of the logical method: the publication (with REPLICA IDENTITY FULL where the spec
 * allows it), the replication slot whose exported snapshot the parallel copy runs at, the subscription
 * created from that slot without a copy (so no change is lost or applied twice between copy and
 * stream), the lag and retained-WAL measurements while syncing, and dropping all of it. Every step is
 * idempotent: names derive from the migration id, and a retry finds what an earlier attempt made.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { CopyPlan, CopyUnitResult, ReplicationState } from '../src/model';
import { connect, connectionInfo, withClient, type ConnectionInfo } from '../src/pg/connect';
import { listTables, serverMajor } from '../src/pg/catalog';
import { displayName, ident } from '../src/pg/sql';
import {
  createPublication,
  createSubscriptionSql,
  dropPublication,
  dropSlot,
  dropSubscription,
  replicationNames,
  slotState,
  subscriptionConninfo,
  subscriptionState,
} from '../src/pg/replication';
import { SnapshotCopier } from './copy';
import { activityLogger } from '../src/log';
import { durationMs, formatBytes, sizeBytes } from '../src/units';

export interface SyncInput {
  spec: MigrationSpec;
  migrationId: string;
}

/** The publication over every replicated table in scope (unlogged tables cannot be published). */
export async function preparePublication(input: SyncInput): Promise<{ publication: string; tables: number; replicaIdentityFull: string[] }> {
  const { spec, migrationId } = input;
  const names = replicationNames(migrationId);
  const info = await connectionInfo(spec.source, 'source');
  return withClient(info, 'source', async (source) => {
    const tables = (await listTables(source, spec)).filter((t) => !t.unlogged);
    const lacking = tables.filter((t) => !t.hasReplicaIdentity);
    if (lacking.length && !spec.logical.replicaIdentityFull) {
      throw ApplicationFailure.nonRetryable(
        `tables without a primary key or replica identity cannot replicate UPDATE/DELETE: ${lacking.map(displayName).join(', ')}; add primary keys, or set logical.replicaIdentityFull: true`,
        'LogicalNotPossible',
      );
    }
    const record = await createPublication(source, names.publication, tables, lacking);
    activityLogger('sync').info({ publication: names.publication, tables: tables.length }, 'publication ready');
    return { publication: names.publication, tables: tables.length, replicaIdentityFull: record.replicaIdentityChanged.map(displayName) };
  });
}

export interface SlotCopyResult {
  units: CopyUnitResult[];
  /** The slot's consistent point: the stream starts exactly after the copied snapshot. */
  consistentPoint: string;
}

/**
 * Creates the slot with an exported snapshot and copies every unit at that snapshot. A snapshot dies
 * with its connection: a retry drops the slot of the earlier attempt and starts again at a new one
 * (each unit clears its table or range on the target first), never mixing two snapshots.
 */
export async function copyAtSlot(input: SyncInput & { plan: CopyPlan }): Promise<SlotCopyResult> {
  const { spec, plan, migrationId } = input;
  const log = activityLogger('sync');
  const names = replicationNames(migrationId);
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  const major = await withClient(sourceInfo, 'source', async (source) => {
    if (await dropSlot(source, names.slot)) log.info({ slot: names.slot }, 'dropped the slot of an earlier attempt');
    return serverMajor(source);
  });
  const walsender = await connect(sourceInfo, 'source', { applicationName: 'pgmove slot', replication: 'database' });
  const copier = new SnapshotCopier(spec, plan, sourceInfo, targetInfo);
  // Slot creation waits for running transactions on the source: an abort ends it by ending the connection.
  copier.signal.addEventListener('abort', () => void walsender.end().catch(() => undefined), { once: true });
  const guard = setInterval(() => void checkRetainedWal(sourceInfo, names.slot, spec).catch((error: unknown) => copier.fail(error)), Math.max(1000, durationMs(spec.logical.statusInterval)));
  try {
    const created = await walsender.query<{ consistent_point: string; snapshot_name: string }>(
      major >= 15
        ? `CREATE_REPLICATION_SLOT ${ident(names.slot)} LOGICAL pgoutput (SNAPSHOT 'export')`
        : `CREATE_REPLICATION_SLOT ${ident(names.slot)} LOGICAL pgoutput EXPORT_SNAPSHOT`,
    );
    const { consistent_point: consistentPoint, snapshot_name: snapshot } = created.rows[0]!;
    log.info({ slot: names.slot, consistentPoint }, 'slot created; copying at its snapshot');
    // The walsender connection must stay idle while the snapshot is in use: it holds it.
    const units = await copier.copyUnits(snapshot);
    return { units, consistentPoint };
  } finally {
    clearInterval(guard);
    copier.stop();
    await walsender.end().catch(() => undefined);
  }
}

/** The WAL guardrail while the copy and post-data run (hours, on a large database): the slot already holds WAL. */
export async function checkRetainedWal(sourceInfo: ConnectionInfo, slot: string, spec: MigrationSpec): Promise<void> {
  const state = await withClient(sourceInfo, 'source', (source) => slotState(source, slot));
  const limit = sizeBytes(spec.logical.walLimitBytes);
  if (state && state.retainedWalBytes > limit) {
    throw ApplicationFailure.nonRetryable(
      `the replication slot holds ${formatBytes(state.retainedWalBytes)} of WAL on the source before syncing, above logical.walLimitBytes (${formatBytes(limit)}): stopping before the source's disk fills`,
      'WalLimitExceeded',
    );
  }
}

/** The subscription on the target, from the existing slot, without copying: streaming starts. */
export async function createSubscription(input: SyncInput): Promise<{ subscription: string; created: boolean }> {
  const { spec, migrationId } = input;
  const names = replicationNames(migrationId);
  const targetInfo = await connectionInfo(spec.target, 'target');
  const fromTarget = await sourceAsTargetSeesIt(spec);
  return withClient(targetInfo, 'target', async (target) => {
    const state = await subscriptionState(target, names.subscription);
    if (state.exists) {
      if (!state.enabled) await target.query(`ALTER SUBSCRIPTION ${ident(names.subscription)} ENABLE`);
      return { subscription: names.subscription, created: false };
    }
    try {
      await quietStatementLogging(target);
      await target.query(createSubscriptionSql(names, subscriptionConninfo(fromTarget), { connect: true, enabled: true }));
    } catch (error) {
      throw subscriptionError(error, fromTarget);
    }
    activityLogger('sync').info({ subscription: names.subscription }, 'subscription created from the slot; streaming');
    return { subscription: names.subscription, created: true };
  });
}

/**
 * The CREATE SUBSCRIPTION statement holds the source's password: keep the target server from logging it
 * (on a failure, or with log_statement = ddl). Only a superuser may change these; others are told in
 * the README to check the target's logging settings.
 */
export async function quietStatementLogging(target: Client): Promise<void> {
  // Outside a transaction block: a refused SET leaves the session usable.
  for (const sql of ['SET log_min_error_statement = panic', 'SET log_statement = none']) await target.query(sql).catch(() => undefined);
}

/** The source as the target server connects to it: logical.sourceUriFromTarget, else source.uri. */
export async function sourceAsTargetSeesIt(spec: MigrationSpec): Promise<ConnectionInfo> {
  return connectionInfo({ uri: spec.logical.sourceUriFromTarget ?? spec.source.uri, password: spec.source.password }, 'source');
}

export function subscriptionError(error: unknown, fromTarget: ConnectionInfo): Error {
  const message = (error as Error).message ?? String(error);
  if (/could not connect to the publisher/i.test(message)) {
    return ApplicationFailure.nonRetryable(
      `the target cannot connect to the source at ${fromTarget.host}:${fromTarget.port} (${message}); allow the target's address in the source's pg_hba.conf / security group, or set logical.sourceUriFromTarget to the address the target reaches the source at`,
      'LogicalNotPossible',
    );
  }
  return error instanceof Error ? error : new Error(message);
}

export interface StatusInput extends SyncInput {
  /** The tables the migration started with: others found on the source are new (DDL is not replicated). */
  knownTables: string[];
}

/** One measurement of the stream: lag, retained WAL, apply worker, new tables. */
export async function replicationStatus(input: StatusInput): Promise<ReplicationState> {
  const { spec, migrationId } = input;
  const names = replicationNames(migrationId);
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  const [slot, newTables] = await withClient(sourceInfo, 'source', async (source) => [
    await slotState(source, names.slot),
    await newTablesOnSource(source, spec, input.knownTables),
  ] as const);
  if (!slot || slot.walStatus === 'lost') {
    throw ApplicationFailure.nonRetryable(
      `replication slot ${names.slot} ${slot ? 'was invalidated (max_slot_wal_keep_size)' : 'is gone from the source (dropped by someone)'}: changes since then are lost to the target; abort and start the migration again`,
      'SlotLost',
    );
  }
  const subscription = await withClient(targetInfo, 'target', (target) => subscriptionState(target, names.subscription));
  return {
    lagBytes: slot.lagBytes,
    lagSeconds: slot.lagSeconds,
    retainedWalBytes: slot.retainedWalBytes,
    streaming: subscription.streaming && slot.activePid !== null,
    applyErrors: subscription.applyErrors,
    newTables,
    measuredAt: new Date().toISOString(),
  };
}

async function newTablesOnSource(source: Client, spec: MigrationSpec, knownTables: string[]): Promise<string[]> {
  const known = new Set(knownTables);
  return (await listTables(source, spec)).map(displayName).filter((name) => !known.has(name)).sort();
}

/** Drops the subscription (target), then the slot and the publication (source); idempotent. */
export async function dropReplication(input: SyncInput): Promise<{ dropped: string[] }> {
  const { spec, migrationId } = input;
  const names = replicationNames(migrationId);
  const dropped: string[] = [];
  const targetInfo = await connectionInfo(spec.target, 'target');
  // An unreachable target must not keep the slot alive on the source: the source part runs regardless,
  // and the target part is retried (the subscription no longer names a slot once it is dropped).
  const targetError = await withClient(targetInfo, 'target', (target) => dropSubscription(target, names.subscription)).then(
    (was) => void (was && dropped.push(`subscription ${names.subscription}`)),
    (error: unknown) => error,
  );
  const sourceInfo = await connectionInfo(spec.source, 'source');
  await withClient(sourceInfo, 'source', async (source) => {
    // The source may be frozen (read-only by default) at this point.
    await source.query('SET default_transaction_read_only = off');
    if (await dropSlot(source, names.slot)) dropped.push(`slot ${names.slot}`);
    if (await dropPublication(source, names.publication)) dropped.push(`publication ${names.publication}`);
  });
  activityLogger('sync').info({ dropped }, 'replication objects dropped');
  if (targetError) throw targetError;
  return { dropped };
}
