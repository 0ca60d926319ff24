/**
 * Phase 9, the cutover of the logical method, timed step by step:
 *   freeze the source (a fence for every role, or the operator's hook) → verify it → refuse if tables
 *   or columns changed on the source (DDL is not replicated) → drain until the target has confirmed the
 *   source's current WAL position → stop the subscription → sequences → unlogged tables and large
 *   objects → row counts → [target ready] → switch hook → [switched] → checksums of every table, at a
 *   snapshot of the target taken before the switch (the application may write to it afterwards).
 * Anything failing before the switch throws: the workflow then unfreezes the source and resumes the
 * stream (`abandonCutover`, in cutover-recovery.ts), so a failed cutover never leaves the source frozen. The switch is
 * recorded on the source (publication comment): a retry after it never freezes or switches again.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { ClusterSpec } from '../src/cluster-spec';
import { durationMs } from '../src/units';
import type { CutoverAttempt, CutoverRequest, ValidationReport } from '../src/model';
import { Context } from '@temporalio/activity';
import { cutoverDecisionQuery, cutoverVoteSignal } from '../workflows/messages';
import { connect, connectionInfo, withClient, type ConnectionInfo } from '../src/pg/connect';
import { listTables, type TableInfo } from '../src/pg/catalog';
import { displayName, ident, qualified } from '../src/pg/sql';
import { knownTablesOf, lsnToBigInt, readPublicationRecord, replicationNames, slotState, writePublicationRecord, type PublicationRecord, type SlotState } from '../src/pg/replication';
import { ownSubscriptions } from '../src/pg/generations';
import { migrationHookContext, runHook, type HookContext } from '../src/hooks';
import { startHeartbeat } from '../src/heartbeat';
import { StepTimer } from '../src/step-timer';
import { activityLogger } from '../src/log';
import { freezeSource, readFreezeState, verifyFence } from './freeze';
import { syncSequences } from './sequences';
import { copyLargeObjectsWith, copyTableOf, runUnit } from './copy';
import { validate } from './validate';
import { markTargetSwitching } from '../src/pg/target-marker';
import { nextBatch } from '../src/pg/table-checksums';
import { dropReverseStreamWith, startReverseAtCutover } from './reverse-stream';
import { pollUntil } from '../src/poll';
import { errorMessage } from '../src/error-text';

export interface CutoverInput {
  spec: MigrationSpec;
  migrationId: string;
  /** The tables the migration started with; newer workflows omit it (the publication's record holds them). */
  knownTables?: string[];
  /** Part of a cluster cutover: vote ready instead of running the switch hook, then obey the decision. */
  coordinated?: CutoverRequest['coordinated'];
}

export interface CutoverResult {
  timing: Pick<CutoverAttempt, 'freezeToReadyMs' | 'freezeToSwitchedMs' | 'steps'>;
  switchedAt: string;
  validation: ValidationReport;
  /** The worker restarted after the switch: checksums ran on the live target, not at the cutover snapshot. */
  validatedLive: boolean;
  /** What the switch hook printed (last 4 kB). */
  switchHookOutput?: string;
}

