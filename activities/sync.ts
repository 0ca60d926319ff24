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
import type { CopyGeneration, CopyPlan, CopyUnitResult, ReplicationState } from '../src/model';
import { connect, connectionInfo, withClient, type ConnectionInfo } from '../src/pg/connect';
import { listTables, serverMajor } from '../src/pg/catalog';
import { displayName, ident } from '../src/pg/sql';
import {
  createPublication,
  createSubscriptionSql,
  dropPublication,
  dropSlot,
  dropSubscription,
  knownTablesOf,
  replicationNames,
  slotState,
  subscriptionApplyOptions,
  subscriptionConninfo,
  subscriptionState,
} from '../src/pg/replication';
import { ensureUnitPublications, generationNames, liveGenerations, ownSourceObjects, ownSubscriptions, recordUnitCopied, withGenerationLock } from '../src/pg/generations';
import { SnapshotCopier } from './copy';
import { activityLogger } from '../src/log';
import { quietStatementLogging, redactPassword } from '../src/pg/statement-privacy';
import { durationMs, formatBytes, sizeBytes } from '../src/units';
import { errorMessage } from '../src/error-text';

export interface SyncInput {
  spec: MigrationSpec;
  migrationId: string;
}

/** The publication over every replicated table in scope (unlogged tables cannot be published). */
export async function preparePublication(input: SyncInput): Promise<{ publication: string; tables: number; replicaIdentityFull: string[]; replicaIdentityFullCount: number }> {
  const { spec, migrationId } = input;
  const names = replicationNames(migrationId);
  const info = await connectionInfo(spec.source, 'source');
  return withClient(info, 'source', async (source) => {
    const inScope = await listTables(source, spec);
    const tables = inScope.filter((t) => !t.unlogged);
    const lacking = tables.filter((t) => !t.hasReplicaIdentity);
    if (lacking.length && !spec.logical.replicaIdentityFull) {
      throw ApplicationFailure.nonRetryable(
        `tables without a primary key or replica identity cannot replicate UPDATE/DELETE: ${lacking.map(displayName).join(', ')}; add primary keys, or set logical.replicaIdentityFull: true`,
        'LogicalNotPossible',
      );
    }
    const record = await createPublication(source, names.publication, tables, lacking, inScope.map(displayName));
    activityLogger('sync').info({ publication: names.publication, tables: tables.length }, 'publication ready');
    // A bounded list: the result lands in the workflow's history.
    const changed = record.replicaIdentityChanged.map(displayName);
    return { publication: names.publication, tables: tables.length, replicaIdentityFull: changed.slice(0, 100), replicaIdentityFullCount: changed.length };
  });
}

export interface SlotCopyResult {
  units: CopyUnitResult[];
  /** The newest slot's consistent point: the stream starts exactly after the copied snapshot. */
  consistentPoint?: string;
  /** Which units were copied at which slot: earlier generations were kept through a crash. */
  generations?: CopyGeneration[];
}

/**
 * Copies every unit at the snapshot of a new slot — except units an earlier attempt already copied at
 * a slot that still exists (a copy generation, src/pg/generations.ts): those are kept, and only the
 * rest is copied again, at the new slot's snapshot. A slot whose generation kept nothing is dropped.
 */
