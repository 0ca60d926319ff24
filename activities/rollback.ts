/**
 * `pgmove rollback ID` inside the rollback window (cutover.rollbackWindow), and its recovery. The
 * reverse stream it relies on is ./reverse-stream.
 *
 * The rollback mirrors the cutover in the other direction, timed step by step: fence the new server →
 * verify it → refuse if tables or columns changed on it → drain until the old server has confirmed the
 * new one's current WAL position → stop the reverse subscription → sequences → row counts → [old server
 * ready] → unfence the old server → switch hook (PGMOVE_DIRECTION=rollback) → [switched] → checksums at
 * a snapshot of the old server taken before it was unfenced. Its marks live in the reverse publication's
 * comment on the new server, so a retry after a lost worker resumes rather than starts again.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from 'pg';
import { parsedOrBadSpec, parseSpecInput, type MigrationSpec, type MigrationSpecInput } from '../src/spec';
import { connect, connectionInfo, withClient } from '../src/pg/connect';
import { listSequences, listTables } from '../src/pg/catalog';
import { qualified } from '../src/pg/sql';
import { readPublicationRecord, writePublicationRecord, type PublicationRecord } from '../src/pg/replication';
import { reverseNames, setReverseSubscriptionEnabled } from '../src/pg/reverse-replication';
import { migrationHookContext, runHook } from '../src/hooks';
import { startHeartbeat } from '../src/heartbeat';
import { StepTimer } from '../src/step-timer';
import { activityLogger } from '../src/log';
import { durationMs } from '../src/units';
import { freezeSource, markFenceKept, readFreezeState, unfreezeSource, verifyFence } from './freeze';
import { compareCounts, drain, refuseLateResume, refuseSchemaDrift, rowCounts, validateOrReport, type CutoverResult } from './cutover';
import { reversedSpec, withBothServers, type RollbackInput } from './reverse-stream';

/** How far a rollback got, as recorded on the new server. */
export async function rollbackStage(input: RollbackInput): Promise<{ switchingAt?: string; switchedAt?: string }> {
  const record = await withClient(await connectionInfo(input.spec.target, 'target'), 'target', (newServer) => readPublicationRecord(newServer, reverseNames(input.migrationId).publication));
  return { switchingAt: record?.switchingAt, switchedAt: record?.switchedAt };
}

/** After a rollback failed before its switch: the new server is unfenced first (it must never stay frozen), then the reverse stream resumes. */
export async function abandonRollback(input: RollbackInput): Promise<{ resumed: boolean }> {
  const { spec, migrationId } = input;
  if ((await rollbackStage(input)).switchingAt) {
    throw ApplicationFailure.nonRetryable('the rollback had reached the switch: it is finished, not abandoned', 'AlreadySwitching');
  }
  await unfreezeSource(reversedSpec(spec), migrationId);
  return withBothServers(spec, 'rollback', async (oldServer, newServer) => {
    const record = await readPublicationRecord(newServer, reverseNames(migrationId).publication);
    if (record?.freezeStartedAt) await writePublicationRecord(newServer, reverseNames(migrationId).publication, { ...record, freezeStartedAt: undefined });
    return { resumed: await setReverseSubscriptionEnabled(oldServer, migrationId, true) };
  });
}

