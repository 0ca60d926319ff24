/**
 * Phase 7, post-data: indexes, constraints, foreign keys, triggers, rules, policies and materialized
 * view data, from `pg_dump --section=post-data`, built after the bulk copy with `pg_restore --jobs`
 * (index builds in parallel). Resumable: a retry skips the objects an earlier attempt already created.
 * Also carries the database-level settings (ALTER DATABASE / ALTER ROLE ... IN DATABASE ... SET) that a
 * dump without --create leaves out.
 */
import { readFreezeState } from './freeze';
import { replicationNames } from '../src/pg/replication';
import { checkRetainedWal } from './sync';
import { durationMs } from '../src/units';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import { connect, connectionInfo, withClient, type ConnectionInfo } from '../src/pg/connect';
import type { Client } from 'pg';
import { countLargeObjects } from '../src/pg/catalog';
import { dumpSection, listArchive, restoreArchive, schemaArchiveName, workDir, type TocEntry } from '../src/pg/dump';
import { entriesMissingOnTarget } from '../src/pg/post-data-resume';
import { builtEarly } from '../src/pg/table-indexes';
import { addForeignKeys, foreignKeysOf, readyOnTarget, splitAroundForeignKeys } from '../src/pg/foreign-keys';
import { ident } from '../src/pg/sql';
import { readDatabaseSettings, settingValueSql } from '../src/pg/database-settings';
import { startHeartbeat } from '../src/heartbeat';
import { stallTimeoutMs, toolStallWatch, type StallWatch } from '../src/stall';
import { activityLogger } from '../src/log';
import { StepTimer } from '../src/step-timer';
import type { SchemaPhaseInput } from './pre-data';
import { pollUntil } from '../src/poll';

