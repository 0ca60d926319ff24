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
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import { connectionInfo, withClient } from '../src/pg/connect';
import { countLargeObjects } from '../src/pg/catalog';
import { dumpSection, listArchive, restoreArchive, workDir, type TocEntry } from '../src/pg/dump';
import { ident } from '../src/pg/sql';
import { readDatabaseSettings, settingValueSql } from '../src/pg/database-settings';
import { startHeartbeat } from '../src/heartbeat';
import { activityLogger } from '../src/log';
import type { SchemaPhaseInput } from './pre-data';

export async function postData(input: SchemaPhaseInput): Promise<{ objects: number; skipped: number; seconds: number }> {
  const started = Date.now();
  const log = activityLogger('postData');
  const { spec } = input;
  const source = await connectionInfo(spec.source, 'source');
  const target = await connectionInfo(spec.target, 'target');
  const hasLargeObjects = (await withClient(source, 'source', countLargeObjects)) > 0;
  const progress = { step: 'dumping post-data', done: 0, total: 0 };
  const heartbeat = startHeartbeat(() => progress);
  // Index builds can take hours; with a slot on the source, its WAL must not outgrow the limit meanwhile.
  const guard = new AbortController();
  let guardFailure: unknown;
  const guardTimer = input.walGuard
    ? setInterval(() => void checkRetainedWal(source, replicationNames(input.migrationId).slot, spec).catch((error: unknown) => {
        guardFailure ??= error;
        guard.abort();
      }), Math.max(1000, durationMs(spec.logical.statusInterval)))
    : undefined;
  const signal = AbortSignal.any([heartbeat.signal, guard.signal]);
  try {
    const dir = await workDir(input.migrationId);
    const archive = join(dir, 'post-data.dump');
    await dumpSection(input.binDir, source, spec, 'post-data', archive, hasLargeObjects, { signal });
    // The logical method's own publication is on the source meanwhile: it is not the source's schema.
    const ownPublication = new RegExp(`\\b${replicationNames(input.migrationId).publication}\\b`);
    const entries = (await listArchive(input.binDir, archive)).filter((e) => !ownPublication.test(e.line));
    const pending =
      Context.current().info.attempt > 1 ? await entriesMissingOnTarget(entries, source, target) : entries;
    progress.step = 'building indexes and constraints';
    progress.total = pending.length;
    heartbeat.beat();
    if (pending.length > 0) {
      const listFile = join(dir, 'post-data.list');
      await writeFile(listFile, pending.map((e) => e.line).join('\n') + '\n');
      await restoreArchive(
        input.binDir,
        target,
        archive,
        { section: 'post-data', jobs: spec.jobs, listFile, noOwner: spec.dump.noOwner, noPrivileges: spec.dump.noPrivileges },
        {
          signal,
          onStderrLine: (line) => {
            if (/^pg_restore: (creating|processing item|launching item)/.test(line)) progress.done += line.includes('launching') ? 0 : 1;
          },
        },
      );
    }
    progress.done = pending.length;
    const settings = await copyDatabaseSettings(source, target);
    log.info({ objects: pending.length, skipped: entries.length - pending.length, settings }, 'post-data applied');
    return { objects: pending.length, skipped: entries.length - pending.length, seconds: (Date.now() - started) / 1000 };
  } catch (error) {
    throw guardFailure ?? error;
  } finally {
    if (guardTimer) clearInterval(guardTimer);
    heartbeat.stop();
  }
}

/** Identity (schema, table, name) of a post-data object on the source, by its catalog and OID. */
const IDENTITY_SQL: Record<number, string> = {
  1259: `SELECT n.nspname AS schema, NULL::name AS rel, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`,
  2606: `SELECT n.nspname AS schema, c.relname AS rel, k.conname AS name FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE k.oid = $1`,
  2620: `SELECT n.nspname AS schema, c.relname AS rel, t.tgname AS name FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.oid = $1`,
  2618: `SELECT n.nspname AS schema, c.relname AS rel, r.rulename AS name FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.oid = $1`,
  3256: `SELECT n.nspname AS schema, c.relname AS rel, p.polname AS name FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.oid = $1`,
  3381: `SELECT n.nspname AS schema, NULL::name AS rel, s.stxname AS name FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE s.oid = $1`,
};

const EXISTS_ON_TARGET_SQL: Record<number, string> = {
  1259: `SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND $2::name IS NULL AND c.relname = $3`,
  2606: `SELECT 1 FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND k.conname = $3`,
  2620: `SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND t.tgname = $3`,
  2618: `SELECT 1 FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND r.rulename = $3`,
  3256: `SELECT 1 FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND p.polname = $3`,
  3381: `SELECT 1 FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE n.nspname = $1 AND $2::name IS NULL AND s.stxname = $3`,
};

/** Creating objects (not comments, ACLs, REFRESH) that an earlier attempt may have made already. */
const CREATING_TYPES = new Set(['INDEX', 'CONSTRAINT', 'FK CONSTRAINT', 'TRIGGER', 'RULE', 'POLICY', 'STATISTICS']);

async function entriesMissingOnTarget(
  entries: TocEntry[],
  sourceInfo: Awaited<ReturnType<typeof connectionInfo>>,
  targetInfo: Awaited<ReturnType<typeof connectionInfo>>,
): Promise<TocEntry[]> {
  return withClient(sourceInfo, 'source', (source) =>
    withClient(targetInfo, 'target', async (target) => {
      const pending: TocEntry[] = [];
      for (const entry of entries) {
        const identitySql = IDENTITY_SQL[entry.catalogOid];
        const existsSql = EXISTS_ON_TARGET_SQL[entry.catalogOid];
        if (!CREATING_TYPES.has(entry.type) || !identitySql || !existsSql) {
          pending.push(entry);
          continue;
        }
        const identity = (await source.query<{ schema: string; rel: string | null; name: string }>(identitySql, [entry.objectOid])).rows[0];
        const exists = identity && (await target.query(existsSql, [identity.schema, identity.rel, identity.name])).rowCount;
        if (!exists) pending.push(entry);
      }
      return pending;
    }),
  );
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