export async function copyAtSlot(input: SyncInput & { plan: CopyPlan }): Promise<SlotCopyResult> {
  const { spec, plan, migrationId } = input;
  const log = activityLogger('sync');
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  const recorder = await connect(sourceInfo, 'source', { applicationName: 'pgmove slot' });
  try {
    const { major, kept, generation } = await withGenerationLock(recorder, migrationId, async () => {
      const major = await serverMajor(recorder);
      await ensureUnitPublications(recorder, migrationId, plan, major);
      const kept = await liveGenerations(recorder, migrationId);
      const keep = new Set(kept.map((g) => g.names.slot));
      for (const slot of (await ownSourceObjects(recorder, migrationId)).slots.filter((s) => !keep.has(s))) {
        if (await dropSlot(recorder, slot)) log.info({ slot }, 'dropped the slot of an attempt that kept nothing');
      }
      return { major, kept, generation: Math.max(-1, ...kept.map((g) => g.generation)) + 1 };
    });
    const done = new Set(kept.flatMap((g) => g.units.map((u) => u.unitId)));
    const remaining = plan.units.filter((u) => !done.has(u.id));
    if (kept.length) log.info({ keptUnits: done.size, remainingUnits: remaining.length, generation }, 'resuming the copy: units copied at earlier slots are kept');
    const generations = kept.map((g) => generationOf(migrationId, g.generation, g.units, plan));
    if (remaining.length === 0) return { units: kept.flatMap((g) => g.units), generations };
    const keptBytes = plan.units.filter((u) => done.has(u.id)).reduce((sum, u) => sum + u.bytes, 0);
    const leading = { generation, keptUnits: done.size, keptMB: Math.round(keptBytes / 2 ** 20) };
    // Records go one at a time over one session (its advisory lock would not exclude its own lanes).
    let recording = Promise.resolve();
    const record = (result: CopyUnitResult) => (recording = recording.then(() => recordUnitCopied(recorder, migrationId, generation, result)));
    const copy = await copyAtNewSlot(spec, migrationId, generation, major, { ...plan, units: remaining }, sourceInfo, targetInfo, leading, record);
    generations.push(generationOf(migrationId, generation, copy.units, plan));
    return { units: [...kept.flatMap((g) => g.units), ...copy.units], consistentPoint: copy.consistentPoint, generations };
  } finally {
    await recorder.end().catch(() => undefined);
  }
}

function generationOf(migrationId: string, generation: number, units: CopyUnitResult[], plan: CopyPlan): CopyGeneration {
  const tables = units.flatMap((u) => u.tables);
  const planned = new Map(plan.units.map((u) => [u.id, u]));
  return {
    generation,
    slot: generationNames(migrationId, generation).slot,
    units: units.map((u) => u.unitId),
    tables: new Set(units.flatMap((u) => planned.get(u.unitId)?.tables.map(displayName) ?? [])).size,
    rows: tables.reduce((sum, t) => sum + t.rows, 0),
    bytes: tables.reduce((sum, t) => sum + t.bytes, 0),
  };
}

/** One generation: a new slot with an exported snapshot, and the units copied at it. */
async function copyAtNewSlot(
  spec: MigrationSpec,
  migrationId: string,
  generation: number,
  major: number,
  plan: CopyPlan,
  sourceInfo: ConnectionInfo,
  targetInfo: ConnectionInfo,
  leading: Record<string, unknown>,
  onUnitCopied: (result: CopyUnitResult) => Promise<void>,
): Promise<{ units: CopyUnitResult[]; consistentPoint: string }> {
  const log = activityLogger('sync');
  const { slot } = generationNames(migrationId, generation);
  const walsender = await connect(sourceInfo, 'source', { applicationName: 'pgmove slot', replication: 'database' });
  const copier = new SnapshotCopier(spec, plan, sourceInfo, targetInfo, leading);
  // Slot creation waits for running transactions on the source: an abort ends it by ending the connection.
  copier.signal.addEventListener('abort', () => void walsender.end().catch(() => undefined), { once: true });
  const guard = setInterval(() => void checkRetainedWal(sourceInfo, migrationId, spec).catch((error: unknown) => copier.fail(error)), Math.max(1000, durationMs(spec.logical.statusInterval)));
  try {
    const created = await walsender.query<{ consistent_point: string; snapshot_name: string }>(
      major >= 15
        ? `CREATE_REPLICATION_SLOT ${ident(slot)} LOGICAL pgoutput (SNAPSHOT 'export')`
        : `CREATE_REPLICATION_SLOT ${ident(slot)} LOGICAL pgoutput EXPORT_SNAPSHOT`,
    );
    const { consistent_point: consistentPoint, snapshot_name: snapshot } = created.rows[0]!;
    log.info({ slot, generation, consistentPoint, units: plan.units.length }, 'slot created; copying at its snapshot');
    // The walsender connection must stay idle while the snapshot is in use: it holds it.
    const units = await copier.copyUnits(snapshot, onUnitCopied);
    return { units, consistentPoint };
  } finally {
    clearInterval(guard);
    copier.stop();
    await walsender.end().catch(() => undefined);
  }
}

