/**
 * Phase 2, elevatePrivileges (the "privilege hack"): when the migration role lacks what the method
 * needs and the spec allows it, pgmove puts a `local` trust line for one role (the bootstrap superuser)
 * over the unix socket at the top of pg_hba.conf, reloads, grants the migration role the least that
 * works, and takes the line out again at once (reload) — then undoes the grants in cleanup
 * (`revertPrivileges`), again with the line only in place while it revokes (activities/elevation-server.ts).
 *
 * Durable record: before anything changes, a state file next to pg_hba.conf records the plan and what
 * the role had before (attributes, memberships and how it inherited them); the workflow keeps the same
 * record. The revert works from the server-side record alone (a crash between the grant and the
 * activity's completion is undone too), or from the workflow's record when the file is gone, and takes
 * back only what pgmove added. Both activities are idempotent.
 */
import type { Client } from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import { Context } from '@temporalio/activity';
import { validateSpec, type MigrationSpecInput } from '../src/spec';
import type { ElevationRecord } from '../src/elevation-spec';
import { connect, connectionInfo, type ConnectionInfo } from '../src/pg/connect';
import { createBackend } from '../src/exec-backend';
import { locateServer } from '../src/pg/server-location';
import { bootstrapSuperuser, grantStatements, hasNeeds, membershipsOf, privilegeNeeds, revertStatements, roleAttributes, serverMajor, type MembershipBefore, type RoleAttributes } from '../src/pg/privilege-needs';
import { activityLogger } from '../src/log';
import { assertSafeMigrationId } from '../src/migration-id';
import { activeStates, closeTrustWindow, files, inTrustWindow, readState, trustLine, writeState, type ElevationState, type TrustWindow } from './elevation-server';
import { assertSpecSecretsAllowed } from '../src/secret-policy';
import { errorMessage } from '../src/error-text';

export interface ElevationInput {
  spec: MigrationSpecInput;
  migrationId: string;
  /** The workflow's own record of the elevation: the revert falls back on it when the state file is gone. */
  record?: ElevationRecord;
}

export async function elevatePrivileges(input: ElevationInput): Promise<ElevationRecord> {
  assertSafeMigrationId(input.migrationId);
  const spec = validateSpec(input.spec);
  assertSpecSecretsAllowed(spec);
  const elevation = spec.source.privilegeElevation!;
  const log = activityLogger('elevatePrivileges');
  const info = await connectionInfo(spec.source, 'source');
  const client = await connect(info, 'source', { classify: true });
  try {
    const needs = await privilegeNeeds(client, spec);
    const base: ElevationRecord = { elevated: false, reason: '', role: needs.role, attributesSet: [], membershipsGranted: [], statements: grantStatements(needs.role, needs.attributes, needs.memberships, needs.major) };
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
      // What the role had before: what another elevation already granted counts as that one's record says.
      const own = { attributes: await roleAttributes(client, needs.role), memberships: await membershipsOf(client, needs.role, memberships) };
      const beforeOf = <T>(granted: (o: ElevationState) => boolean, pick: (o: ElevationState) => T | undefined, fallback: T): T => {
        const holder = others.find((o) => granted(o) && pick(o) !== undefined);
        return holder ? pick(holder)! : fallback;
      };
      const attributesBefore = Object.fromEntries(
        (Object.keys(own.attributes) as (keyof RoleAttributes)[]).map((key) => [key, beforeOf((o) => o.attributesSet.includes(key.toUpperCase()), (o) => o.attributesBefore[key], own.attributes[key])]),
      ) as unknown as RoleAttributes;
      const membershipsBefore: Record<string, MembershipBefore> = Object.fromEntries(
        memberships.map((m) => [m, beforeOf((o) => o.membershipsGranted.includes(m), (o) => o.membershipsBefore?.[m], own.memberships[m] ?? { member: false })]),
      );
      state = {
        migrationId: input.migrationId,
        role: needs.role,
        superuser: elevation.superuser ?? (await bootstrapSuperuser(client)),
        database: info.database,
        hbaFile: server.hbaFile,
        backupFile: paths.backupFile,
        attributesBefore,
        membershipsBefore,
        attributesSet: attributes,
        membershipsGranted: memberships,
      };
      trustLine(state); // names pg_hba.conf cannot hold are refused before anything is written
      await writeState(backend, paths.stateFile, state, signal);
    }
    const window: TrustWindow = { backend, elevation, server, info, paths, state, signal };
    await inTrustWindow(window, grantStatements(state.role, state.attributesSet, state.membershipsGranted, needs.major).join(' '));
    const after = await privilegeNeeds(client, spec);
    if (hasNeeds(after)) throw new Error(`the elevation did not take effect: ${after.reasons.join('; ')}`);
    log.info({ role: state.role, attributes: state.attributesSet, memberships: state.membershipsGranted, hbaFile: server.hbaFile }, 'privileges elevated; trust line taken out again');
    return recordOf(state, paths.stateFile, server.osUser, `${needs.reasons.join('; ') || 'resumed'}; granted through ${backend.description}`, needs.major);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Undoes the elevation: what pgmove added to the role's attributes and memberships is taken back (over
 * the socket, with the trust line in place only meanwhile), pgmove's line is out of pg_hba.conf, the
 * state file removed. With nothing recorded — no state file, no record from the workflow — it does
 * nothing, so a second revert is a no-op.
 */
