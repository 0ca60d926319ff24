/**
 * Phase 2, elevatePrivileges (the "privilege hack"): when the migration role lacks what the method
 * needs and the spec allows it, pgmove backs up pg_hba.conf next to itself, puts a `local` trust line
 * for one role (the bootstrap superuser) over the unix socket at its top, reloads, and grants the
 * migration role the least that works — then undoes all of it in cleanup (`revertPrivileges`).
 *
 * Durable record: before anything changes, a state file next to pg_hba.conf records the plan and the
 * role's former attributes; the backup's presence says pg_hba.conf may be modified. A crash anywhere
 * (also between the file edit and the activity's completion) is undone by the revert, which works from
 * the server-side record alone. Both activities are idempotent.
 */
import type { Client } from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import { Context } from '@temporalio/activity';
import type { MigrationSpecInput } from '../src/spec';
import type { ElevationRecord, PrivilegeElevationSpec } from '../src/elevation-spec';
import { validateSpec } from './preflight';
import { connect, connectionInfo, SEARCH_PATH_OPTION, type ConnectionInfo } from '../src/pg/connect';
import { createBackend, type ExecBackend } from '../src/exec-backend';
import { locateServer, type ServerLocation } from '../src/pg/server-location';
import { bootstrapSuperuser, grantStatements, hasNeeds, privilegeNeeds, revertStatements, roleAttributes, type RoleAttributes } from '../src/pg/privilege-needs';
import { activityLogger } from '../src/log';
import { assertSafeMigrationId } from '../src/migration-id';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ElevationInput {
  spec: MigrationSpecInput;
  migrationId: string;
}

/** Kept next to pg_hba.conf while elevated; never holds a secret. */
interface ElevationState {
  migrationId: string;
  role: string;
  superuser: string;
  database: string;
  hbaFile: string;
  backupFile: string;
  attributesBefore: RoleAttributes;
  attributesSet: string[];
  membershipsGranted: string[];
  roleRestored?: boolean;
}

const files = (hbaFile: string, unchecked: string, migrationId = assertSafeMigrationId(unchecked)) => ({
  backupFile: `${hbaFile}.pgmove-${migrationId}.bak`,
  stateFile: `${hbaFile}.pgmove-${migrationId}.json`,
  marker: `# pgmove ${migrationId}: temporary trust for the privilege elevation, removed when the migration ends`,
});