/** `pgmove rollback ID`: back to the old server without losing a write made on the new one. */
export async function rollback(input: RollbackInput): Promise<CutoverResult> {
  const { spec, migrationId } = input;
  const log = activityLogger('rollback');
  const reversed = reversedSpec(spec);
  const publication = reverseNames(migrationId).publication;
  const timer = new StepTimer();
  const heartbeat = startHeartbeat(() => timer.details());
  let snapshotHolder: Client | undefined;
  try {
    return await withBothServers(spec, 'rollback', async (oldServer, newServer) => {
      const hookContext = migrationHookContext(reversed, migrationId, 'rollback');
      /**
       * A hook that exits non-zero (or times out) did not switch — its contract — so the source is fenced
       * again and the mark taken back: the workflow then unfences the target and resumes the reverse stream.
       */
      const switchHook = async (current: PublicationRecord) => {
        if (!spec.cutover.switchHook) return undefined;
        try {
          return await runHook('switchHook', spec.cutover.switchHook, hookContext, durationMs(spec.cutover.hookTimeout), heartbeat.signal);
        } catch (error) {
          if (error instanceof ApplicationFailure && error.type === 'HookFailed') {
            await freezeSource(spec, migrationId);
            await writePublicationRecord(newServer, publication, { ...current, switchingAt: undefined, switchedAt: undefined });
          }
          throw error;
        }
      };
      let record = await readPublicationRecord(newServer, publication);
      if (!record) throw ApplicationFailure.nonRetryable(`the reverse publication ${publication} is gone from the new server: a rollback would lose the writes made there`, 'RollbackFailed');
      let switchHookOutput: string | undefined;
      if (record.switchingAt && !record.switchedAt) {
        // The worker stopped while the switch hook ran: only the hook is left (hooks must be idempotent).
        timer.enter('switchHook');
        log.warn('resuming a rollback switch that was under way: running the switch hook again');
        await unfreezeSource(spec, migrationId);
        switchHookOutput = await switchHook(record);
        record = { ...record, switchedAt: new Date().toISOString() };
        await writePublicationRecord(newServer, publication, record);
      }
      if (record.switchedAt) {
        timer.enter('validate');
        const validation = await validateOrReport({ spec: reversed });
        await keepOrReleaseNewServer(spec, migrationId);
        return { timing: {}, switchedAt: record.switchedAt, validation, validatedLive: true, switchHookOutput };
      }
      const frozenSince = (await readFreezeState(newServer))?.migrationId === migrationId ? record.freezeStartedAt : undefined;
      if (frozenSince) refuseLateResume(spec, Date.now() - Date.parse(frozenSince));
      await setReverseSubscriptionEnabled(oldServer, migrationId, true);
      record = { ...record, freezeStartedAt: frozenSince ?? new Date().toISOString() };
      await writePublicationRecord(newServer, publication, record);

      const mark = timer.restart();
      const frozenAt = frozenSince ? Date.parse(frozenSince) : mark;
      await timer.timed('freeze', () => freezeSource(reversed, migrationId));
      await timer.timed('verifyFence', () => verifyFence(newServer));
      const tables = (await listTables(newServer, spec, { sizes: false })).filter((t) => !t.unlogged);
      await timer.timed('ddlCheck', () => refuseSchemaDrift(newServer, oldServer, tables, record!.knownTables ?? [], 'the new server'));
      const newCounts = spec.cutover.quickValidation ? rowCounts(await connectionInfo(spec.target, 'target'), 'target', tables, spec.jobs) : undefined;
      newCounts?.catch(() => undefined); // awaited below; a failure surfaces there
      await timer.timed('drain', () => drain(newServer, oldServer, [reverseNames(migrationId).slot], durationMs(spec.cutover.drainTimeout), heartbeat.signal));
      await timer.timed('stopSubscription', () => setReverseSubscriptionEnabled(oldServer, migrationId, false));
      await timer.timed('sequences', () => copySequencesBack(spec, newServer, oldServer));
      if (newCounts) await timer.timed('rowCounts', async () => compareCounts(await newCounts, await rowCounts(await connectionInfo(spec.source, 'source'), 'source', tables, spec.jobs)));
      const readyAt = timer.mark;
      // The old server as of the rollback, for the checksums after the switch.
      snapshotHolder = await connect(await connectionInfo(spec.source, 'source'), 'source', { applicationName: 'pgmove rollback snapshot' });
      await snapshotHolder.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const snapshot = (await snapshotHolder.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]!.id;
      // Past this mark a rollback never goes back: a retry only finishes the switch.
      record = { ...record, switchingAt: new Date().toISOString() };
      await writePublicationRecord(newServer, publication, record);
      await timer.timed('unfreezeOldServer', () => unfreezeSource(spec, migrationId));
      switchHookOutput = await timer.timed('switchHook', () => switchHook(record!));
      const switchedAt = new Date().toISOString();
      await writePublicationRecord(newServer, publication, { ...record, switchedAt });
      const timing = { freezeToReadyMs: readyAt - frozenAt, freezeToSwitchedMs: Date.now() - frozenAt, steps: { ...timer.steps } };
      log.info(timing, 'rolled back');
      timer.enter('validate');
      // Validated before the target may take writes again (sourceAfterSwitch: writable).
      const validation = await validateOrReport({ spec: reversed, targetSnapshot: snapshot });
      await keepOrReleaseNewServer(spec, migrationId);
      return { timing, switchedAt, validation, validatedLive: false, switchHookOutput };
    });
  } finally {
    heartbeat.stop();
    await snapshotHolder?.end().catch(() => undefined);
  }
}

/** Every sequence in scope set on the old server to the new server's value (the stream does not carry them). */
async function copySequencesBack(spec: MigrationSpec, newServer: Client, oldServer: Client): Promise<void> {
  const sequences = await listSequences(newServer, spec);
  await oldServer.query('BEGIN');
  try {
    for (const sequence of sequences) await oldServer.query('SELECT setval($1::regclass, $2::bigint, $3)', [qualified(sequence), sequence.lastValue, sequence.isCalled]);
    await oldServer.query('COMMIT');
  } catch (error) {
    await oldServer.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/**
 * After the rollback the new server is what the old source was after the switch: kept fenced
 * (cutover.sourceAfterSwitch: frozen, recorded so `pgmove unfreeze` releases it) or made writable.
 */
async function keepOrReleaseNewServer(spec: MigrationSpec, migrationId: string): Promise<void> {
  if (spec.cutover.sourceAfterSwitch === 'writable') await unfreezeSource(reversedSpec(spec), migrationId);
  else await markFenceKept(reversedSpec(spec), migrationId);
}


/**
 * `pgmove unfreeze ID` after a rollback kept the target fenced (cutover.sourceAfterSwitch: frozen): the
 * fence is undone from its record in the target's database comment; nothing recorded, nothing to do.
 */
export async function releaseRolledBackTarget(input: { spec: MigrationSpecInput; migrationId: string }): Promise<{ released: boolean; how: string }> {
  const spec = parsedOrBadSpec(() => parseSpecInput(input.spec));
  if (spec.target.uri === undefined) return { released: false, how: 'the target is a provisioned instance (its address is not in the spec)' };
  const { unfrozen, fencedBy } = await unfreezeSource({ source: { uri: spec.target.uri, password: spec.target.password } }, input.migrationId);
  if (fencedBy) return { released: false, how: `the target is fenced by migration ${fencedBy}, not ${input.migrationId}` };
  return unfrozen ? { released: true, how: 'the fence the rollback kept was lifted (CONNECT grants, read-only default and comment restored)' } : { released: false, how: 'no fence recorded on the target' };
}