export async function postData(input: SchemaPhaseInput): Promise<{ objects: number; skipped: number; seconds: number }> {
  const started = Date.now();
  const log = activityLogger('postData');
  const { spec } = input;
  const source = await connectionInfo(spec.source, 'source');
  const target = await connectionInfo(spec.target, 'target');
  const hasLargeObjects = (await withClient(source, 'source', countLargeObjects)) > 0;
  const progress = { step: 'dumping post-data', done: 0, total: 0 };
  const stalled = new AbortController();
  const { watch, applicationName } = toolStallWatch({
    // One name for every attempt: a retry finds (and ends) the sessions a killed attempt left behind.
    activity: 'post-data', attempt: Context.current().info.attempt, applicationName: restoreApplicationName(input.migrationId), stallMs: stallTimeoutMs(spec), endpoints: { source, target },
    progress: () => progress, onStall: () => stalled.abort(),
  });
  const heartbeat = startHeartbeat(() => ({ ...progress, ...watch.details() }));
  // Index builds can take hours; with a slot on the source, its WAL must not outgrow the limit meanwhile.
  const guard = new AbortController();
  let guardFailure: unknown;
  const guardTimer = input.walGuard
    ? setInterval(() => void checkRetainedWal(source, input.migrationId, spec).catch((error: unknown) => {
        guardFailure ??= error;
        guard.abort();
      }), Math.max(1000, durationMs(spec.logical.statusInterval)))
    : undefined;
  const signal = AbortSignal.any([heartbeat.signal, guard.signal, stalled.signal]);
  try {
    const dir = await workDir(input.migrationId);
    // Offline, pre-data dumped post-data's entries too (when this worker ran it: the file is local).
    const schemaArchive = schemaArchiveName(spec, await withClient(source, 'source', readFreezeState), input.migrationId);
    const dumpedOnce = schemaArchive !== undefined && (await stat(join(dir, schemaArchive)).then((s) => s.isFile(), () => false));
    const archive = join(dir, dumpedOnce ? schemaArchive : 'post-data.dump');
    // Seconds per step, in the log: where a slow post-data spends its time.
    const timer = new StepTimer();
    if (!dumpedOnce) await dumpSection(input.binDir, source, spec, 'post-data', archive, hasLargeObjects, { signal, applicationName });
    // The logical method's own publications are on the source meanwhile: they are not the source's schema.
    const ownPublication = new RegExp(`\\b${replicationNames(input.migrationId).publication}(_u[0-9]+)?\\b`);
    const entries = (await listArchive(input.binDir, archive, 'post-data')).filter((e) => !ownPublication.test(e.line));
    timer.lap('dump');
    // Indexes and key constraints the offline copy built as each table finished (src/pg/table-indexes.ts).
    progress.step = 'finding the indexes built during the copy';
    const early = await withClient(source, 'source', (s) => withClient(target, 'target', (t) => builtEarly(entries, s, t)));
    let pending = entries.filter((e) => !early.has(e.dumpId));
    if (Context.current().info.attempt > 1) {
      progress.step = 'waiting for the previous attempt\'s statements to end';
      await endPreviousRestore(target, applicationName, signal);
      progress.step = 'comparing with the target';
      pending = await withClient(source, 'source', (s) => withClient(target, 'target', (t) => entriesMissingOnTarget(pending, s, t)));
    }
    timer.lap('compare');
    progress.step = 'building indexes and constraints';
    progress.total = pending.length;
    heartbeat.beat();
    const restore = async (part: TocEntry[], name: string) => {
      if (part.length === 0) return;
      const listFile = join(dir, `${name}.list`);
      await writeFile(listFile, part.map((e) => e.line).join('\n') + '\n');
      await restoreArchive(
        input.binDir,
        target,
        archive,
        { section: 'post-data', jobs: spec.jobs, listFile, applicationName, noOwner: spec.dump.noOwner, noPrivileges: spec.dump.noPrivileges },
        {
          signal,
          applicationName,
          onStderrLine: (line) => {
            if (/^pg_restore: (creating|processing item|launching item)/.test(line)) progress.done += line.includes('launching') ? 0 : 1;
          },
        },
      );
    };
    // Foreign keys of ordinary tables are added by pgmove's own sessions once their referenced keys'
    // indexes are there (src/pg/foreign-keys.ts): between pg_restore's pass for the rest and its pass
    // for the keys' comments, the keys it could not add and the event triggers.
    const keys = await withClient(source, 'source', (s) => foreignKeysOf(s, pending));
    const parts = splitAroundForeignKeys(pending, keys);
    await restore(parts.before, 'post-data');
    timer.lap('restore');
    const candidates = parts.keys.map((e) => keys.get(e.objectOid)!);
    const ready = await withClient(target, 'target', (t) => readyOnTarget(t, candidates));
    if (ready.size > 0) {
      progress.step = 'adding foreign keys';
      await withSessions(target, Math.min(spec.jobs, ready.size), applicationName, watch, signal, (sessions) =>
        addForeignKeys(sessions, candidates.filter((k) => ready.has(k)), { signal, onAdded: (count) => (progress.done += count) }),
      );
    }
    timer.lap('foreignKeys');
    const left = new Set([...parts.after, ...parts.keys.filter((e) => !ready.has(keys.get(e.objectOid)!))]);
    progress.step = 'building what follows the foreign keys';
    await restore(pending.filter((e) => left.has(e)), 'post-data-after-keys');
    timer.lap('restoreAfterKeys');
    progress.done = pending.length;
    const settings = await copyDatabaseSettings(source, target);
    timer.lap('settings');
    log.info({ dumpedWithPreData: dumpedOnce, objects: pending.length, foreignKeysAdded: ready.size, builtDuringCopy: early.size, skipped: entries.length - pending.length - early.size, settings, steps: timer.seconds() }, 'post-data applied');
    return { objects: pending.length, skipped: entries.length - pending.length, seconds: (Date.now() - started) / 1000 };
  } catch (error) {
    throw guardFailure ?? watch.failure ?? error;
  } finally {
    if (guardTimer) clearInterval(guardTimer);
    watch.stop();
    heartbeat.stop();
  }
}

