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
import { ident } from '../src/pg/sql';
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

/** Drops every user object in the target database, in one transaction. */
export async function resetTarget(client: Client, keepExtensions: string[]): Promise<number> {
  const notExtensionMember = (catalog: string, column: string) =>
    `NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '${catalog}'::regclass AND d.objid = ${column} AND d.deptype = 'e')`;
  const statements: string[] = [];
  const extensions = (await client.query<{ extname: string }>(`SELECT extname FROM pg_extension WHERE NOT extname = ANY($1::text[])`, [[...keepExtensions, 'plpgsql']])).rows;
  statements.push(...extensions.map((e) => `DROP EXTENSION IF EXISTS ${ident(e.extname)} CASCADE`));
  const schemas = (
    await client.query<{ nspname: string }>(
      `SELECT nspname FROM pg_namespace n WHERE nspname NOT IN ('public', 'pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%' AND ${notExtensionMember('pg_namespace', 'n.oid')}`,
    )
  ).rows;
  statements.push(...schemas.map((s) => `DROP SCHEMA IF EXISTS ${ident(s.nspname)} CASCADE`));
  // In public (kept: its ownership and grants are the server's), drop the objects one by one. An
  // identity column's sequence cannot be dropped on its own (not even with CASCADE): it goes with its table.
  // (Only sequences: a partitioned table has an internal dependency on itself.)
  const relations = (
    await client.query<{ sql: string }>(
      `SELECT format('DROP %s IF EXISTS public.%I CASCADE', CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, c.relname) AS sql
         FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND ${notExtensionMember('pg_class', 'c.oid')}
          AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> c.oid AND d.deptype = 'i'))`,
    )
  ).rows;
  const routines = (
    await client.query<{ sql: string }>(
      `SELECT format('DROP ROUTINE IF EXISTS %s CASCADE', p.oid::regprocedure) AS sql FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.prokind <> 'a' AND ${notExtensionMember('pg_proc', 'p.oid')}`,
    )
  ).rows;
  const types = (
    await client.query<{ sql: string }>(
      `SELECT format('DROP %s IF EXISTS public.%I CASCADE', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.typname) AS sql FROM pg_type t
        WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd', 'c', 'r', 'b') AND t.typelem = 0
          AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c') AND ${notExtensionMember('pg_type', 't.oid')}`,
    )
  ).rows;
  const collations = (
    await client.query<{ sql: string }>(
      `SELECT format('DROP COLLATION IF EXISTS public.%I CASCADE', collname) AS sql FROM pg_collation c WHERE collnamespace = 'public'::regnamespace AND ${notExtensionMember('pg_collation', 'c.oid')}`,
    )
  ).rows;
  statements.push(...[...relations, ...routines, ...types, ...collations].map((r) => r.sql));
  statements.push(`SELECT lo_unlink(oid) FROM pg_largeobject_metadata`);
  await client.query('BEGIN');
  try {
    for (const sql of statements) await client.query(sql);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
  return statements.length - 1;
}