export async function cutover(input: CutoverInput): Promise<CutoverResult> {
  const { spec, migrationId } = input;
  const log = activityLogger('cutover');
  const names = replicationNames(migrationId);
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  const hookContext = migrationHookContext(spec, migrationId);
  const timer = new StepTimer();
  const heartbeat = startHeartbeat(() => timer.details());
  const source = await connect(sourceInfo, 'source', { applicationName: 'pgmove cutover' });
  const target = await connect(targetInfo, 'target', { applicationName: 'pgmove cutover' });
  let snapshotHolder: Client | undefined;
  let switchHookOutput: string | undefined;
  try {
    await source.query('SET default_transaction_read_only = off');
    let record = await readPublicationRecord(source, names.publication);
    if (!record) throw ApplicationFailure.nonRetryable(`publication ${names.publication} is gone from the source`, 'CutoverFailed');
    // The target's own record of the switch (a resumed attempt may have stopped before writing it).
    if (record.switchingAt) await markTargetSwitching(target, migrationId, record.switchingAt);
    if (record.switchingAt && !record.switchedAt) {
      // The worker stopped while the switch hook ran: only the hook is left (hooks must be idempotent).
      timer.enter(input.coordinated ? 'awaitDecision' : 'switchHook');
      log.warn(input.coordinated ? 'resuming a cluster cutover: voting again and waiting for the decision' : 'resuming a switch that was under way: running the switch hook again');
      if (input.coordinated) await awaitDecision(migrationId, source, names.publication, record, input.coordinated, heartbeat.signal);
      else switchHookOutput = await switchHook(source, names.publication, record, spec, hookContext, heartbeat.signal);
      record = { ...record, switchedAt: new Date().toISOString() };
      await writePublicationRecord(source, names.publication, record);
    }
    if (record.switchedAt) {
      timer.enter('validate');
      return { timing: {}, switchedAt: record.switchedAt, validation: await validateOrReport({ spec }), validatedLive: true, switchHookOutput };
    }
    // A retry after a lost worker finds the source still frozen: the freeze is measured from the first
    // attempt's, and goes on only if that was recent (otherwise unfrozen, back to syncing).
    const frozenSince = (await frozenByUs(source, spec, migrationId, record)) ? record.freezeStartedAt : undefined;
    if (frozenSince) refuseLateResume(spec, Date.now() - Date.parse(frozenSince));
    // Every copy generation's subscription and slot (they share names). An earlier attempt may have
    // stopped the stream before failing.
    const subscriptions = await streamNames(target, migrationId);
    // A reverse stream an earlier attempt made must not see the changes applied from here on (they would
    // be sent back to the source): it is made again after this attempt's drain.
    if (spec.cutover.rollbackWindow) await dropReverseStreamWith(source, target, migrationId);
    for (const subscription of subscriptions) await target.query(`ALTER SUBSCRIPTION ${ident(subscription)} ENABLE`);
    record = { ...record, freezeStartedAt: frozenSince ?? new Date().toISOString(), ...(spec.cutover.freeze === 'hook' ? { frozenByHook: true } : {}) };
    await writePublicationRecord(source, names.publication, record);

    const mark = timer.restart();

    // The window starts when the freeze starts: from then on the application's writes may be refused.
    const frozenAt = frozenSince ? Date.parse(frozenSince) : mark;
    if (frozenSince) timer.steps.lostWorker = mark - frozenAt;
    if (spec.cutover.freeze === 'hook') await timer.timed('freeze', () => runHook('freezeHook', spec.cutover.freezeHook!, hookContext, durationMs(spec.cutover.hookTimeout), heartbeat.signal));
    else await timer.timed('freeze', () => freezeSource(spec, migrationId));
    if (spec.cutover.freeze === 'readOnly') await timer.timed('verifyFence', () => verifyFence(source));
    // One catalog read inside the freeze: the drift check, the counts and the unlogged copy share it.
    const tables = await listTables(source, spec, { sizes: false });
    await timer.timed('ddlCheck', async () => refuseSchemaDrift(source, target, tables, await knownTablesOf(source, migrationId, input.knownTables)));
    // The frozen source can be counted while the target drains.
    const sourceCounts = spec.cutover.quickValidation ? rowCounts(sourceInfo, 'source', tables, spec.jobs) : undefined;
    sourceCounts?.catch(() => undefined); // awaited below; a failure surfaces there
    await timer.timed('drain', () => drain(source, target, subscriptions, durationMs(spec.cutover.drainTimeout), heartbeat.signal));
    await timer.timed('stopSubscription', async () => {
      for (const subscription of subscriptions) await target.query(`ALTER SUBSCRIPTION ${ident(subscription)} DISABLE`);
    });
    await timer.timed('sequences', () => syncSequences(spec));
    await timer.timed('unloggedAndLargeObjects', () => copyUnreplicated(spec, sourceInfo, targetInfo, tables, heartbeat.signal));
    if (sourceCounts) await timer.timed('rowCounts', async () => compareCounts(await sourceCounts, await rowCounts(targetInfo, 'target', tables, spec.jobs)));
    // Before the switch: every write the application makes on the target streams back to the old source.
    if (spec.cutover.rollbackWindow) await timer.timed('reverseStream', async () => startReverseAtCutover(spec, migrationId, source, target, tables, await knownTablesOf(source, migrationId, input.knownTables)));
    const readyAt = timer.mark;
    // The target as of the cutover, for the checksums after the switch.
    snapshotHolder = await connect(targetInfo, 'target', { applicationName: 'pgmove cutover snapshot' });
    await snapshotHolder.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snapshot = (await snapshotHolder.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]!.id;
    // Past this mark a cutover never goes back: a retry only finishes the switch.
    record = { ...record, switchingAt: new Date().toISOString() };
    // The target first: a target marked switching is never reset by pgmove recover, even after the source's record is dropped.
    await markTargetSwitching(target, migrationId, record.switchingAt!);
    await writePublicationRecord(source, names.publication, record);
    if (input.coordinated) await timer.timed('awaitDecision', () => awaitDecision(migrationId, source, names.publication, record!, input.coordinated!, heartbeat.signal));
    else switchHookOutput = await timer.timed('switchHook', () => switchHook(source, names.publication, record!, spec, hookContext, heartbeat.signal));
    const switchedAt = new Date().toISOString();
    await writePublicationRecord(source, names.publication, { ...record, switchedAt });
    const timing = { freezeToReadyMs: readyAt - frozenAt, freezeToSwitchedMs: Date.now() - frozenAt, steps: { ...timer.steps } };
    log.info(timing, 'switched');
    timer.enter('validate');
    const validation = await validateOrReport({ spec, targetSnapshot: snapshot });
    return { timing, switchedAt, validation, validatedLive: false, switchHookOutput };
  } finally {
    heartbeat.stop();
    await snapshotHolder?.end().catch(() => undefined);
    await source.end().catch(() => undefined);
    await target.end().catch(() => undefined);
  }
}

