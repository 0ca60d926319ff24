/**
 * Phase 5, pre-data: the schema before the data (types, tables, functions, views, large-object
 * definitions) from `pg_dump --section=pre-data`, applied to the target in one transaction, so a retry
 * after a crash finds either nothing or everything.
 */
import { join } from 'node:path';
import type { MigrationSpec } from '../src/spec';
import { connectionInfo, withClient } from '../src/pg/connect';
import { countLargeObjects } from '../src/pg/catalog';
import { dumpSection, listArchive, restoreArchive, workDir } from '../src/pg/dump';
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
  const alreadyApplied = await withClient(target, 'target', async (client) => {
    // Before anything is restored: the record that says what on the target is this migration's.
    if (!(await markTarget(client, input.migrationId))) log.warn('the target role may not comment on the target database: no target marker, so pgmove recover will keep the target');
    // The restore is one transaction: any of its tables on the target means it committed.
    return (await client.query(`SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
                            AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                            AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
                          LIMIT 1`)).rowCount === 1;
  });
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
    if (alreadyApplied) {
      log.info('pre-data already on the target (an earlier attempt committed it)');
      return { objects: 0, seconds: 0 };
    }
    const file = join(await workDir(input.migrationId), 'pre-data.dump');
    await dumpSection(input.binDir, source, spec, 'pre-data', file, hasLargeObjects, { signal, applicationName });
    const objects = (await listArchive(input.binDir, file)).length;
    step = `restoring ${objects} pre-data objects`;
    heartbeat.beat();
    await restoreArchive(
      input.binDir,
      target,
      file,
      { section: 'pre-data', jobs: 1, singleTransaction: true, noOwner: spec.dump.noOwner, noPrivileges: spec.dump.noPrivileges },
      { signal, applicationName },
    );
    log.info({ objects }, 'pre-data applied');
    return { objects, seconds: (Date.now() - started) / 1000 };
  } catch (error) {
    throw watch.failure ?? error;
  } finally {
    watch.stop();
    heartbeat.stop();
  }
}
