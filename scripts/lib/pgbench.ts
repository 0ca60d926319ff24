/**
 * pgbench as "the application" for online-migration tests and the cutover benchmark: a database owned
 * by a migration role, pgbench tables plus a table with a sequence, an application role `app`, pgbench
 * runs writing as that role (stopped by their own pid), and pgbench's invariant.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { adminQuery, DEBIAN_PG15_BIN, type ClusterHandle } from '../../src/dev/pg-cluster';
import { stopPid } from '../../src/dev/ports';
import { sh } from './bench';

export const APP_PASSWORD = 'app-role-secret-pw';
export const MIGRATOR_PASSWORD = 'migrator-secret-pw';

/** TPC-B plus an insert into a table with a sequence, so sequences are exercised too. */
const SCRIPT = `\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
INSERT INTO events (aid) VALUES (:aid);
END;
`;

export interface OnlineDatabase {
  uri: string;
  password: string;
}

/** A database owned by `migrator` (created if missing, with a password); returns its URI (no password). */
export async function createOwnedDatabase(cluster: ClusterHandle, database: string): Promise<OnlineDatabase> {
  await adminQuery(cluster, 'postgres', `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'migrator') THEN CREATE ROLE migrator LOGIN PASSWORD '${MIGRATOR_PASSWORD}'; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN CREATE ROLE app LOGIN PASSWORD '${APP_PASSWORD}'; END IF; END $$`);
  await adminQuery(cluster, 'postgres', `CREATE DATABASE "${database}" OWNER migrator`);
  return { uri: `postgresql://migrator@${cluster.host}:${cluster.port}/${database}`, password: MIGRATOR_PASSWORD };
}

/**
 * The source: pgbench tables at `scale` and `events` (bigserial key), owned by `migrator`, who may
 * replicate and end sessions; `app` reads and writes them.
 */
export async function createPgbenchSource(cluster: ClusterHandle, database: string, scale: number): Promise<OnlineDatabase> {
  const db = await createOwnedDatabase(cluster, database);
  await adminQuery(cluster, 'postgres', `ALTER ROLE migrator REPLICATION; GRANT pg_signal_backend TO migrator`);
  await sh(join(DEBIAN_PG15_BIN, 'pgbench'), ['-h', cluster.host, '-p', String(cluster.port), '-U', 'migrator', '-i', '-s', String(scale), '-q', '--foreign-keys', database], { PGPASSWORD: db.password });
  await adminQuery(cluster, database, `SET ROLE migrator;
    CREATE TABLE events (id bigserial PRIMARY KEY, aid int NOT NULL, at timestamptz NOT NULL DEFAULT now());
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app;
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app;
    ANALYZE;`);
  return db;
}

/**
 * The target: owned by migrator, who may create subscriptions (PostgreSQL 16+) and keep their statement
 * out of the server log (the default log_min_error_statement = error would log a failing one with the
 * source's password: pgmove sets the logging settings for that transaction); role app exists.
 */
export async function createOnlineTarget(cluster: ClusterHandle, database: string): Promise<OnlineDatabase> {
  const db = await createOwnedDatabase(cluster, database);
  await adminQuery(cluster, 'postgres', `GRANT pg_create_subscription TO migrator; GRANT SET ON PARAMETER ${STATEMENT_LOGGING_SETTINGS.join(', ')} TO migrator`);
  return db;
}

/** The core settings that can log a statement's text (see src/pg/statement-privacy.ts). */
export const STATEMENT_LOGGING_SETTINGS = ['log_statement', 'log_min_error_statement', 'log_min_duration_statement', 'log_min_duration_sample', 'log_transaction_sample_rate'];

export interface PgbenchRun {
  child: ChildProcess;
  /** Resolves when pgbench exits (it does when a freeze ends its sessions). */
  done: Promise<{ code: number | null; output: string }>;
  stop(): Promise<void>;
}

/**
 * pgbench as the application: `clients` sessions at `rate` transactions/s in total, until stopped.
 * `scale`: the accounts, tellers and branches it picks from (2 unless told: few branch rows, so
 * sessions wait on each other's row locks).
 */
export function startPgbench(workDir: string, cluster: ClusterHandle, database: string, clients = 4, rate = 200, scale = 2): PgbenchRun {
  const script = join(workDir, 'pgbench-script.sql');
  writeFileSync(script, SCRIPT);
  const child = spawn(
    join(DEBIAN_PG15_BIN, 'pgbench'),
    ['-h', cluster.host, '-p', String(cluster.port), '-U', 'app', '-n', '-c', String(clients), '-j', '2', '-R', String(rate), '-T', '3600', '-s', String(scale), '-f', script, database],
    { env: { ...process.env, PGPASSWORD: APP_PASSWORD } },
  );
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const done = new Promise<{ code: number | null; output: string }>((resolve) => child.on('close', (code) => resolve({ code, output })));
  return { child, done, stop: async () => (child.pid && child.exitCode === null ? stopPid(child.pid, 'SIGKILL', 10_000) : undefined) };
}

export interface PgbenchSums {
  accounts: string;
  tellers: string;
  branches: string;
  history: string;
  historyRows: string;
  events: string;
  eventsMax: string;
}

/** pgbench's invariant: the balances of accounts, tellers and branches each sum to the history's deltas. */
export async function pgbenchSums(cluster: ClusterHandle, database: string): Promise<PgbenchSums> {
  const [row] = await adminQuery<PgbenchSums>(
    cluster,
    database,
    `SELECT (SELECT coalesce(sum(abalance), 0)::text FROM pgbench_accounts) AS accounts,
            (SELECT coalesce(sum(tbalance), 0)::text FROM pgbench_tellers) AS tellers,
            (SELECT coalesce(sum(bbalance), 0)::text FROM pgbench_branches) AS branches,
            (SELECT coalesce(sum(delta), 0)::text FROM pgbench_history) AS history,
            (SELECT count(*)::text FROM pgbench_history) AS "historyRows",
            (SELECT count(*)::text FROM events) AS events,
            (SELECT coalesce(max(id), 0)::text FROM events) AS "eventsMax"`,
  );
  return row!;
}