/** The source is frozen by this migration's cutover right now (a lost attempt left it so). */
export async function frozenByUs(source: Client, spec: MigrationSpec, migrationId: string, record: PublicationRecord): Promise<boolean> {
  if (spec.cutover.freeze === 'hook') return record.frozenByHook === true;
  return (await readFreezeState(source))?.migrationId === migrationId;
}

/**
 * A retried cutover whose source has been frozen longer than `cutover.resumeFrozenWithin` (no worker took
 * the retry up in time) gives up: the workflow unfreezes the source and returns to syncing, rather than
 * keep the application's writes refused while it catches up.
 */
export function refuseLateResume(spec: MigrationSpec, frozenForMs: number): void {
  const limitMs = durationMs(spec.cutover.resumeFrozenWithin ?? '30s');
  if (frozenForMs <= limitMs) return;
  throw ApplicationFailure.nonRetryable(
    `the cutover's worker was lost with the source frozen, and the retry started ${Math.round(frozenForMs / 1000)} s after the freeze (cutover.resumeFrozenWithin: ${spec.cutover.resumeFrozenWithin ?? '30s'}): the source is unfrozen and the migration returns to syncing; request the cutover again`,
    'CutoverAbandoned',
  );
}

/**
 * Runs the switch hook under the `switchingAt` mark. A hook that exits non-zero (or times out) did not
 * switch — that is its contract — so the mark is taken back and the cutover can be abandoned; only a
 * worker that stops while the hook runs leaves the mark, and the retry runs the (idempotent) hook again.
 */
async function switchHook(source: Client, publication: string, record: PublicationRecord, spec: MigrationSpec, context: HookContext, signal: AbortSignal): Promise<string | undefined> {
  if (!spec.cutover.switchHook) return undefined;
  try {
    return await runHook('switchHook', spec.cutover.switchHook, context, durationMs(spec.cutover.hookTimeout), signal);
  } catch (error) {
    if (error instanceof ApplicationFailure && error.type === 'HookFailed') {
      await writePublicationRecord(source, publication, { ...record, switchingAt: undefined, switchedAt: undefined });
    }
    throw error;
  }
}

/**
 * A participant of a cluster cutover, frozen, drained and marked "switching": votes ready and waits for
 * the coordinator's decision however long it takes (two-phase commit: having voted, it may not go back
 * on its own). `abandon` takes the mark back, so the workflow unfreezes the source and resumes syncing.
 */
async function awaitDecision(workflowId: string, source: Client, publication: string, record: PublicationRecord, coordinated: NonNullable<CutoverRequest['coordinated']>, signal: AbortSignal): Promise<void> {
  const parent = Context.current().client.workflow.getHandle(coordinated.parentId);
  await parent.signal(cutoverVoteSignal, { workflowId, attempt: coordinated.attempt, vote: 'ready' });
  await pollUntil(
    async () => {
      const decision = await parent.query(cutoverDecisionQuery, coordinated.attempt).catch(() => undefined);
      if (decision === 'switch') return true;
      if (decision === 'abandon') {
        await writePublicationRecord(source, publication, { ...record, switchingAt: undefined, switchedAt: undefined });
        throw ApplicationFailure.nonRetryable('the cluster cutover was called off (another database was not ready, or the switch hook failed)', 'CutoverAbandoned');
      }
      return undefined;
    },
    {
      intervalMs: 200,
      signal,
      what: 'the cluster cutover decision',
      cancelledError: () => ApplicationFailure.retryable('cancelled while waiting for the cluster cutover decision', 'Cancelled'),
    },
  );
}

