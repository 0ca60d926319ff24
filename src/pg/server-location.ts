/**
 * Where a running PostgreSQL server keeps its files, found through an execution backend: the data
 * directory and socket from the postmaster (its working directory is the data directory, and
 * postmaster.pid names pid, port and socket directory), pg_hba.conf from `SHOW hba_file` when the role
 * may read it, else from `postgres -C hba_file` with the postmaster's own arguments, and the server's OS
 * user from the owner of the data directory.
 */
import type { Client } from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import type { ExecBackend } from '../exec-backend';
import type { PrivilegeElevationSpec } from '../elevation-spec';

export interface ServerLocation {
  dataDirectory: string;
  hbaFile: string;
  postmasterPid: number;
  port: number;
  socketDirectory: string;
  osUser: string;
}

interface Postmaster {
  pid: number;
  exe: string;
  dataDirectory: string;
  args: string[];
}

/** Lists postmasters (postgres processes whose parent is not one), as `pid TAB exe TAB cwd TAB args(RS-separated)`. */
const LIST_POSTMASTERS = `for d in /proc/[0-9]*; do
  exe=$(readlink "$d/exe" 2>/dev/null) || continue
  case "$exe" in */postgres|*/postmaster) ;; *) continue ;; esac
  ppid=$(sed -n 's/^PPid:[[:space:]]*//p' "$d/status" 2>/dev/null)
  case "$(readlink "/proc/$ppid/exe" 2>/dev/null)" in */postgres|*/postmaster) continue ;; esac
  cwd=$(readlink "$d/cwd" 2>/dev/null) || continue
  printf '%s\\t%s\\t%s\\t' "\${d#/proc/}" "$exe" "$cwd"
  tr '\\000' '\\036' < "$d/cmdline"
  printf '\\n'
done`;

export async function locateServer(backend: ExecBackend, client: Client, spec: PrivilegeElevationSpec, uriPort: number, signal?: AbortSignal): Promise<ServerLocation> {
  const postmaster = spec.dataDirectory ? undefined : await findPostmaster(backend, uriPort, signal);
  const dataDirectory = spec.dataDirectory ?? postmaster!.dataDirectory;
  const pidFile = (await backend.run(['cat', `${dataDirectory}/postmaster.pid`], { as: 'default', signal })).stdout.split('\n');
  const [user] = (await backend.run(['stat', '-c', '%U', dataDirectory], { as: 'default', signal })).stdout.trim().split(/\s+/);
  const osUser = spec.osUser ?? user;
  if (!osUser || osUser === 'UNKNOWN') {
    throw ApplicationFailure.nonRetryable(
      `the owner of ${dataDirectory} has no user name (${backend.description}); set source.privilegeElevation.osUser, or kubectl.runAs: exec when the container already runs as the server's user`,
      'BadSpec',
    );
  }
  backend.setServerUser(osUser);
  if (!(pidFile[4] ?? '').trim()) {
    throw ApplicationFailure.nonRetryable(
      `the source server listens on no unix socket (unix_socket_directories is empty in ${dataDirectory}/postmaster.pid): the privilege elevation connects over one; grant by hand instead`,
      'BadSpec',
    );
  }
  const hbaFile = spec.hbaFile ?? (await showSetting(client, 'hba_file')) ?? (await hbaFromPostmaster(backend, postmaster, dataDirectory, signal));
  return {
    dataDirectory,
    hbaFile,
    postmasterPid: Number(pidFile[0]),
    port: Number(pidFile[3]),
    socketDirectory: (pidFile[4] ?? '').trim(),
    osUser,
  };
}

async function findPostmaster(backend: ExecBackend, uriPort: number, signal?: AbortSignal): Promise<Postmaster> {
  const out = (await backend.run(['sh', '-c', LIST_POSTMASTERS], { as: 'default', signal })).stdout;
  const found: Postmaster[] = out
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [pid, exe, cwd, cmdline] = line.split('\t');
      return { pid: Number(pid), exe: exe!, dataDirectory: cwd!, args: (cmdline ?? '').split('\x1e').filter(Boolean).slice(1) };
    });
  if (found.length === 1) return found[0]!;
  // Several servers on one host: the one listening on the URI's port (postmaster.pid line 4).
  for (const candidate of found) {
    const port = await backend
      .run(['sed', '-n', '4p', `${candidate.dataDirectory}/postmaster.pid`], { as: 'default', signal })
      .then((r) => Number(r.stdout.trim()))
      .catch(() => 0);
    if (port === uriPort) return candidate;
  }
  throw ApplicationFailure.nonRetryable(
    `no PostgreSQL server listening on port ${uriPort} was found (${backend.description}; found: ${found.map((p) => p.dataDirectory).join(', ') || 'none'}): ` +
      'set source.privilegeElevation.dataDirectory (and hbaFile), or point the backend at the right pod/container',
    'BadSpec',
  );
}

/** SHOW works for superusers and members of pg_read_all_settings; anything else answers undefined. */
async function showSetting(client: Client, name: 'hba_file'): Promise<string | undefined> {
  return client
    .query<Record<string, string>>(`SHOW ${name}`)
    .then((r) => r.rows[0]?.[name])
    .catch(() => undefined);
}

async function hbaFromPostmaster(backend: ExecBackend, postmaster: Postmaster | undefined, dataDirectory: string, signal?: AbortSignal): Promise<string> {
  const exe = postmaster?.exe ?? 'postgres';
  const args = postmaster?.args ?? [];
  const hasDataDir = args.some((a) => a === '-D' || a.startsWith('--pgdata') || a.startsWith('-D'));
  const argv = [exe, ...(hasDataDir ? [] : ['-D', dataDirectory]), ...args, '-C', 'hba_file'];
  const out = await backend.run(argv, { as: 'server', signal }).catch((error: Error) => {
    throw ApplicationFailure.nonRetryable(`cannot find pg_hba.conf (${error.message}): set source.privilegeElevation.hbaFile`, 'BadSpec');
  });
  return out.stdout.trim();
}
