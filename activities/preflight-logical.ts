/**
 * Pre-flight for the logical method (used by `preflight`): can the source publish and keep a slot, can
 * the target subscribe and reach the source, and which tables replication cannot carry. Each blocker
 * says what fixes it; with `method: auto` any blocker makes the migration fall back to `dump`.
 */
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { LogicalPlan } from '../src/model';
import type { TableInfo } from '../src/pg/catalog';
import type { ConnectionInfo } from '../src/pg/connect';
import { displayName, ident } from '../src/pg/sql';
import { replicationCapacityBlockers, subscribeRight, subscriptionProbeError } from '../src/pg/replication-preflight';
import { sourceAsTargetSeesIt } from './sync';
import { statementLoggingBlocker, unsafeStatementLogging } from '../src/pg/statement-privacy';

export interface LogicalBlocker {
  detail: string;
  fix: string;
}

export interface LogicalReadiness {
  blockers: LogicalBlocker[];
  plan: LogicalPlan;
}

export async function logicalReadiness(
  spec: MigrationSpec,
  source: Client,
  target: Client,
  tables: TableInfo[],
  largeObjects: number,
  sourceInfo: ConnectionInfo,
  targetInfo: ConnectionInfo,
): Promise<LogicalReadiness> {
  const blockers: LogicalBlocker[] = [];
  blockers.push(...(await replicationCapacityBlockers(source, 'source')));

  const rights = (
    await source
      .query<{ replication: boolean; superuser: boolean; create_db: boolean }>(
        `SELECT r.rolreplication OR r.rolsuper OR coalesce(pg_has_role('rds_replication', 'MEMBER'), false) AS replication,
              r.rolsuper AS superuser, has_database_privilege(current_database(), 'CREATE') AS create_db
         FROM pg_roles r WHERE r.rolname = current_user`,
      )
      .catch(() =>
        // rds_replication does not exist outside RDS.
        source.query<{ replication: boolean; superuser: boolean; create_db: boolean }>(
          `SELECT r.rolreplication OR r.rolsuper AS replication, r.rolsuper AS superuser, has_database_privilege(current_database(), 'CREATE') AS create_db
           FROM pg_roles r WHERE r.rolname = current_user`,
        ),
      )
  ).rows[0]!;
  if (!rights.replication) {
    blockers.push({
      detail: `${sourceInfo.user} may not create a replication slot`,
      fix: `on the source: ALTER ROLE ${ident(sourceInfo.user)} REPLICATION; (on RDS: GRANT rds_replication TO ${ident(sourceInfo.user)};)`,
    });
  }
  if (!rights.create_db) {
    blockers.push({
      detail: `${sourceInfo.user} may not create a publication in ${sourceInfo.database}`,
      fix: `GRANT CREATE ON DATABASE ${ident(sourceInfo.database)} TO ${ident(sourceInfo.user)};`,
    });
  }
  const published = tables.filter((t) => !t.unlogged);
  if (!rights.superuser && published.length) {
    const notOwned = (
      await source.query<{ t: string }>(
        `SELECT format('%I.%I', s, n) AS t FROM unnest($1::text[], $2::text[]) AS x(s, n)
          WHERE NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = format('%I.%I', s, n)::regclass), 'USAGE')`,
        [published.map((t) => t.schema), published.map((t) => t.name)],
      )
    ).rows.map((r) => r.t);
    if (notOwned.length) {
      blockers.push({
        detail: `${sourceInfo.user} does not own ${notOwned.length} table(s) (a publication needs ownership): ${notOwned.slice(0, 5).join(', ')}`,
        fix: `GRANT <owner role> TO ${ident(sourceInfo.user)}; for each owner, or run as the owner`,
      });
    }
  }
  const lacking = published.filter((t) => !t.hasReplicaIdentity).map(displayName);
  if (lacking.length && !spec.logical.replicaIdentityFull) {
    blockers.push({
      detail: `${lacking.length} table(s) without a primary key or replica identity (UPDATE/DELETE could not be replicated): ${lacking.slice(0, 10).join(', ')}`,
      fix: 'add primary keys, or set logical.replicaIdentityFull: true (pgmove sets REPLICA IDENTITY FULL on them for the migration and restores it afterwards)',
    });
  }

  blockers.push(...(await targetSubscribeBlockers(spec, target, targetInfo)));
  // Only worth a connection attempt when the rest is in order: it proves the target reaches the source.
  if (blockers.length === 0) blockers.push(...(await reachabilityProbe(spec, target)));

  return {
    blockers,
    plan: {
      replicaIdentityFull: spec.logical.replicaIdentityFull ? lacking : [],
      unloggedTables: tables.filter((t) => t.unlogged).map(displayName),
      largeObjects,
    },
  };
}

async function targetSubscribeBlockers(
  spec: MigrationSpec,
  target: Client,
  info: ConnectionInfo,
): Promise<LogicalBlocker[]> {
  const { major, allowed } = await subscribeRight(target);
  // Before any statement that carries the source's password: could the target log it?
  const unsafe = await unsafeStatementLogging(target);
  const blockers = unsafe.length ? [statementLoggingBlocker(unsafe, info.user, major)] : [];
  if (allowed) return blockers;
  return [
    ...blockers,
    {
      detail: `${info.user} may not create a subscription on the target (PostgreSQL ${major})`,
      fix:
        major >= 16
          ? `on the target: GRANT pg_create_subscription TO ${ident(info.user)}; GRANT CREATE ON DATABASE ${ident(info.database)} TO ${ident(info.user)};`
          : `on the target: a superuser must create subscriptions before PostgreSQL 16 (on RDS, rds_superuser): use such a role in target.uri`,
    },
  ];
}

/**
 * Connects from the target to the source the way the subscription will, inside a transaction that is
 * rolled back (CREATE SUBSCRIPTION without a slot may run in one): nothing stays behind.
 */
async function reachabilityProbe(spec: MigrationSpec, target: Client): Promise<LogicalBlocker[]> {
  const fromTarget = await sourceAsTargetSeesIt(spec);
  const message = await subscriptionProbeError(target, fromTarget, 'pgmove_probe');
  if (message === undefined) return [];
  return [
    {
      detail: `the target cannot connect to the source at ${fromTarget.host}:${fromTarget.port} as ${fromTarget.user}: ${message}`,
      fix: /password|authentication/i.test(message)
        ? 'check source.password; the target authenticates to the source with it'
        : /certificate|SSL|root cert/i.test(message)
          ? `the TARGET server verifies the source's certificate with its own files: set logical.sourceUriFromTarget with sslrootcert=<the CA file's path on the target server> (or ~/.postgresql/root.crt of the target's server OS user), or an sslmode that fits (require: encrypted, not verified)`
          : `allow the target's address in the source's pg_hba.conf / security group, or set logical.sourceUriFromTarget to the address the target reaches the source at`,
    },
  ];
}