/** After the switch, a validation that cannot run is reported (the cutover itself stands). */
export async function validateOrReport(input: Parameters<typeof validate>[0]): Promise<ValidationReport> {
  try {
    return await validate(input);
  } catch (error) {
    const summary = `validation could not run after the switch: ${errorMessage(error)}; run it again by comparing the databases (the target is live)`;
    return { ok: false, tables: [], sequences: [], schemaDifferences: [], largeObjects: { source: 0, target: 0, ok: false }, summary };
  }
}

/** Cluster cutover (mode together): the one switch hook, once every database is ready; exit 0 = switched. */
export async function clusterSwitchHook(input: { spec: ClusterSpec; targets: string[] }): Promise<void> {
  const { spec } = input;
  const heartbeat = startHeartbeat(() => ({ step: 'clusterSwitchHook', targets: input.targets }));
  try {
    const context: HookContext = { migrationId: spec.id, sourceUri: spec.source.uri, targetUri: spec.target.uri, secretRefs: [spec.source.password, spec.target.password] };
    await runHook('switchHook', spec.cutover.switchHook!, { ...context, extraEnv: { PGMOVE_TARGET_DATABASES: input.targets.join(',') } }, durationMs(spec.cutover.hookTimeout), heartbeat.signal);
  } finally {
    heartbeat.stop();
  }
}

/** The subscriptions (and slots: same names) of every copy generation; generation 0's when none is found. */
async function streamNames(target: Client, migrationId: string): Promise<string[]> {
  const found = await ownSubscriptions(target, migrationId);
  return found.length ? found : [replicationNames(migrationId).subscription];
}

/** Waits until the subscriber has confirmed, on every slot, everything the (frozen) source has written so far. */
export async function drain(source: Client, target: Client, slots: string[], timeoutMs: number, signal: AbortSignal): Promise<void> {
  // The insert position: every commit of the ended sessions is before it, also those not yet written out
  // (synchronous_commit = off); the flushed message below makes them readable for the walsender.
  const goal = lsnToBigInt((await source.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0]!.lsn);
  // Whatever the servers' defaults: these commits must flush.
  await target.query('SET synchronous_commit = on');
  await source.query('SET synchronous_commit = on');
  let behind: { slot: string; state: SlotState } | undefined;
  await pollUntil(
    async () => {
      // The apply worker commits without waiting for its WAL flush and reports only flushed positions,
      // and a walsender reads only flushed WAL: a synchronous commit on the target flushes the applied
      // changes now (not at the WAL writer's next round), and a flushed logical message on the source (no
      // data, not published) makes the walsender ask the subscriber for its position. The drain then
      // ends within milliseconds of the last apply.
      await target.query('SELECT pg_current_xact_id()');
      await source.query(`SELECT pg_logical_emit_message(true, 'pgmove', 'drain')`);
      behind = undefined;
      for (const slot of slots) {
        const state = await slotState(source, slot);
        if (!state) throw ApplicationFailure.nonRetryable(`replication slot ${slot} is gone from the source`, 'CutoverFailed');
        if (!state.confirmedFlushLsn || lsnToBigInt(state.confirmedFlushLsn) < goal) behind ??= { slot, state };
      }
      return behind ? undefined : true;
    },
    {
      intervalMs: 10,
      timeoutMs,
      signal,
      what: 'the drain',
      cancelledError: () => ApplicationFailure.retryable('cutover cancelled while draining', 'Cancelled'),
      timeoutError: () => {
        const { slot, state } = behind!;
        return ApplicationFailure.nonRetryable(
          `the target did not catch up within cutover.drainTimeout (${timeoutMs / 1000}s): ${Number(goal - lsnToBigInt(state.confirmedFlushLsn ?? '0/0'))} bytes still unconfirmed on slot ${slot}${state.activePid === null ? ', and its subscription is not connected (see the target server log)' : ''}`,
          'CutoverFailed',
        );
      },
    },
  );
}

