/**
 * Phase 11, cleanup: runs on every ending (success, failure, abort, after a crash), after the workflow
 * has unfrozen the source (`unfreezeSource`, retried until it succeeds). Removes the dump scratch
 * directory, what it created on the target when the migration did not complete (pre-flight verified
 * the target was empty), and the target marker (src/pg/target-marker.ts). Idempotent.
 */
import { rm } from 'node:fs/promises';
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import { connectionInfo, withClient } from '../src/pg/connect';
import { dropResettableObjects } from '../src/pg/target-objects';
import { workDir } from '../src/pg/dump';
import { activityLogger } from '../src/log';
import { readTargetMarker, removeTargetMarker, type TargetMarker } from '../src/pg/target-marker';
import { restoreDatabaseSettings } from '../src/pg/database-settings';
import { markFenceKept } from './freeze';

export interface CleanupInput {
  spec: MigrationSpec;
  migrationId: string;
  /** Drop what this migration created on the target (it did not complete). */
  resetTarget: boolean;
  /** Extensions that existed on the target before the migration (kept by a reset). */
  targetExtensionsBefore: string[];
}

export async function cleanup(input: CleanupInput): Promise<{ done: string[] }> {
  const log = activityLogger('cleanup');
  const done: string[] = [];
  await rm(await workDir(input.migrationId), { recursive: true, force: true });
  done.push('scratch files removed');
  const targetInfo = await connectionInfo(input.spec.target, 'target');
  await withClient(targetInfo, 'target', async (client) => {
    const marker = await readTargetMarker(client);
    if (input.resetTarget && marker?.migrationId === input.migrationId) done.push(`target reset (${await resetMarkedTarget(client, marker)} object(s) dropped)`);
    else if (input.resetTarget) done.push(`target reset (${await resetTarget(client, input.targetExtensionsBefore)} object(s) dropped)`);
    // Reset or kept (completed, switched, kept for inspection), the target is no run's leftover any more.
    if (await removeTargetMarker(client, input.migrationId)) done.push('target marker removed');
  });
  if (await markFenceKept(input.spec, input.migrationId)) done.push('the source stays fenced (recorded as kept at the end)');
  log.info({ done }, 'cleanup finished');
  return { done };
}

/** A target this migration marked: every object dropped, its former settings and comment back, the marker out. */
export async function resetMarkedTarget(client: Client, marker: TargetMarker): Promise<number> {
  const dropped = await resetTarget(client, marker.extensionsBefore);
  if (marker.settingsBefore) await restoreDatabaseSettings(client, marker.settingsBefore);
  await removeTargetMarker(client, marker.migrationId);
  return dropped;
}

/** Drops every user object in the target database (src/pg/target-objects.ts), in one transaction. */
export async function resetTarget(client: Client, keepExtensions: string[]): Promise<number> {
  return dropResettableObjects(client, keepExtensions);
}
