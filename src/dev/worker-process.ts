/** A pgmove worker as its own process (what operators run), stoppable or killable by pid. */
import { spawn } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { stopPid, waitFor } from './ports';

const BIN = join(__dirname, '..', '..', 'bin', 'pgmove.js');

export interface WorkerHandle {
  pid: number;
  logFile: string;
}

export async function startWorkerProcess(options: { address: string; taskQueue: string; logFile: string; env?: NodeJS.ProcessEnv; detached?: boolean }): Promise<WorkerHandle> {
  const log = openSync(options.logFile, 'a');
  const startOffset = readFileSync(options.logFile).length;
  const child = spawn(process.execPath, [BIN, 'worker'], {
    env: { ...process.env, ...options.env, TEMPORAL_ADDRESS: options.address, PGMOVE_TASK_QUEUE: options.taskQueue },
    stdio: ['ignore', log, log],
    // Its own process group (like a pod): a kill reaches what the worker started (pg_restore, hooks).
    detached: true,
  });
  if (options.detached) child.unref();
  const handle = { pid: child.pid!, logFile: options.logFile };
  let exited = false;
  child.on('exit', () => (exited = true));
  await waitFor('the pgmove worker to start', async () => {
    if (exited) throw new Error(`worker exited during start-up; see ${options.logFile}:\n${readFileSync(options.logFile, 'utf8').slice(startOffset).slice(-2000)}`);
    return readFileSync(options.logFile, 'utf8').slice(startOffset).includes('"msg":"worker started"');
  }, 120_000, 200).catch((error: Error) => {
    if (!exited) killGroup(handle.pid, 'SIGKILL');
    throw error;
  });
  return handle;
}

/**
 * SIGKILL ends the worker and everything it started at once, as a node or pod failure would; SIGTERM
 * lets the worker shut down gracefully, then ends whatever it left behind.
 */
export async function stopWorkerProcess(handle: Pick<WorkerHandle, 'pid'>, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (signal === 'SIGKILL') killGroup(handle.pid, 'SIGKILL');
  await stopPid(handle.pid, signal, 30_000);
  killGroup(handle.pid, 'SIGKILL');
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    /* the group is gone */
  }
}