export async function elevatePrivileges(input: ElevationInput): Promise<ElevationRecord> {
  assertSafeMigrationId(input.migrationId);
  const spec = validateSpec(input.spec);
  const elevation = spec.source.privilegeElevation!;
  const log = activityLogger('elevatePrivileges');
  const info = await connectionInfo(spec.source, 'source');
  const client = await connect(info, 'source', { classify: true });
  try {
    const needs = await privilegeNeeds(client, spec);
    const base: ElevationRecord = { elevated: false, reason: '', role: needs.role, attributesSet: [], membershipsGranted: [], statements: grantStatements(needs.role, needs.attributes, needs.memberships) };
    if (!elevation.allow) {
      if (!hasNeeds(needs)) return { ...base, reason: `${needs.role} already has what the ${spec.method} method needs` };
      throw ApplicationFailure.create({
        message:
          `pre-flight failed, nothing was written: ${needs.reasons.join('; ')}.\n  fix: on the source, as a superuser: ${base.statements.join(' ')}\n` +
          '  — or set source.privilegeElevation.allow: true to let pgmove grant it for the migration and revoke it afterwards',
        type: 'PreflightFailed',
        nonRetryable: true,
      });
    }
    const signal = Context.current().cancellationSignal;
    const backend = createBackend(elevation);
    const server = await locateServer(backend, client, elevation, info.port, signal);
    const paths = files(server.hbaFile, input.migrationId);
    let state = await readState(backend, paths.stateFile, signal);
    if (!state) {
      // Another migration from this server (migrateCluster runs several) may hold an elevation of the
      // same role: then this one holds it too, so the first revert does not pull it from under us.
      const others = (await activeStates(backend, server.hbaFile, input.migrationId, signal)).filter((other) => other.role === needs.role);
      const attributes = [...new Set([...needs.attributes, ...others.flatMap((o) => o.attributesSet)])];
      const memberships = [...new Set([...needs.memberships, ...others.flatMap((o) => o.membershipsGranted)])];
      if (attributes.length + memberships.length === 0) return { ...base, reason: `${needs.role} already has what the ${spec.method} method needs; nothing changed` };
      if (spec.dryRun) return { ...base, reason: `dry run: would grant ${base.statements.join(' ')} via ${backend.description}` };
      state = {
        migrationId: input.migrationId,
        role: needs.role,
        superuser: elevation.superuser ?? (await bootstrapSuperuser(client)),
        database: info.database,
        hbaFile: server.hbaFile,
        backupFile: paths.backupFile,
        attributesBefore: others[0]?.attributesBefore ?? (await roleAttributes(client, needs.role)),
        attributesSet: attributes,
        membershipsGranted: memberships,
      };
      trustLine(state); // names pg_hba.conf cannot hold are refused before anything is written
      await writeState(backend, paths.stateFile, state, signal);
    }
    // The backup is taken once: a retry must never overwrite the original with the modified file.
    await backend.run(['sh', '-c', '[ -e "$2" ] || { cp -p "$1" "$2.tmp" && mv "$2.tmp" "$2"; }', 'sh', server.hbaFile, paths.backupFile], { as: 'server', signal });
    const hba = (await backend.run(['cat', server.hbaFile], { as: 'server', signal })).stdout;
    if (!hba.includes(paths.marker)) {
      await backend.run(['sh', '-c', '{ printf "%s\\n" "$3" "$4"; cat "$2"; } > "$1"', 'sh', server.hbaFile, paths.backupFile, paths.marker, trustLine(state)], { as: 'server', signal });
    }
    await reload(backend, server, info, signal);
    await socketSql(backend, elevation, server, state, grantStatements(state.role, state.attributesSet, state.membershipsGranted).join(' '), signal);
    const after = await privilegeNeeds(client, spec);
    if (hasNeeds(after)) throw new Error(`the elevation did not take effect: ${after.reasons.join('; ')}`);
    log.info({ role: state.role, attributes: state.attributesSet, memberships: state.membershipsGranted, hbaFile: server.hbaFile }, 'privileges elevated');
    return recordOf(state, paths.stateFile, server.osUser, `${needs.reasons.join('; ') || 'resumed'}; granted through ${backend.description}`);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Undoes the elevation: the role's attributes and memberships first (over the socket, while the trust
 * line is still there), then pg_hba.conf byte-identical from the backup, reload, backup and state
 * removed. With nothing recorded on the server it does nothing, so a second revert is a no-op.
 */
export async function revertPrivileges(input: ElevationInput): Promise<ElevationRecord | undefined> {
  // An id that cannot name pgmove's files was refused by the elevation too: nothing to revert, and no retry helps.
  assertSafeMigrationId(input.migrationId);
  try {
    return await revertOnce(input);
  } catch (error) {
    // Never given up on (a trust line must not stay): whatever failed — a Secret the worker may not read
    // right now, an unreachable pod — is retried until the operator has fixed it.
    const message = error instanceof Error ? error.message : String(error);
    throw ApplicationFailure.retryable(`reverting the privilege elevation failed (retried until it succeeds; fix the cause): ${message}`, 'RevertPending');
  }
}

async function revertOnce(input: ElevationInput): Promise<ElevationRecord | undefined> {
  const spec = validateSpec(input.spec);
  const elevation = spec.source.privilegeElevation;
  if (!elevation?.allow || spec.dryRun) return undefined;
  const log = activityLogger('revertPrivileges');
  const signal = Context.current().cancellationSignal;
  const { info, client } = await connectForRevert(await connectionInfo(spec.source, 'source'));
  try {
    const backend = createBackend(elevation);
    const server = await locateServer(backend, client, elevation, info.port, signal);
    const paths = files(server.hbaFile, input.migrationId);
    const state = await readState(backend, paths.stateFile, signal);
    if (!state) return undefined;
    const hba = (await backend.run(['cat', server.hbaFile], { as: 'server', signal })).stdout;
    if (!state.roleRestored && hba.includes(paths.marker)) {
      // What other migrations' elevations of this role still hold stays until their own revert.
      const held = (await activeStates(backend, server.hbaFile, input.migrationId, signal)).filter((other) => other.role === state.role);
      const attributes = state.attributesSet.filter((a) => !held.some((o) => o.attributesSet.includes(a)));
      const memberships = state.membershipsGranted.filter((m) => !held.some((o) => o.membershipsGranted.includes(m)));
      await reload(backend, server, info, signal); // the trust line may have been written but not loaded
      if (attributes.length + memberships.length > 0) await socketSql(backend, elevation, server, state, revertStatements(state.role, attributes, memberships).join(' '), signal);
    }
    // Without the trust line nothing was granted (grants come after it), or it was already reverted.
    await writeState(backend, paths.stateFile, { ...state, roleRestored: true }, signal);
    const hasBackup = (await backend.run(['sh', '-c', '[ -e "$1" ] && echo yes || echo no', 'sh', paths.backupFile], { as: 'server', signal })).stdout.trim() === 'yes';
    let how = 'pg_hba.conf restored from the backup';
    if (hasBackup) {
      const trust = trustLine(state);
      // Unchanged since the elevation (our two lines on top of the backup)? Then restore the bytes.
      const untouched = await backend
        .run(['sh', '-c', '{ printf "%s\\n" "$3" "$4"; cat "$2"; } | cmp -s - "$1"', 'sh', server.hbaFile, paths.backupFile, paths.marker, trust], { as: 'server', signal })
        .then(() => true, () => false);
      if (untouched || !hba.includes(paths.marker)) {
        // cat into the existing file keeps its owner, mode and inode; the bytes are the backup's.
        await backend.run(['sh', '-c', 'cat "$2" > "$1"', 'sh', server.hbaFile, paths.backupFile], { as: 'server', signal });
      } else {
        // Someone else (another migration, an operator) changed it meanwhile: take out only our lines.
        how = 'pg_hba.conf had changed since the elevation: only pgmove\'s two lines were removed, the rest kept';
        await backend.run(['sh', '-c', 'cat > "$1"', 'sh', server.hbaFile], { as: 'server', input: withoutOurLines(hba, paths.marker, trust), signal });
      }
      await reload(backend, server, info, signal);
      await backend.run(['rm', '-f', paths.backupFile], { as: 'server', signal });
    }
    await backend.run(['rm', '-f', paths.stateFile], { as: 'server', signal });
    log.info({ role: state.role, hbaFile: server.hbaFile, how }, 'privilege elevation reverted');
    return { ...recordOf(state, paths.stateFile, server.osUser, `reverted; ${how}`), revertedAt: new Date().toISOString() };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * The revert only reads server settings over this connection, from any database. The migrated one may
 * refuse the role by now: a fence that lives on after a failed unfreeze revokes CONNECT, and an earlier
 * attempt of this revert may already have taken back the SUPERUSER that let the role in.
 */
async function connectForRevert(sourceInfo: ConnectionInfo): Promise<{ info: ConnectionInfo; client: Client }> {
  try {
    return { info: sourceInfo, client: await connect(sourceInfo, 'source') };
  } catch (error) {
    if ((error as { code?: string }).code !== '42501' || sourceInfo.database === 'postgres') throw error;
    const maintenance = { ...sourceInfo, database: 'postgres' };
    return { info: maintenance, client: await connect(maintenance, 'source') };
  }
}

/** What the server records of this migration's elevation (for `pgmove recover --dry-run`); reads only. */
export async function recordedElevation(input: ElevationInput): Promise<ElevationRecord | undefined> {
  const spec = validateSpec(input.spec);
  const elevation = spec.source.privilegeElevation;
  if (!elevation?.allow) return undefined;
  const signal = Context.current().cancellationSignal;
  const { info, client } = await connectForRevert(await connectionInfo(spec.source, 'source'));
  try {
    const backend = createBackend(elevation);
    const server = await locateServer(backend, client, elevation, info.port, signal);
    const paths = files(server.hbaFile, input.migrationId);
    const state = await readState(backend, paths.stateFile, signal);
    return state && recordOf(state, paths.stateFile, server.osUser, state.roleRestored ? 'role restored; pg_hba.conf not yet' : 'elevated');
  } finally {
    await client.end().catch(() => undefined);
  }
}

function withoutOurLines(hba: string, marker: string, trust: string): string {
  const lines = hba.split('\n');
  const at = lines.indexOf(marker);
  if (at >= 0) lines.splice(at, lines[at + 1] === trust ? 2 : 1);
  return lines.join('\n');
}

function recordOf(state: ElevationState, stateFile: string, osUser: string, reason: string): ElevationRecord {
  return {
    elevated: true,
    reason,
    role: state.role,
    hbaFile: state.hbaFile,
    backupFile: state.backupFile,
    stateFile,
    osUser,
    superuser: state.superuser,
    attributesBefore: state.attributesBefore,
    attributesSet: state.attributesSet,
    membershipsGranted: state.membershipsGranted,
    statements: grantStatements(state.role, state.attributesSet, state.membershipsGranted),
  };
}

/** The one line the elevation adds: the unix socket only, one database, one role. */
function trustLine(state: Pick<ElevationState, 'database' | 'superuser'>): string {
  return `local ${hbaToken(state.database)} ${hbaToken(state.superuser)} trust`;
}

/** A pg_hba.conf token: always double-quoted, so "all" or "replication" are taken literally. */
function hbaToken(name: string): string {
  if (/["\n\r]/.test(name)) {
    throw ApplicationFailure.nonRetryable(`the name ${JSON.stringify(name)} cannot be written into pg_hba.conf (it holds a double quote or newline): set source.privilegeElevation.superuser or grant by hand`, 'BadSpec');
  }
  return `"${name}"`;
}

async function readState(backend: ExecBackend, path: string, signal: AbortSignal): Promise<ElevationState | undefined> {
  const out = (await backend.run(['sh', '-c', '[ -e "$1" ] && cat "$1" || true', 'sh', path], { as: 'server', signal })).stdout;
  return out.trim() ? (JSON.parse(out) as ElevationState) : undefined;
}

/** The elevations of other migrations on this server that are not reverted yet. */
async function activeStates(backend: ExecBackend, hbaFile: string, migrationId: string, signal: AbortSignal): Promise<ElevationState[]> {
  const out = (
    await backend.run(['sh', '-c', 'for f in "$1".pgmove-*.json; do [ -e "$f" ] && cat "$f" && printf "\\036"; done; true', 'sh', hbaFile], { as: 'server', signal })
  ).stdout;
  return out
    .split('\x1e')
    .filter((text) => text.trim())
    .map((text) => JSON.parse(text) as ElevationState)
    .filter((other) => other.migrationId !== migrationId && !other.roleRestored);
}

async function writeState(backend: ExecBackend, path: string, state: ElevationState, signal: AbortSignal): Promise<void> {
  await backend.run(['sh', '-c', 'umask 077 && cat > "$1.tmp" && mv "$1.tmp" "$1"', 'sh', path], { as: 'server', input: JSON.stringify(state, null, 2) + '\n', signal });
}

/** SIGHUP to the postmaster as its OS user; done when a new session sees a newer configuration load time. */
async function reload(backend: ExecBackend, server: ServerLocation, info: ConnectionInfo, signal: AbortSignal): Promise<void> {
  const loadTime = () => withDumpClient(info, async (c) => (await c.query<{ t: string }>('SELECT pg_conf_load_time()::text AS t')).rows[0]!.t);
  const before = await loadTime();
  await backend.run(['sh', '-c', 'kill -HUP "$1"', 'sh', String(server.postmasterPid)], { as: 'server', signal });
  const deadline = Date.now() + 30_000;
  while ((await loadTime()) === before) {
    if (Date.now() > deadline) throw new Error(`the source server did not reload its configuration within 30 s after SIGHUP to pid ${server.postmasterPid}`);
    await sleep(100, undefined, { signal });
  }
}

async function withDumpClient<T>(info: ConnectionInfo, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await connect(info, 'source');
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Runs SQL as the superuser over the server's unix socket, with psql started as the server's OS user. */
async function socketSql(backend: ExecBackend, elevation: PrivilegeElevationSpec, server: ServerLocation, state: ElevationState, sql: string, signal: AbortSignal): Promise<void> {
  // The database may be frozen (read-only by default) when the revert runs: this session writes anyway.
  // A superuser session in a database its owner controls: search_path pinned like every pgmove session.
  const conninfo = Object.entries({ host: server.socketDirectory, port: String(server.port), user: state.superuser, dbname: state.database, options: `-c default_transaction_read_only=off ${SEARCH_PATH_OPTION}` })
    .map(([key, value]) => `${key}='${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
    .join(' ');
  await backend.run([elevation.psql, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', conninfo, '-c', sql], { as: 'server', signal });
}
