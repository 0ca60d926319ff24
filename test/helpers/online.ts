/**
 * Online-migration test helpers: a pgbench database with an application role, pgbench runs writing to
 * it (stopped by their own pid), the pgbench invariant, and what replication leaves on a server.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import type { WorkflowHandle } from '@temporalio/client';
import { adminQuery, createDatabase, DEBIAN_PG15_BIN, type ClusterHandle, type TestStack } from './stack';
import { stopPid, waitFor } from '../../scripts/lib/ports';
import { statusQuery } from '../../workflows/messages';
import type { MigrationStatus } from '../../src/model';

export const APP_PASSWORD = 'app-role-secret-pw';

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

/**
 * A source database owned by `migrator` (REPLICATION, may end sessions) with pgbench tables at `scale`,
 * an `events` table with a bigserial key, and an application role `app` that writes to them.
 */
export async function createPgbenchSource(cluster: ClusterHandle, database: string, scale: number): Promise<OnlineDatabase> {
  const db = await createDatabase(cluster, database);
  await adminQuery(cluster, 'postgres', `ALTER ROLE migrator REPLICATION; GRANT pg_signal_backend TO migrator;
    DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN CREATE ROLE app LOGIN PASSWORD '${APP_PASSWORD}'; END IF; END $$`);
  await runPgbench(cluster, database, ['-i', '-s', String(scale), '-q', '--foreign-keys'], 'migrator', db.password);
  await adminQuery(cluster, database, `SET ROLE migrator;
    CREATE TABLE events (id bigserial PRIMARY KEY, aid int NOT NULL, at timestamptz NOT NULL DEFAULT now());
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app;
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app;`);
  return { uri: db.uri, password: db.password };
}

/** The target database: owned by migrator, who may create subscriptions (PostgreSQL 16+); role app exists. */
export async function createOnlineTarget(cluster: ClusterHandle, database: string): Promise<OnlineDatabase> {
  const db = await createDatabase(cluster, database);
  await adminQuery(cluster, 'postgres', `GRANT pg_create_subscription TO migrator;
    DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN CREATE ROLE app LOGIN PASSWORD '${APP_PASSWORD}'; END IF; END $$`);
  return { uri: db.uri, password: db.password };
}

function runPgbench(cluster: ClusterHandle, database: string, args: string[], user: string, password: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(join(DEBIAN_PG15_BIN, 'pgbench'), ['-h', cluster.host, '-p', String(cluster.port), '-U', user, ...args, database], {
      env: { ...process.env, PGPASSWORD: password },
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('close', (code) => (code === 0 ? resolve(output) : reject(new Error(`pgbench ${args.join(' ')} failed: ${output}`))));
  });
}

export interface PgbenchRun {
  child: ChildProcess;
  /** Resolves when pgbench exits (it does when the freeze ends its sessions). */
  done: Promise<{ code: number | null; output: string }>;
  stop(): Promise<void>;
}

/** pgbench as the application: `clients` sessions at `rate` transactions/s in total, until stopped. */
export function startPgbench(stack: TestStack, cluster: ClusterHandle, database: string, clients = 4, rate = 200): PgbenchRun {
  const script = join(stack.dir, 'pgbench-script.sql');
  writeFileSync(script, SCRIPT);
  const child = spawn(
    join(DEBIAN_PG15_BIN, 'pgbench'),
    ['-h', cluster.host, '-p', String(cluster.port), '-U', 'app', '-n', '-c', String(clients), '-j', '2', '-R', String(rate), '-T', '3600', '-s', '2', '-f', script, database],
    { env: { ...process.env, PGPASSWORD: APP_PASSWORD } },
  );
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const done = new Promise<{ code: number | null; output: string }>((resolve) => child.on('close', (code) => resolve({ code, output })));
  return { child, done, stop: async () => (child.pid && child.exitCode === null ? stopPid(child.pid, 'SIGKILL', 10_000) : undefined) };
}

/** pgbench's invariant: the balances of accounts, tellers and branches each sum to the history's deltas. */
export async function pgbenchSums(cluster: ClusterHandle, database: string): Promise<{ accounts: string; tellers: string; branches: string; history: string; historyRows: string; events: string; eventsMax: string }> {
  const [row] = await adminQuery<{ accounts: string; tellers: string; branches: string; history: string; historyRows: string; events: string; eventsMax: string }>(
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

/** Slots, publications and subscriptions on a server (all databases): [] means nothing left behind. */
export async function replicationLeftovers(cluster: ClusterHandle, database: string): Promise<string[]> {
  const rows = await adminQuery<{ o: string }>(
    cluster,
    database,
    `SELECT 'slot ' || slot_name AS o FROM pg_replication_slots
     UNION ALL SELECT 'publication ' || pubname FROM pg_publication
     UNION ALL SELECT 'subscription ' || subname FROM pg_subscription`,
  );
  return rows.map((r) => r.o).sort();
}

/** Replica identity of every table in public (d, n, f, i). */
export async function replicaIdentities(cluster: ClusterHandle, database: string): Promise<Record<string, string>> {
  const rows = await adminQuery<{ t: string; r: string }>(cluster, database, `SELECT relname AS t, relreplident AS r FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1`);
  return Object.fromEntries(rows.map((r) => [r.t, r.r]));
}

/** A client of the application role, connected now. */
export async function appClient(cluster: ClusterHandle, database: string): Promise<Client> {
  const client = new Client({ host: cluster.host, port: cluster.port, database, user: 'app', password: APP_PASSWORD });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

export async function waitForStatus(handle: WorkflowHandle, what: string, check: (status: MigrationStatus) => boolean, timeoutMs = 300_000): Promise<MigrationStatus> {
  return waitFor(what, async () => {
    const status = await handle.query(statusQuery);
    return check(status) ? status : undefined;
  }, timeoutMs, 100);
}
