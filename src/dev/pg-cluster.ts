/**
 * Throwaway PostgreSQL clusters on free ports, for the dev stack, the demo, tests and benchmarks.
 * As root, initdb and postgres run as the `postgres` OS user. Host connections need a password
 * (scram-sha-256), like a real server; stop() stops the postmaster by its own pid.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Client } from 'pg';
import { freePort, isAlive, stopPid, waitFor } from './ports';

export const DEBIAN_PG15_BIN = '/usr/lib/postgresql/15/bin';
export const PROJECT_PG18_BIN = join(__dirname, '..', '..', '.tools', 'pg18', 'bin');
/** The dev stack's source server: Debian's PostgreSQL 15 where installed, else the PyPI build setup-tools puts in .tools/pg15. */
export const SOURCE_PG15_BIN = existsSync(join(DEBIAN_PG15_BIN, 'postgres')) ? DEBIAN_PG15_BIN : join(__dirname, '..', '..', '.tools', 'pg15', 'bin');

export interface ClusterHandle {
  binDir: string;
  dataDir: string;
  port: number;
  host: string;
  superuser: string;
  superuserPassword: string;
  major: number;
}

function osUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
  return { uid: id('-u'), gid: id('-g') };
}

function runAs(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): string {
  const user = osUser();
  const result = spawnSync(file, args, { encoding: 'utf8', env, uid: user?.uid, gid: user?.gid, cwd: '/' });
  if (result.status !== 0) throw new Error(`${file} ${args.join(' ')} failed: ${result.stderr || result.stdout}`);
  return result.stdout;
}

function chownTree(path: string): void {
  const user = osUser();
  if (user) spawnSync('chown', ['-R', `${user.uid}:${user.gid}`, path]);
}

/** initdb + start. `dataDir` must not exist yet, or hold a cluster made by this function. */
export async function startCluster(options: { binDir: string; dataDir: string; port?: number; password: string; settings?: Record<string, string> }): Promise<ClusterHandle> {
  const { binDir, dataDir, password } = options;
  const port = options.port ?? (await freePort());
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    mkdirSync(dirname(dataDir), { recursive: true, mode: 0o755 });
    mkdirSync(dataDir, { mode: 0o700 });
    const pwfile = join(dataDir, '..', `.pw-${port}`);
    writeFileSync(pwfile, password + '\n', { mode: 0o600 });
    chownTree(dataDir);
    const user = osUser();
    if (user) chownSync(pwfile, user.uid, user.gid);
    try {
      runAs(join(binDir, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--pwfile', pwfile, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync']);
    } finally {
      rmSync(pwfile, { force: true });
    }
    const settings = {
      listen_addresses: "'127.0.0.1'",
      unix_socket_directories: `'${dataDir}'`,
      fsync: 'off',
      full_page_writes: 'off',
      synchronous_commit: 'off',
      shared_buffers: "'128MB'",
      max_connections: '100',
      wal_level: 'logical',
      max_wal_senders: '10',
      max_replication_slots: '10',
      ...options.settings,
    };
    appendFileSync(join(dataDir, 'postgresql.conf'), '\n' + Object.entries(settings).map(([k, v]) => `${k} = ${v}`).join('\n') + '\n');
  }
  chmodSync(dataDir, 0o700);
  const handle: ClusterHandle = { binDir, dataDir, port, host: '127.0.0.1', superuser: 'postgres', superuserPassword: password, major: 0 };
  try {
    runAs(join(binDir, 'pg_ctl'), ['-D', dataDir, '-l', join(dataDir, 'server.log'), '-o', `-p ${port}`, '-w', '-t', '120', 'start']);
    handle.major = await waitFor('PostgreSQL to accept connections', async () => {
      const client = adminClient(handle);
      await client.connect();
      try {
        return Math.floor(Number((await client.query('SHOW server_version_num')).rows[0].server_version_num) / 10000);
      } finally {
        await client.end();
      }
    });
  } catch (error) {
    // A server that started but never answered must not outlive its caller.
    await stopCluster(handle).catch(() => undefined);
    throw error;
  }
  return handle;
}

export function postmasterPid(dataDir: string): number | undefined {
  const file = join(dataDir, 'postmaster.pid');
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
  return Number.isFinite(pid) && isAlive(pid) ? pid : undefined;
}

/** Fast shutdown (SIGINT) of the postmaster by its pid; waits until it is gone. */
export async function stopCluster(handle: Pick<ClusterHandle, 'dataDir'>, remove = false): Promise<void> {
  const pid = postmasterPid(handle.dataDir);
  if (pid) await stopPid(pid, 'SIGINT', 60_000);
  if (remove) rmSync(handle.dataDir, { recursive: true, force: true });
}

export function adminClient(handle: ClusterHandle, database = 'postgres'): Client {
  const client = new Client({ host: handle.host, port: handle.port, user: handle.superuser, password: handle.superuserPassword, database });
  client.on('error', () => undefined);
  return client;
}

export async function adminQuery<T = Record<string, unknown>>(handle: ClusterHandle, database: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = adminClient(handle, database);
  await client.connect();
  try {
    // Several statements in one string give one result each: the last one is the answer.
    const result = (await client.query(sql, params)) as unknown as { rows: T[] } | { rows: T[] }[];
    return Array.isArray(result) ? (result[result.length - 1]?.rows ?? []) : result.rows;
  } finally {
    await client.end();
  }
}

/** Runs a SQL script file with psql as the superuser (psql's own parser handles COPY blocks, $$ etc.). */
export function runSqlFile(handle: ClusterHandle, database: string, file: string): void {
  const result = spawnSync(join(handle.binDir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', handle.host, '-p', String(handle.port), '-U', handle.superuser, '-d', database, '-f', file], {
    encoding: 'utf8',
    env: { ...process.env, PGPASSWORD: handle.superuserPassword },
  });
  if (result.status !== 0) throw new Error(`psql -f ${file} failed: ${result.stderr}`);
}
