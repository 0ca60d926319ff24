/**
 * What the privilege elevation does on the source server's side (activities/elevate-privileges.ts):
 * its record next to pg_hba.conf, the short "trust window" — pgmove's marked `local` trust line put at
 * the top of pg_hba.conf and loaded only while pgmove runs its grants or their revert over the unix
 * socket, then taken out again and reloaded — and the psql session it runs them in.
 *
 * pg_hba.conf is only ever edited line-wise on its current content: pgmove adds its two lines (marker
 * and trust line) and removes exactly those two. No backup is ever written back over the file, so a
 * change someone else made meanwhile (an operator, config management, another migration) stays.
 */
import type { Client } from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import type { PrivilegeElevationSpec } from '../src/elevation-spec';
import { connect, SEARCH_PATH_OPTION, type ConnectionInfo } from '../src/pg/connect';
import type { ExecBackend } from '../src/exec-backend';
import type { ServerLocation } from '../src/pg/server-location';
import type { MembershipBefore, RoleAttributes } from '../src/pg/privilege-needs';
import { assertSafeMigrationId } from '../src/migration-id';
import { pollUntil } from '../src/poll';

/** Kept next to pg_hba.conf while elevated; never holds a secret. */
export interface ElevationState {
  migrationId: string;
  role: string;
  superuser: string;
  database: string;
  hbaFile: string;
  backupFile: string;
  /** The role's attributes before pgmove changed anything (inherit: absent in records of older versions). */
  attributesBefore: Pick<RoleAttributes, 'superuser' | 'replication'> & Partial<RoleAttributes>;
  /** The role's memberships in what pgmove grants, before it granted (absent in records of older versions). */
  membershipsBefore?: Record<string, MembershipBefore>;
  attributesSet: string[];
  membershipsGranted: string[];
  roleRestored?: boolean;
}

export interface ElevationFiles {
  /** pg_hba.conf as it was before pgmove's line, while a trust window may be open; never written back. */
  backupFile: string;
  stateFile: string;
  marker: string;
  /** The marker of pgmove versions that kept the line for the whole migration: taken out as well. */
  legacyMarker: string;
}

export const files = (hbaFile: string, unchecked: string, migrationId = assertSafeMigrationId(unchecked)): ElevationFiles => ({
  backupFile: `${hbaFile}.pgmove-${migrationId}.bak`,
  stateFile: `${hbaFile}.pgmove-${migrationId}.json`,
  marker: `# pgmove ${migrationId}: temporary trust while pgmove grants or revokes the migration role's privileges, removed right after`,
  legacyMarker: `# pgmove ${migrationId}: temporary trust for the privilege elevation, removed when the migration ends`,
});

/** The one line the elevation adds: the unix socket only, one database, one role. */
export function trustLine(state: Pick<ElevationState, 'database' | 'superuser'>): string {
  return `local ${hbaToken(state.database)} ${hbaToken(state.superuser)} trust`;
}

