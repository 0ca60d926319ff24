/**
 * Pre-flight for cutover.rollbackWindow (used by `preflight`): at the start, not at the switch, say
 * whether a reverse stream will be possible — the target can publish and keep a slot, pgmove can fence
 * it, the source can subscribe, keep the target's password out of its log and reach the target — and
 * why not. Each failed check says what fixes it.
 */
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { PreflightCheck } from '../src/model';
import type { TableInfo } from '../src/pg/catalog';
import type { ConnectionInfo } from '../src/pg/connect';
import { connectionInfo } from '../src/pg/connect';
import { displayName, ident } from '../src/pg/sql';
import { replicationCapacityBlockers, subscribeRight, subscriptionProbeError } from '../src/pg/replication-preflight';
import { statementLoggingBlocker, unsafeStatementLogging } from '../src/pg/statement-privacy';

const NAME = 'rollback window';

export interface RollbackWindowContext {
  spec: MigrationSpec;
  /** The method pre-flight chose: the reverse stream is native logical replication. */
  method: string;
  source: Client;
  target: Client;
  sourceInfo: ConnectionInfo;
  targetInfo: ConnectionInfo;
  tables: TableInfo[];
  largeObjects: number;
}

export async function rollbackWindowChecks(ctx: RollbackWindowContext): Promise<PreflightCheck[]> {
  const { spec } = ctx;
  if (!spec.cutover.rollbackWindow) return [];
  const fail = (detail: string, fix: string): PreflightCheck => ({ name: NAME, ok: false, detail, fix });
  if (ctx.method !== 'logical') {
    return [
      fail(
        `cutover.rollbackWindow needs the logical method; this migration would use ${ctx.method}`,
        'fix the logical replication blockers listed above (then method: logical), or remove cutover.rollbackWindow',
      ),
    ];
  }
  const problems: PreflightCheck[] = [];
  const unlogged = ctx.tables.filter((t) => t.unlogged).map(displayName);
  if (unlogged.length || ctx.largeObjects) {
    problems.push(
      fail(
        `the reverse stream cannot carry ${[unlogged.length && `${unlogged.length} unlogged table(s) (${unlogged.slice(0, 5).join(', ')})`, ctx.largeObjects && `${ctx.largeObjects} large object(s)`].filter(Boolean).join(' or ')} back to the source: a rollback would lose their changes`,
        'ALTER TABLE ... SET LOGGED / move large objects into bytea columns, exclude them, or remove cutover.rollbackWindow',
      ),
    );
  }
  problems.push(...(await targetPublisherProblems(ctx.target, ctx.targetInfo)));
  problems.push(...(await sourceSubscriberProblems(ctx.source, ctx.sourceInfo)));
  // Only worth a connection attempt when the rest is in order: it proves the source reaches the target.
  if (problems.length === 0) problems.push(...(await reverseReachabilityProbe(spec, ctx.source)));
  return problems.length
    ? problems
    : [
        {
          name: NAME,
          ok: true,
          detail: `for ${spec.cutover.rollbackWindow} after the switch the target's changes stream back to the source; \`pgmove rollback\` switches back, \`pgmove finalize\` ends the window`,
        },
      ];
}

/** The target publishes and keeps a slot for the window, and pgmove can fence it for a rollback. */
async function targetPublisherProblems(target: Client, info: ConnectionInfo): Promise<PreflightCheck[]> {
  const row = (
    await target.query<{ replication: boolean; owner: boolean; signal: boolean }>(
      `SELECT r.rolreplication OR r.rolsuper OR (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication') AND pg_has_role('rds_replication', 'MEMBER')) AS replication,
              r.rolsuper OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE') AS owner,
              r.rolsuper OR pg_has_role('pg_signal_backend', 'USAGE') AS signal
         FROM pg_roles r WHERE r.rolname = current_user`,
    )
  ).rows[0]!;
  const problems: PreflightCheck[] = [];
  const fail = (detail: string, fix: string) =>
    problems.push({ name: NAME, ok: false, detail: `on the target: ${detail}`, fix });
  for (const blocker of await replicationCapacityBlockers(target, 'target'))
    fail(blocker.detail, blocker.fix);
  if (!row.replication)
    fail(
      `${info.user} may not create a replication slot`,
      `on the target: ALTER ROLE ${ident(info.user)} REPLICATION; (on RDS: GRANT rds_replication TO ${ident(info.user)};)`,
    );
  if (!row.owner || !row.signal) {
    fail(
      `${info.user} cannot fence the target for a rollback (${[!row.owner && 'it does not own the database', !row.signal && 'it cannot end other sessions'].filter(Boolean).join(' and ')})`,
      `on the target: ${row.owner ? '' : `ALTER DATABASE ${ident(info.database)} OWNER TO ${ident(info.user)}; `}${row.signal ? '' : `GRANT pg_signal_backend TO ${ident(info.user)};`}`.trim(),
    );
  }
  return problems;
}

/** The source can own the reverse subscription and keep its connection string out of its own log. */
async function sourceSubscriberProblems(source: Client, info: ConnectionInfo): Promise<PreflightCheck[]> {
  const { major, allowed } = await subscribeRight(source);
  const problems: PreflightCheck[] = [];
  const unsafe = await unsafeStatementLogging(source);
  if (unsafe.length) {
    const blocker = statementLoggingBlocker(unsafe, info.user, major);
    problems.push({
      name: NAME,
      ok: false,
      detail: `on the source, for the reverse subscription (it carries the target's password): ${blocker.detail}`,
      fix: blocker.fix,
    });
  }
  if (!allowed) {
    problems.push({
      name: NAME,
      ok: false,
      detail: `${info.user} may not create the reverse subscription on the source (PostgreSQL ${major})`,
      fix:
        major >= 16
          ? `on the source: GRANT pg_create_subscription TO ${ident(info.user)}; GRANT CREATE ON DATABASE ${ident(info.database)} TO ${ident(info.user)};`
          : 'before PostgreSQL 16 only a superuser creates subscriptions: use one in source.uri, or let source.privilegeElevation grant SUPERUSER for the migration',
    });
  }
  return problems;
}

/** Connects from the source to the target the way the reverse subscription will, in a transaction rolled back: nothing stays. */
async function reverseReachabilityProbe(spec: MigrationSpec, source: Client): Promise<PreflightCheck[]> {
  const fromSource = await connectionInfo(
    { uri: spec.logical.targetUriFromSource ?? spec.target.uri, password: spec.target.password },
    'target',
  );
  if (!spec.logical.targetUriFromSource) delete fromSource.sslrootcert;
  const message = await subscriptionProbeError(source, fromSource, 'pgmove_rb_probe');
  if (message === undefined) return [];
  return [
    {
      name: NAME,
      ok: false,
      detail: `the source cannot connect to the target at ${fromSource.host}:${fromSource.port} as ${fromSource.user} for the reverse stream: ${message}`,
      fix: /password|authentication/i.test(message)
        ? 'check target.password; the source authenticates to the target with it'
        : "allow the source's address in the target's pg_hba.conf / security group, or set logical.targetUriFromSource to the address the source reaches the target at",
    },
  ];
}
