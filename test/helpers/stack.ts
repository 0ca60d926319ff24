/**
 * A throwaway stack per test file: a Temporal dev server (headless, in-memory history), PostgreSQL
 * clusters on free ports, and pgmove worker processes on a task queue of their own. Everything is
 * stopped by its own pid in `stop()`, also when a test failed.
 */
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client as TemporalClient, Connection } from '@temporalio/client';
import { startCluster, stopCluster, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../../src/dev/pg-cluster';
import { startTemporalServer, stopTemporalServer, type TemporalServerHandle } from '../../src/dev/temporal-server';
import { startWorkerProcess, stopWorkerProcess, type WorkerHandle } from '../../src/dev/worker-process';
import { recordHistories } from './record-histories';
import { ALLOWED_SECRETS_VARIABLE, allowedSecretPatterns } from '../../src/secret-policy';

export { DEBIAN_PG15_BIN, PROJECT_PG18_BIN, adminQuery };
export type { ClusterHandle };

function makeTestDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pgmove-test-'));
  chmodSync(dir, 0o755);
  return dir;
}

export class TestStack {
  /** Traversable by the postgres OS user, which runs the clusters inside it. */
  readonly dir = makeTestDir();
  readonly taskQueue = `pgmove-test-${process.pid}-${Date.now()}`;
  temporal?: TemporalServerHandle;
  /** Set by a test that stopped the Temporal server itself (deploy.test.ts). */
  temporalStopped = false;
  connection?: Connection;
  client?: TemporalClient;
  readonly clusters: ClusterHandle[] = [];
  readonly workers: WorkerHandle[] = [];

  constructor() {
    // As an operator would: this stack's secret files (secretFile) are allowed on its workers — and
    // in this test process, which runs some activities itself — next to the default (env:PGMOVE_*).
    process.env[ALLOWED_SECRETS_VARIABLE] = [...allowedSecretPatterns(), `file:${this.dir}/**`].join(',');
  }

  async startTemporal(): Promise<TemporalClient> {
    this.temporal = await startTemporalServer({ headless: true, logFile: join(this.dir, 'temporal.log') });
    this.connection = await Connection.connect({ address: this.temporal.address });
    this.client = new TemporalClient({ connection: this.connection });
    return this.client;
  }

  async startCluster(name: string, binDir: string, settings?: Record<string, string>): Promise<ClusterHandle> {
    const cluster = await startCluster({ binDir, dataDir: join(this.dir, name), password: `pw-${name}-${Math.random().toString(36).slice(2)}`, settings });
    this.clusters.push(cluster);
    return cluster;
  }

  async startWorker(env: NodeJS.ProcessEnv = {}): Promise<WorkerHandle> {
    const worker = await startWorkerProcess({
      address: this.temporal!.address,
      taskQueue: this.taskQueue,
      logFile: join(this.dir, `worker-${this.workers.length + 1}.log`),
      env: { PGMOVE_WORK_DIR: join(this.dir, 'work'), ...env },
    });
    this.workers.push(worker);
    return worker;
  }

  /** Writes a secret into a 0600 file and returns its file: reference. */
  secretFile(name: string, value: string): string {
    const path = join(this.dir, `${name}.secret`);
    writeFileSync(path, value + '\n');
    chmodSync(path, 0o600);
    return `file:${path}`;
  }

  async stop(): Promise<void> {
    const errors: unknown[] = [];
    const attempt = async (fn: () => Promise<void>) => fn().catch((error: unknown) => errors.push(error));
    // Before anything stops: the histories of this file's runs, when recording (npm run record-histories).
    if (this.client && !this.temporalStopped) await attempt(async () => void (await recordHistories(this.client!)));
    for (const worker of this.workers) await attempt(() => stopWorkerProcess(worker, 'SIGKILL'));
    await attempt(async () => this.connection?.close());
    if (this.temporal) await attempt(() => stopTemporalServer(this.temporal!));
    for (const cluster of this.clusters) await attempt(() => stopCluster(cluster));
    // PGMOVE_KEEP_TEST_DIR=1 keeps logs and data directories for a post-mortem of a failed run.
    if (!process.env.PGMOVE_KEEP_TEST_DIR) rmSync(this.dir, { recursive: true, force: true });
    if (errors.length) throw errors[0];
  }
}

/** Creates a database with a login role that owns it (the migration user), returns its URI parts. */
export async function createDatabase(cluster: ClusterHandle, database: string, owner = 'migrator', password = 'migrator-secret-pw'): Promise<{ uri: string; user: string; password: string }> {
  await adminQuery(cluster, 'postgres', `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${owner}') THEN CREATE ROLE "${owner}" LOGIN PASSWORD '${password}'; END IF; END $$`);
  await adminQuery(cluster, 'postgres', `CREATE DATABASE "${database}" OWNER "${owner}"`);
  return { uri: `postgresql://${owner}@127.0.0.1:${cluster.port}/${database}`, user: owner, password };
}