/** The WAL guardrail while the copy and post-data run (hours, on a large database): the slots already hold WAL. */
export async function checkRetainedWal(sourceInfo: ConnectionInfo, migrationId: string, spec: MigrationSpec): Promise<void> {
  const states = await withClient(sourceInfo, 'source', async (source) => {
    const { slots } = await ownSourceObjects(source, migrationId);
    return Promise.all(slots.map((slot) => slotState(source, slot)));
  });
  const retained = Math.max(0, ...states.map((state) => state?.retainedWalBytes ?? 0));
  const limit = sizeBytes(spec.logical.walLimitBytes);
  if (retained > limit) {
    throw ApplicationFailure.nonRetryable(
      `the replication slot holds ${formatBytes(retained)} of WAL on the source before syncing, above logical.walLimitBytes (${formatBytes(limit)}): stopping before the source's disk fills`,
      'WalLimitExceeded',
    );
  }
}

/**
 * The subscriptions on the target, from the existing slots, without copying: streaming starts. One per
 * copy generation, through the publications of the units copied at its slot's snapshot; with a single
 * generation 0 (no crash during the copy), the one subscription to the main publication.
 */
export async function createSubscription(input: SyncInput): Promise<{ subscription: string; created: boolean }> {
  const { spec, migrationId } = input;
  const names = replicationNames(migrationId);
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  const fromTarget = await sourceAsTargetSeesIt(spec);
  const generations = await withClient(sourceInfo, 'source', (source) => liveGenerations(source, migrationId));
  const wanted =
    generations.length <= 1 && (generations[0]?.generation ?? 0) === 0
      ? [{ names, publications: [names.publication] }]
      : generations.map((g) => ({ names: g.names, publications: g.publications }));
  let created = false;
  await withClient(targetInfo, 'target', async (target) => {
    const apply = subscriptionApplyOptions(await serverMajor(target), spec.logical.applyStreaming);
    for (const generation of wanted) {
      const state = await subscriptionState(target, generation.names.subscription);
      if (state.exists) {
        if (!state.enabled) await target.query(`ALTER SUBSCRIPTION ${ident(generation.names.subscription)} ENABLE`);
        continue;
      }
      // One transaction (allowed: the slot exists, create_slot = false), so SET LOCAL keeps the statement
      // and its connection string, password included, out of the target's log and statistics.
      await target.query('BEGIN');
      try {
        await quietStatementLogging(target);
        await target.query(createSubscriptionSql(generation.names, subscriptionConninfo(fromTarget), { connect: true, enabled: true, publications: generation.publications, apply }));
        await target.query('COMMIT');
      } catch (error) {
        await target.query('ROLLBACK').catch(() => undefined);
        throw subscriptionError(error, fromTarget);
      }
      created = true;
      activityLogger('sync').info({ subscription: generation.names.subscription, publications: generation.publications.length, apply }, 'subscription created from the slot; streaming');
    }
  });
  if (wanted[0]!.publications[0] === names.publication) {
    // One generation streams through the main publication: the unit publications have served.
    await withClient(sourceInfo, 'source', async (source) => {
      for (const publication of (await ownSourceObjects(source, migrationId)).publications.filter((p) => p !== names.publication)) await dropPublication(source, publication);
    });
  }
  return { subscription: wanted.map((g) => g.names.subscription).join(', '), created };
}

/**
 * The source as the target server connects to it: logical.sourceUriFromTarget, else source.uri. The
 * sslmode applies either way; sslrootcert only from sourceUriFromTarget: source.uri's names a file on
 * the worker, which the target server does not have (README, TLS).
 */
export async function sourceAsTargetSeesIt(spec: MigrationSpec): Promise<ConnectionInfo> {
  const info = await connectionInfo({ uri: spec.logical.sourceUriFromTarget ?? spec.source.uri, password: spec.source.password }, 'source');
  if (!spec.logical.sourceUriFromTarget) delete info.sslrootcert;
  return info;
}

/** The error of a CREATE SUBSCRIPTION, never with the source's password in its message or stack. */
export function subscriptionError(error: unknown, fromTarget: ConnectionInfo): Error {
  const message = redactPassword(errorMessage(error), fromTarget.password);
  if (/could not connect to the publisher/i.test(message)) {
    return ApplicationFailure.nonRetryable(
      `the target cannot connect to the source at ${fromTarget.host}:${fromTarget.port} (${message}); allow the target's address in the source's pg_hba.conf / security group, or set logical.sourceUriFromTarget to the address the target reaches the source at`,
      'LogicalNotPossible',
    );
  }
  if (!(error instanceof Error)) return new Error(message);
  error.message = message;
  if (error.stack) error.stack = redactPassword(error.stack, fromTarget.password);
  return error;
}