/** DDL is not replicated: new tables, or columns that differ, refuse the cutover with the list. */
export async function refuseSchemaDrift(source: Client, target: Client, tables: TableInfo[], knownTables: string[], side = 'the source'): Promise<void> {
  const problems: string[] = [];
  const known = new Set(knownTables);
  const added = tables.map(displayName).filter((name) => !known.has(name)).sort();
  if (added.length) problems.push(`created on ${side} after the start (not replicated): ${added.join(', ')}`);
  const columns = async (client: Client) =>
    new Map(
      (
        await client.query<{ t: string; cols: string }>(
          // The relations first (a hashed semi-join), then their columns: naming every column's table
          // and comparing it with 10,000 names took seconds inside the freeze.
          `WITH relations AS (
             SELECT c.oid, format('%s.%s', n.nspname, c.relname) AS t
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE format('%s.%s', n.nspname, c.relname) IN (SELECT unnest($1::text[])))
           SELECT r.t, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attname) AS cols
             FROM relations r JOIN pg_attribute a ON a.attrelid = r.oid
            WHERE a.attnum > 0 AND NOT a.attisdropped
            GROUP BY 1`,
          [knownTables],
        )
      ).rows.map((r) => [r.t, r.cols]),
    );
  const [before, after] = await Promise.all([columns(target), columns(source)]);
  const changed = knownTables.filter((t) => after.has(t) && before.get(t) !== after.get(t));
  if (changed.length) problems.push(`columns changed on ${side} after the start: ${changed.join(', ')}`);
  const gone = knownTables.filter((t) => !after.has(t));
  if (gone.length) problems.push(`dropped on ${side} after the start: ${gone.join(', ')}`);
  if (problems.length) {
    throw ApplicationFailure.nonRetryable(
      side === 'the source'
        ? `cutover refused, the schema changed on the source (DDL is not replicated): ${problems.join('; ')}. Undo that change on the source, or abort and start the migration again (it will copy the new schema)`
        : `rollback refused, the schema changed on ${side} (DDL is not replicated): ${problems.join('; ')}. Make the same change on the old server, or undo it`,
      'SchemaDrift',
    );
  }
}

/** Unlogged tables and large objects are not replicated: copied now, while the source is frozen. */
async function copyUnreplicated(spec: MigrationSpec, sourceInfo: ConnectionInfo, targetInfo: ConnectionInfo, tables: TableInfo[], signal: AbortSignal): Promise<void> {
  for (const table of tables.filter((t) => t.unlogged)) {
    await runUnit({ id: `unlogged:${displayName(table)}`, tables: [copyTableOf(table)], bytes: table.bytes }, sourceInfo, targetInfo, undefined, [], () => undefined, signal);
  }
  const hasLargeObjects = await withClient(sourceInfo, 'source', async (c) => (await c.query('SELECT 1 FROM pg_largeobject_metadata LIMIT 1')).rowCount === 1);
  if (hasLargeObjects) await copyLargeObjectsWith(sourceInfo, targetInfo, undefined, signal);
}

/** Exact row counts of the tables on one side, `jobs` tables at a time. */
export async function rowCounts(info: ConnectionInfo, side: 'source' | 'target', tables: TableInfo[], jobs: number): Promise<Map<string, string>> {
  const queue = [...tables];
  const counts = new Map<string, string>();
  const lane = async () => {
    const client = await connect(info, side, { applicationName: 'pgmove cutover' });
    try {
      // Small tables a hundred to a statement: inside the freeze, at 10,000 tables, round trips are downtime.
      for (let batch = nextBatch(queue); batch.length; batch = nextBatch(queue)) {
        const sql = batch.map((table, i) => `SELECT ${i} AS i, count(*)::text AS n FROM ONLY ${qualified(table)}`).join('\nUNION ALL\n');
        for (const row of (await client.query<{ i: number; n: string }>(sql)).rows) counts.set(displayName(batch[row.i]!), row.n);
      }
    } finally {
      await client.end().catch(() => undefined);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, tables.length)) }, lane));
  return counts;
}

export function compareCounts(source: Map<string, string>, target: Map<string, string>): void {
  const mismatches = [...source].filter(([table, n]) => target.get(table) !== n).map(([table, n]) => `${table}: source ${n}, target ${target.get(table) ?? 'missing'}`);
  if (mismatches.length) {
    throw ApplicationFailure.nonRetryable(`cutover refused, row counts differ after draining: ${mismatches.slice(0, 20).join('; ')}`, 'CutoverFailed');
  }
}