export async function revertPrivileges(input: ElevationInput): Promise<ElevationRecord | undefined> {
  // An id that cannot name pgmove's files was refused by the elevation too: nothing to revert, and no retry helps.
  assertSafeMigrationId(input.migrationId);
  // A spec that does not parse will not parse on any retry: fail loudly, with how to finish by hand.
  try {
    validateSpec(input.spec);
  } catch (error) {
    const message = errorMessage(error);
    throw ApplicationFailure.nonRetryable(
      `the privilege elevation cannot be reverted with this spec (${message}): correct the spec and run pgmove recover ${input.migrationId} -f SPEC, which reverts from the record on the server`,
      'BadSpec',
    );
  }
  try {
    return await revertOnce(input);
  } catch (error) {
    // Never given up on (a trust line must not stay): whatever failed — a Secret the worker may not read
    // right now, an unreachable pod — is retried until the operator has fixed it.
    const message = errorMessage(error);
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
    const recorded = await readState(backend, paths.stateFile, signal);
    // Without the file (e.g. a pod restart wiped it) the workflow's own record says what was granted.
    const state = recorded ?? stateFromRecord(input.record, info.database, server.hbaFile, paths.backupFile, input.migrationId);
    if (!state) return undefined;
    const window: TrustWindow = { backend, elevation, server, info, paths, state, signal };
    if (!state.roleRestored) {
      // What other migrations' elevations of this role still hold stays until their own revert.
      const held = (await activeStates(backend, server.hbaFile, input.migrationId, signal)).filter((other) => other.role === state.role);
      const attributes = state.attributesSet.filter((a) => !held.some((o) => o.attributesSet.includes(a)));
      const memberships = state.membershipsGranted.filter((m) => !held.some((o) => o.membershipsGranted.includes(m)));
      const statements = revertStatements(state.role, attributes, memberships, { attributes: state.attributesBefore, memberships: state.membershipsBefore }, await serverMajor(client));
      if (statements.length > 0) await inTrustWindow(window, statements.join(' '));
      if (recorded) await writeState(backend, paths.stateFile, { ...state, roleRestored: true }, signal);
    }
    // pgmove's line out (an attempt may have died inside a window, or an older pgmove kept it), reloaded.
    await closeTrustWindow(window);
    await backend.run(['rm', '-f', paths.stateFile], { as: 'server', signal });
    const how = `${recorded ? 'from the state file' : 'from the workflow\'s record (no state file on the server)'}; pgmove's trust line is out of pg_hba.conf, the rest of it untouched`;
    log.info({ role: state.role, hbaFile: server.hbaFile, how }, 'privilege elevation reverted');
    return { ...recordOf(state, paths.stateFile, server.osUser, `reverted ${how}`), revertedAt: new Date().toISOString() };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The state the elevation wrote, rebuilt from the workflow's record of it. */
function stateFromRecord(record: ElevationRecord | undefined, database: string, hbaFile: string, backupFile: string, migrationId: string): ElevationState | undefined {
  if (!record?.elevated || !record.superuser) return undefined;
  return {
    migrationId,
    role: record.role,
    superuser: record.superuser,
    database: record.database ?? database,
    hbaFile,
    backupFile,
    attributesBefore: record.attributesBefore ?? { superuser: false, replication: false },
    membershipsBefore: record.membershipsBefore,
    attributesSet: record.attributesSet,
    membershipsGranted: record.membershipsGranted,
  };
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

function recordOf(state: ElevationState, stateFile: string, osUser: string, reason: string, major = 0): ElevationRecord {
  return {
    elevated: true,
    reason,
    role: state.role,
    database: state.database,
    hbaFile: state.hbaFile,
    backupFile: state.backupFile,
    stateFile,
    osUser,
    superuser: state.superuser,
    attributesBefore: state.attributesBefore,
    membershipsBefore: state.membershipsBefore,
    attributesSet: state.attributesSet,
    membershipsGranted: state.membershipsGranted,
    statements: grantStatements(state.role, state.attributesSet, state.membershipsGranted, major),
  };
}
