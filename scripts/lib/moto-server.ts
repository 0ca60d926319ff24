/**
 * moto, the local AWS API emulator (RDS, EC2, DMS, Secrets Manager, IAM), as a child process on a free
 * port, started through scripts/moto-server.py (which fixes moto's DMS timestamps for AWS SDK v3) and
 * stopped by its pid. Installed by scripts/setup-tools.sh into .tools/venv.
 */
import { spawn } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, stopPid, waitFor } from '../../src/dev/ports';

const PROJECT_ROOT = join(__dirname, '..', '..');
const PYTHON = join(PROJECT_ROOT, '.tools', 'venv', 'bin', 'python');
const LAUNCHER = join(PROJECT_ROOT, 'scripts', 'moto-server.py');

export interface MotoServerHandle {
  pid: number;
  port: number;
  /** The endpoint override for AWS SDK clients and the spec's aws.endpoint. */
  endpoint: string;
}

export async function startMotoServer(options: { logFile: string; port?: number; env?: NodeJS.ProcessEnv }): Promise<MotoServerHandle> {
  if (!existsSync(PYTHON)) throw new Error('moto is not installed: run `npm run setup` (installs moto[server] from PyPI into .tools/venv)');
  const port = options.port ?? (await freePort());
  const log = openSync(options.logFile, 'a');
  const child = spawn(PYTHON, [LAUNCHER, '-H', '127.0.0.1', '-p', String(port)], {
    detached: true,
    stdio: ['ignore', log, log],
    env: { ...process.env, ...options.env },
  });
  child.unref();
  let exited = false;
  child.on('exit', () => (exited = true));
  const handle = { pid: child.pid!, port, endpoint: `http://127.0.0.1:${port}` };
  try {
    // moto answers its own dashboard API once the server is up.
    await waitFor('the moto server', async () => {
      if (exited) throw new Error(`moto exited during start-up; see ${options.logFile}`);
      const response = await fetch(`${handle.endpoint}/moto-api/data.json`);
      return response.ok;
    }, 60_000, 200);
  } catch (error) {
    await stopPid(handle.pid);
    throw error;
  }
  return handle;
}

export async function stopMotoServer(handle: Pick<MotoServerHandle, 'pid'>): Promise<void> {
  await stopPid(handle.pid, 'SIGTERM', 10_000);
}