/** A pg_hba.conf token: always double-quoted, so "all" or "replication" are taken literally. */
function hbaToken(name: string): string {
  if (/["\n\r]/.test(name)) {
    throw ApplicationFailure.nonRetryable(`the name ${JSON.stringify(name)} cannot be written into pg_hba.conf (it holds a double quote or newline): set source.privilegeElevation.superuser or grant by hand`, 'BadSpec');
  }
  return `"${name}"`;
}

/** pg_hba.conf without pgmove's marker lines of this migration and the trust line right after each. */
export function withoutOurLines(hba: string, markers: string[], trust: string): string {
  const lines = hba.split('\n');
  for (let at = lines.findIndex((l) => markers.includes(l)); at >= 0; at = lines.findIndex((l) => markers.includes(l))) lines.splice(at, lines[at + 1] === trust ? 2 : 1);
  return lines.join('\n');
}

export interface TrustWindow {
  backend: ExecBackend;
  elevation: PrivilegeElevationSpec;
  server: ServerLocation;
  /** The migration role's own connection: used to see the reloads happen. */
  info: ConnectionInfo;
  paths: ElevationFiles;
  state: Pick<ElevationState, 'database' | 'superuser'>;
  signal: AbortSignal;
}

/**
 * Runs `sql` as the superuser over the unix socket, with pgmove's trust line in pg_hba.conf (and loaded)
 * only meanwhile: the line goes in on top of the file's current content, and is taken out again (and
 * the file reloaded) whether the SQL succeeded or not.
 */
export async function inTrustWindow(w: TrustWindow, sql: string): Promise<void> {
  await withHbaLock(w, () => trustWindow(w, sql));
}

async function trustWindow(w: TrustWindow, sql: string): Promise<void> {
  const { backend, server, paths, signal } = w;
  // A copy for people (pg_hba.conf as it was before pgmove's line), taken once per open window; never restored.
  await backend.run(['sh', '-c', '[ -e "$2" ] || { cp -p "$1" "$2.tmp" && mv "$2.tmp" "$2"; }', 'sh', server.hbaFile, paths.backupFile], { as: 'server', signal });
  const hba = await readHba(w);
  if (!hba.split('\n').includes(paths.marker)) await writeHba(w, `${paths.marker}\n${trustLine(w.state)}\n${hba}`);
  let failure: unknown;
  try {
    await reload(w);
    await socketSql(w, sql);
  } catch (error) {
    failure = error;
  }
  // The line must not outlive the SQL: a failure to take it out wins (the activity is retried and tries again).
  await closeWindow(w);
  if (failure !== undefined) throw failure;
}

/** Takes pgmove's lines out of pg_hba.conf (if there), reloads, and removes the copy. Idempotent. */
export async function closeTrustWindow(w: TrustWindow): Promise<void> {
  await withHbaLock(w, () => closeWindow(w));
}

async function closeWindow(w: TrustWindow): Promise<void> {
  const hba = await readHba(w);
  const without = withoutOurLines(hba, [w.paths.marker, w.paths.legacyMarker], trustLine(w.state));
  if (without !== hba) await writeHba(w, without);
  // Also when the lines were already out: an earlier attempt may have died between its edit and the reload.
  await reload(w);
  await w.backend.run(['rm', '-f', w.paths.backupFile], { as: 'server', signal: w.signal });
}

/**
 * One trust window at a time per pg_hba.conf (the migrations of one cluster elevate side by side): a
 * lock directory next to it (mkdir is atomic), taken over when older than two minutes (a window takes
 * seconds; its holder died).
 */
async function withHbaLock<T>({ backend, server, signal }: TrustWindow, fn: () => Promise<T>): Promise<T> {
  const take =
    'l="$1.pgmove.lock"; n=0; until mkdir "$l" 2>/dev/null; do ' +
    'now=$(date +%s); t=$(stat -c %Y "$l" 2>/dev/null || echo "$now"); ' +
    'if [ $((now - t)) -gt 120 ]; then rmdir "$l" 2>/dev/null; continue; fi; ' +
    'n=$((n + 1)); if [ "$n" -gt 300 ]; then echo "$l is held by another pgmove trust window" >&2; exit 1; fi; ' +
    'sleep 0.2 2>/dev/null || sleep 1; done';
  await backend.run(['sh', '-c', take, 'sh', server.hbaFile], { as: 'server', signal });
  try {
    return await fn();
  } finally {
    // Not cancellable: a lock left behind would hold up every other window for two minutes.
    await backend.run(['rmdir', `${server.hbaFile}.pgmove.lock`], { as: 'server' }).catch(() => undefined);
  }
}

async function readHba(w: Pick<TrustWindow, 'backend' | 'server' | 'signal'>): Promise<string> {
  return (await w.backend.run(['cat', w.server.hbaFile], { as: 'server', signal: w.signal })).stdout;
}

/** cat into the existing file keeps its owner, mode and inode. */
async function writeHba(w: TrustWindow, content: string): Promise<void> {
  await w.backend.run(['sh', '-c', 'cat > "$1"', 'sh', w.server.hbaFile], { as: 'server', input: content, signal: w.signal });
}

export async function readState(backend: ExecBackend, path: string, signal: AbortSignal): Promise<ElevationState | undefined> {
  const out = (await backend.run(['sh', '-c', '[ -e "$1" ] && cat "$1" || true', 'sh', path], { as: 'server', signal })).stdout;
  return out.trim() ? (JSON.parse(out) as ElevationState) : undefined;
}

/** The elevations of other migrations on this server that are not reverted yet. */
export async function activeStates(backend: ExecBackend, hbaFile: string, migrationId: string, signal: AbortSignal): Promise<ElevationState[]> {
  const out = (
    await backend.run(['sh', '-c', 'for f in "$1".pgmove-*.json; do [ -e "$f" ] && cat "$f" && printf "\\036"; done; true', 'sh', hbaFile], { as: 'server', signal })
  ).stdout;
  return out
    .split('\x1e')
    .filter((text) => text.trim())
    .map((text) => JSON.parse(text) as ElevationState)
    .filter((other) => other.migrationId !== migrationId && !other.roleRestored);
}

export async function writeState(backend: ExecBackend, path: string, state: ElevationState, signal: AbortSignal): Promise<void> {
  await backend.run(['sh', '-c', 'umask 077 && cat > "$1.tmp" && mv "$1.tmp" "$1"', 'sh', path], { as: 'server', input: JSON.stringify(state, null, 2) + '\n', signal });
}

/** SIGHUP to the postmaster as its OS user; done when a new session sees a newer configuration load time. */
async function reload({ backend, server, info, signal }: TrustWindow): Promise<void> {
  const loadTime = () => withClient(info, async (c) => (await c.query<{ t: string }>('SELECT pg_conf_load_time()::text AS t')).rows[0]!.t);
  const before = await loadTime();
  await backend.run(['sh', '-c', 'kill -HUP "$1"', 'sh', String(server.postmasterPid)], { as: 'server', signal });
  await pollUntil(async () => ((await loadTime()) === before ? undefined : true), {
    intervalMs: 100,
    timeoutMs: 30_000,
    signal,
    what: 'the configuration reload',
    timeoutError: () => new Error(`the source server did not reload its configuration within 30 s after SIGHUP to pid ${server.postmasterPid}`),
  });
}

async function withClient<T>(info: ConnectionInfo, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await connect(info, 'source');
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Runs SQL as the superuser over the server's unix socket, with psql started as the server's OS user. */
async function socketSql({ backend, elevation, server, state, signal }: TrustWindow, sql: string): Promise<void> {
  // The database may be frozen (read-only by default) when the revert runs: this session writes anyway.
  // A superuser session in a database its owner controls: search_path pinned like every pgmove session.
  const conninfo = Object.entries({ host: server.socketDirectory, port: String(server.port), user: state.superuser, dbname: state.database, options: `-c default_transaction_read_only=off ${SEARCH_PATH_OPTION}` })
    .map(([key, value]) => `${key}='${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
    .join(' ');
  await backend.run([elevation.psql, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', conninfo, '-c', sql], { as: 'server', signal });
}