export interface StatusInput extends SyncInput {
  /**
   * The tables the migration started with: others found on the source are new (DDL is not replicated).
   * Omitted by newer workflows: the publication's record on the source holds them (knownTablesOf).
   */
  knownTables?: string[];
}

/** One measurement of the stream (every copy generation's): lag, retained WAL, apply workers, new tables. */
export async function replicationStatus(input: StatusInput): Promise<ReplicationState> {
  const { spec, migrationId } = input;
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  const subscriptions = await withClient(targetInfo, 'target', async (target) => {
    const found = await ownSubscriptions(target, migrationId);
    // Before the first subscription exists, generation 0's names stand for the stream.
    const names = found.length ? found : [replicationNames(migrationId).subscription];
    return Promise.all(names.map(async (name) => ({ name, state: await subscriptionState(target, name) })));
  });
  // Every generation's subscription and slot share a name.
  const [slots, newTables] = await withClient(sourceInfo, 'source', async (source) => [
    await Promise.all(subscriptions.map(async ({ name }) => ({ name, state: await slotState(source, name) }))),
    await newTablesOnSource(source, spec, await knownTablesOf(source, migrationId, input.knownTables)),
  ] as const);
  const lost = slots.find(({ state }) => !state || state.walStatus === 'lost');
  if (lost) {
    throw ApplicationFailure.nonRetryable(
      `replication slot ${lost.name} ${lost.state ? 'was invalidated (max_slot_wal_keep_size)' : 'is gone from the source (dropped by someone)'}: changes since then are lost to the target; abort and start the migration again`,
      'SlotLost',
    );
  }
  const states = slots.map(({ state }) => state!);
  const largest = (key: 'lagBytes' | 'lagSeconds' | 'retainedWalBytes') => Math.max(...states.map((state) => state[key]));
  return {
    lagBytes: largest('lagBytes'),
    lagSeconds: largest('lagSeconds'),
    retainedWalBytes: largest('retainedWalBytes'),
    streaming: subscriptions.every(({ state }) => state.streaming) && states.every((state) => state.activePid !== null),
    applyErrors: subscriptions.reduce((sum, { state }) => sum + state.applyErrors, 0),
    newTables,
    measuredAt: new Date().toISOString(),
  };
}

async function newTablesOnSource(source: Client, spec: MigrationSpec, knownTables: string[]): Promise<string[]> {
  const known = new Set(knownTables);
  return (await listTables(source, spec)).map(displayName).filter((name) => !known.has(name)).sort();
}

/**
 * Drops every copy generation's subscription (target), then the slots and the publications (source),
 * all found by their names' prefix; idempotent.
 */
export async function dropReplication(input: SyncInput): Promise<{ dropped: string[] }> {
  const { spec, migrationId } = input;
  const dropped: string[] = [];
  const targetInfo = await connectionInfo(spec.target, 'target');
  // An unreachable target must not keep the slots alive on the source: the source part runs regardless,
  // and the target part is retried (a subscription no longer names a slot once it is dropped).
  const targetError = await withClient(targetInfo, 'target', async (target) => {
    for (const subscription of await ownSubscriptions(target, migrationId)) {
      if (await dropSubscription(target, subscription)) dropped.push(`subscription ${subscription}`);
    }
  }).catch((error: unknown) => error);
  const sourceInfo = await connectionInfo(spec.source, 'source');
  await withClient(sourceInfo, 'source', async (source) => {
    // The source may be frozen (read-only by default) at this point.
    await source.query('SET default_transaction_read_only = off');
    const { slots, publications } = await ownSourceObjects(source, migrationId);
    for (const slot of slots) if (await dropSlot(source, slot)) dropped.push(`slot ${slot}`);
    for (const publication of publications) if (await dropPublication(source, publication)) dropped.push(`publication ${publication}`);
  });
  activityLogger('sync').info({ dropped }, 'replication objects dropped');
  if (targetError) throw targetError;
  return { dropped };
}
