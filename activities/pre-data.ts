/**
 * Phase 5, pre-data: the schema before the data (types, tables, functions, views, large-object
 * definitions) from `pg_dump --section=pre-data`, applied to the target in batches of one transaction
 * each, sized to the target's lock table (src/pg/pre-data-batches.ts): a retry after a crash restores
 * exactly the batches that did not commit.
 */
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { MigrationSpec } from '../src/spec';
import { connectionInfo, withClient } from '../src/pg/connect';
import { countLargeObjects } from '../src/pg/catalog';
import { dumpSection, listArchive, restoreArchive, schemaArchiveName, workDir } from '../src/pg/dump';
import { readFreezeState } from './freeze';
import { existingRelations, preDataBatches, preDataBatchSize, witnessNames } from '../src/pg/pre-data-batches';
import { Context } from '@temporalio/activity';
import { startHeartbeat } from '../src/heartbeat';
import { stallTimeoutMs, toolStallWatch } from '../src/stall';
import { activityLogger } from '../src/log';
import { markTarget } from '../src/pg/target-marker';

export interface SchemaPhaseInput {
  spec: MigrationSpec;
  migrationId: string;
  binDir: string;
  /** Logical method: the slot already holds WAL on the source, so the WAL guardrail watches this phase too. */
  walGuard?: boolean;
}

export async function preData(input: SchemaPhaseInput): Promise<{ objects: number; seconds: number }> {
  const started = Date.now();
  const log = activityLogger('preData');
  const { spec } = input;
  const source = await connectionInfo(spec.source, 'source');
  const target = await connectionInfo(spec.target, 'target');
  // Before anything is restored: the record that says what on the target is this migration's.
  await withClient(target, 'target', async (client) => {
    if (!(await markTarget(client, input.migrationId))) log.warn('the target role may not comment on the target database: no target marker, so pgmove recover will keep the target');
  });
  // Without any relation in the schema (no witness), the restore is one transaction: any relation means it committed.
  const anyRelation = () =>
    withClient(target, 'target', async (client) =>
      (await client.query(`SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
                              AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
                            LIMIT 1`)).rowCount === 1,
    );
  const hasLargeObjects = (await withClient(source, 'source', countLargeObjects)) > 0;
  let step = 'dumping pre-data';
  const stalled = new AbortController();
  const { watch, applicationName } = toolStallWatch({
    activity: 'pre-data', attempt: Context.current().info.attempt, stallMs: stallTimeoutMs(spec), endpoints: { source, target },
    progress: () => step, onStall: () => stalled.abort(),
  });
  const heartbeat = startHeartbeat(() => ({ step, ...watch.details() }));
  const signal = AbortSignal.any([heartbeat.signal, stalled.signal]);
  try {
    const dir = await workDir(input.migrationId);
    // Offline, post-data's entries come along (and post-data restores them from this archive).
    const schemaArchive = schemaArchiveName(spec, await withClient(source, 'source', readFreezeState), input.migrationId);
    const file = join(dir, schemaArchive ?? 'pre-data.dump');
    // Written under another name and renamed when complete: post-data never takes a partial archive.
    await dumpSection(input.binDir, source, spec, schemaArchive ? ['pre-data', 'post-data'] : 'pre-data', `${file}.partial`, hasLargeObjects, { signal, applicationName });
    await rename(`${file}.partial`, file);
    log.info({ seconds: (Date.now() - started) / 1000, withPostData: schemaArchive !== undefined }, 'pre-data dumped');
    const entries = await listArchive(input.binDir, file, 'pre-data');
    const objects = entries.length;
    const batches = preDataBatches(entries, await withClient(target, 'target', preDataBatchSize));
    const witnesses = await withClient(source, 'source', (client) => witnessNames(client, batches.flatMap((b) => (b.witnessOid === undefined ? [] : [b.witnessOid]))));
    const present = await withClient(target, 'target', (client) => existingRelations(client, [...witnesses.values()]));
    const committed = async (witnessOid: number | undefined) => (witnessOid === undefined ? anyRelation() : present.has(witnesses.get(witnessOid) ?? ''));
    let restored = 0;
    for (const [index, batch] of batches.entries()) {
      if (await committed(batch.witnessOid)) continue;
      step = `restoring pre-data batch ${index + 1}/${batches.length} (${batch.entries.length} of ${objects} objects)`;
      heartbeat.beat();
      const batchStarted = Date.now();
      const listFile = join(dir, 'pre-data.list');
      await writeFile(listFile, batch.entries.map((e) => e.line).join('\n') + '\n', { mode: 0o600 });
      await restoreArchive(
        input.binDir,
        target,
        file,
        { section: 'pre-data', jobs: 1, listFile, singleTransaction: true, noOwner: spec.dump.noOwner, noPrivileges: spec.dump.noPrivileges },
        { signal, applicationName },
      );
      restored += batch.entries.length;
      log.info({ batch: index + 1, batches: batches.length, objects: batch.entries.length, seconds: (Date.now() - batchStarted) / 1000 }, 'pre-data batch restored');
    }
    if (restored < objects) log.info({ skipped: objects - restored }, 'pre-data batches already on the target (an earlier attempt committed them)');
    log.info({ objects }, 'pre-data applied');
    return { objects, seconds: (Date.now() - started) / 1000 };
  } catch (error) {
    throw watch.failure ?? error;
  } finally {
    watch.stop();
    heartbeat.stop();
  }
}
