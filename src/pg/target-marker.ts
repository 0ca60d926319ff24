/**
 * The target marker: a record pgmove writes into the target database's comment before pre-data puts
 * anything there, and takes out (restoring the former comment) when the migration ends. It says which
 * migration filled the target, which extensions and database settings were there before, and — written before a switch hook
 * runs — that a switch is under way. `pgmove recover` resets only a target that carries the marker of
 * the run it recovers and no switch: never one that a completed migration switched to or that pgmove did
 * not fill. (A database comment needs ownership: without it, no marker is written and recover keeps
 * the target.)
 */
import type { Client } from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import type { PreflightCheck } from '../model';
import { ident, literal } from './sql';
import { databaseComment } from './catalog';
import { readDatabaseSettings, type DatabaseSetting } from './database-settings';

const MARKER_PREFIX = 'pgmove target marker: ';

export interface TargetMarker {
  migrationId: string;
  /** The database's comment before the marker replaced it (restored when the marker goes). */
  previousComment: string | null;
  /** Extensions on the target before pre-data (a reset keeps them). */
  extensionsBefore: string[];
  /** The target database's settings before post-data copied the source's (a reset puts them back). */
  settingsBefore?: DatabaseSetting[];
  markedAt: string;
  /** Set before the switch hook runs: from here on the target may be the application's database. */
  switchingAt?: string;
}

export async function readTargetMarker(target: Client): Promise<TargetMarker | undefined> {
  const comment = await databaseComment(target);
  return comment?.startsWith(MARKER_PREFIX) ? (JSON.parse(comment.slice(MARKER_PREFIX.length)) as TargetMarker) : undefined;
}

async function writeTargetMarker(target: Client, marker: TargetMarker): Promise<void> {
  const database = (await target.query<{ db: string }>('SELECT current_database() AS db')).rows[0]!.db;
  await target.query(`COMMENT ON DATABASE ${ident(database)} IS ${literal(MARKER_PREFIX + JSON.stringify(marker))}`);
}

/**
 * Marks the (empty) target as this migration's before anything is restored; idempotent. Returns false
 * when the role may not comment on the database (not its owner): the migration goes on unmarked.
 */
export async function markTarget(target: Client, migrationId: string): Promise<boolean> {
  const existing = await readTargetMarker(target);
  if (existing?.migrationId === migrationId) return true;
  if (existing) throw claimedByOther(existing.migrationId);
  const extensionsBefore = (await target.query<{ extname: string }>('SELECT extname FROM pg_extension ORDER BY 1')).rows.map((r) => r.extname);
  try {
    const settingsBefore = await readDatabaseSettings(target);
    await writeTargetMarker(target, { migrationId, previousComment: await databaseComment(target), extensionsBefore, settingsBefore, markedAt: new Date().toISOString() });
    return true;
  } catch (error) {
    if ((error as { code?: string }).code === '42501') return false;
    throw error;
  }
}

/** Before a switch hook runs: the target is about to become (or already is) the application's database. */
export async function markTargetSwitching(target: Client, migrationId: string, at: string): Promise<void> {
  const marker = await readTargetMarker(target);
  if (marker?.migrationId === migrationId && !marker.switchingAt) await writeTargetMarker(target, { ...marker, switchingAt: at });
}

/** Takes this migration's marker out, restoring the former comment; false when there is none of ours. */
export async function removeTargetMarker(target: Client, migrationId: string): Promise<boolean> {
  const marker = await readTargetMarker(target);
  if (marker?.migrationId !== migrationId) return false;
  const database = (await target.query<{ db: string }>('SELECT current_database() AS db')).rows[0]!.db;
  await target.query(`COMMENT ON DATABASE ${ident(database)} IS ${marker.previousComment === null ? 'NULL' : literal(marker.previousComment)}`);
  return true;
}

function claimedByOther(owner: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(
    `the target database carries the marker of pgmove migration ${owner}, which ended without its cleanup: run \`pgmove recover ${owner}\` first`,
    'TargetClaimed',
  );
}

/** Pre-flight: a target marked by another migration's unfinished run is not this one's to fill. */
export async function foreignTargetMarkerCheck(target: Client, migrationId: string | undefined): Promise<PreflightCheck | undefined> {
  const marker = await readTargetMarker(target);
  if (!marker || marker.migrationId === migrationId) return undefined;
  return {
    name: 'target not claimed by another migration',
    ok: false,
    detail: `the target database carries the marker of pgmove migration ${marker.migrationId}, whose run ended without its cleanup (terminated?)`,
    fix: `pgmove recover ${marker.migrationId} (it resets what that run put there and takes the marker out)`,
  };
}