/** The application_name of this migration's pg_restore sessions (PostgreSQL keeps 63 bytes). */
export function restoreApplicationName(migrationId: string): string {
  return `pgmove post-data ${migrationId}`.replace(/[^\x20-\x7e]/g, '_').slice(0, 63);
}

/**
 * A worker killed mid-restore leaves pg_restore's sessions behind: a statement in flight (an index
 * build of hours) runs on and commits after this retry has looked, and its twin would then fail. Idle
 * ones are ended (their pg_restore exits on the error); running statements are waited for, so a
 * finished build is kept rather than thrown away.
 */
async function endPreviousRestore(info: ConnectionInfo, applicationName: string, signal: AbortSignal): Promise<void> {
  await withClient(info, 'target', async (target) => {
    signal.throwIfAborted();
    await pollUntil(
      async () => {
        const sessions = await target.query<{ pid: number; state: string | null }>(
          `SELECT pid, state FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid() AND datname = current_database()`,
          [applicationName],
        );
        if (sessions.rows.length === 0) return true;
        for (const session of sessions.rows) {
          if (session.state !== 'active') await target.query('SELECT pg_terminate_backend($1)', [session.pid]);
        }
        return undefined;
      },
      { intervalMs: 1000, signal, what: "the previous attempt's pg_restore sessions to end" },
    );
  });
}

/**
 * `count` sessions on the target under pg_restore's application_name (a retry ends those of a killed
 * attempt), watched for stalls; an abort (cancellation, the WAL guard, a stall) cancels their running
 * statements, as stopping pg_restore does, instead of waiting for a large table's key check.
 */
async function withSessions<T>(info: ConnectionInfo, count: number, applicationName: string, watch: StallWatch, signal: AbortSignal, fn: (sessions: Client[]) => Promise<T>): Promise<T> {
  const sessions: Client[] = [];
  const untrack: (() => void)[] = [];
  const cancel = () => void watch.cancelTracked();
  signal.addEventListener('abort', cancel, { once: true });
  try {
    for (let i = 0; i < count; i++) {
      const session = await connect(info, 'target', { applicationName });
      sessions.push(session);
      untrack.push(watch.track('target', session));
    }
    return await fn(sessions);
  } finally {
    signal.removeEventListener('abort', cancel);
    untrack.forEach((stop) => stop());
    await Promise.all(sessions.map((s) => s.end().catch(() => undefined)));
  }
}

/**
 * ALTER DATABASE ... SET and ALTER ROLE ... IN DATABASE ... SET of the source database, applied to the
 * target database. pgmove's own read-only default (during a freeze) is not the source's setting.
 */
async function copyDatabaseSettings(
  sourceInfo: Awaited<ReturnType<typeof connectionInfo>>,
  targetInfo: Awaited<ReturnType<typeof connectionInfo>>,
): Promise<number> {
  const [settings, freeze] = await withClient(sourceInfo, 'source', async (source) => [await readDatabaseSettings(source), await readFreezeState(source)] as const);
  const previousReadOnly = freeze?.previousReadOnlySetting;
  const effective = settings.filter((s) => !(freeze && s.role === null && s.name === 'default_transaction_read_only'));
  if (freeze && previousReadOnly !== null && previousReadOnly !== undefined) {
    effective.push({ role: null, name: 'default_transaction_read_only', value: previousReadOnly });
  }
  await withClient(targetInfo, 'target', async (target) => {
    const roles = new Set((await target.query<{ rolname: string }>('SELECT rolname FROM pg_roles')).rows.map((r) => r.rolname));
    for (const setting of effective) {
      if (setting.role !== null && !roles.has(setting.role)) continue; // roles are migrated with globals
      const scope = setting.role === null ? `DATABASE ${ident(targetInfo.database)}` : `ROLE ${ident(setting.role)} IN DATABASE ${ident(targetInfo.database)}`;
      await target.query(`ALTER ${scope} SET ${ident(setting.name)} = ${settingValueSql(setting.name, setting.value)}`);
    }
  });
  return effective.length;
}

