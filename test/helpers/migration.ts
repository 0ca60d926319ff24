/** Starting migrations and reading their outcome in tests, the way the CLI does. */
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WorkflowFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { MigrationSpecInput } from '../../src/spec';
import type { MigrationResult } from '../../workflows/migrate-database';
import type { TestStack, ClusterHandle } from './stack';
import { adminQuery } from './stack';

export async function startMigration(stack: TestStack, input: MigrationSpecInput): Promise<WorkflowHandle> {
  return stack.client!.workflow.start('migrateDatabase', {
    taskQueue: stack.taskQueue,
    workflowId: input.id ?? `test-${Date.now()}`,
    args: [input],
  });
}

export async function runMigration(stack: TestStack, input: MigrationSpecInput): Promise<MigrationResult> {
  return (await startMigration(stack, input)).result() as Promise<MigrationResult>;
}

/** The application failure a failed migration ended with (type and message). */
export async function migrationFailure(handle: WorkflowHandle): Promise<ApplicationFailure> {
  try {
    await handle.result();
  } catch (error) {
    if (!(error instanceof WorkflowFailedError)) throw error;
    let cause: unknown = error.cause;
    // A failed activity is wrapped: ActivityFailure → ApplicationFailure.
    while (cause && !(cause instanceof ApplicationFailure)) cause = (cause as { cause?: unknown }).cause;
    if (!(cause instanceof ApplicationFailure)) throw error;
    return cause;
  }
  throw new Error(`migration ${handle.workflowId} succeeded but a failure was expected`);
}

/** User objects in a database (tables, views, sequences, functions, types): [] means untouched. */
export async function userObjects(cluster: ClusterHandle, database: string): Promise<string[]> {
  const rows = await adminQuery<{ o: string }>(
    cluster,
    database,
    `SELECT c.oid::regclass::text AS o FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
     UNION ALL SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
     UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname NOT IN ('public', 'pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
     UNION ALL SELECT 'large object ' || oid FROM pg_largeobject_metadata`,
  );
  return rows.map((r) => r.o).sort();
}

/**
 * What the freeze touches on the source database: the effective privileges (a NULL ACL means the
 * default one, so both are expanded) and the database-level settings.
 */
export async function databaseAccessState(cluster: ClusterHandle, database: string): Promise<{ privileges: string[]; settings: string[]; comment: string | null }> {
  const [row] = await adminQuery<{ privileges: string[] | null; settings: string[] | null; comment: string | null }>(
    cluster,
    'postgres',
    `SELECT (SELECT array_agg(format('%s:%s:%s', a.grantee::regrole, a.privilege_type, a.is_grantable) ORDER BY 1)
               FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a) AS privileges,
            (SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0) AS settings,
            shobj_description(d.oid, 'pg_database') AS comment
       FROM pg_database d WHERE d.datname = $1`,
    [database],
  );
  return { privileges: row?.privileges ?? [], settings: row?.settings ?? [], comment: row?.comment ?? null };
}

/** Runs the pgmove CLI as an operator would; returns exit code and output. */
export function pgmoveCli(stack: TestStack, args: string[], env: NodeJS.ProcessEnv = {}): { code: number; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [join(__dirname, '..', '..', 'bin', 'pgmove.js'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, TEMPORAL_ADDRESS: stack.temporal!.address, PGMOVE_TASK_QUEUE: stack.taskQueue, ...env },
    timeout: 600_000,
  });
  return { code: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** Like pgmoveCli, without blocking the test process (so samplers can run meanwhile). */
export function pgmoveCliAsync(stack: TestStack, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(__dirname, '..', '..', 'bin', 'pgmove.js'), ...args], {
      env: { ...process.env, TEMPORAL_ADDRESS: stack.temporal!.address, PGMOVE_TASK_QUEUE: stack.taskQueue, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/**
 * Samples the argv of every process on the machine until stopped, collecting any that contains one of
 * the secrets (there must be none: passwords go through the environment).
 */
export function watchArgvForSecrets(secrets: string[]): { stop: () => { samples: number; leaks: string[] } } {
  const leaks = new Set<string>();
  let samples = 0;
  const timer = setInterval(() => {
    samples += 1;
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      let argv = '';
      try {
        argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      } catch {
        continue;
      }
      if (secrets.some((secret) => argv.includes(secret))) leaks.add(argv);
    }
  }, 25);
  return { stop: () => (clearInterval(timer), { samples, leaks: [...leaks] }) };
}

export function writeSpec(stack: TestStack, name: string, spec: unknown): string {
  const path = join(stack.dir, `${name}.json`);
  writeFileSync(path, JSON.stringify(spec, null, 2));
  return path;
}

export type { Client };

/** A database with one large table (bigint key, ~120 bytes a row) and a few small ones. */
export async function createBigDatabase(cluster: ClusterHandle, database: string, rows: number): Promise<void> {
  await adminQuery(cluster, 'postgres', `CREATE DATABASE ${database}`);
  await adminQuery(
    cluster,
    database,
    `CREATE TABLE big (id bigint PRIMARY KEY, at timestamptz NOT NULL, note text NOT NULL, amount numeric(12,2));
     INSERT INTO big SELECT g, timestamptz '2026-01-01' + g * interval '1 second', md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text), g % 10000 / 100.0
       FROM generate_series(1, ${rows}) g;
     CREATE INDEX big_at_idx ON big (at);
     CREATE TABLE small_a (id serial PRIMARY KEY, name text); INSERT INTO small_a (name) SELECT 'a' || g FROM generate_series(1, 1000) g;
     CREATE TABLE small_b (id serial PRIMARY KEY, ref int REFERENCES small_a (id)); INSERT INTO small_b (ref) SELECT 1 + g % 1000 FROM generate_series(1, 5000) g;
     ANALYZE;`,
  );
}

/** An independent fingerprint of a table: count, distinct keys, and a sum of row hashes. */
export async function tableFingerprint(cluster: ClusterHandle, database: string, table: string): Promise<{ rows: string; keys: string; hash: string }> {
  const [row] = await adminQuery<{ rows: string; keys: string; hash: string }>(
    cluster,
    database,
    `SET TimeZone = 'UTC'; SELECT count(*)::text AS rows, count(DISTINCT id)::text AS keys, sum(hashtext(t::text)::bigint)::text AS hash FROM ${table} t`,
  );
  return row!;
}
