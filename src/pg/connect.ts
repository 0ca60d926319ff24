/**
 * Connections to the source and target, with errors classified the way Temporal needs them:
 * bad input (wrong password, missing database, unknown host) is non-retryable and says how to fix it;
 * everything else is thrown as is and retried.
 */
import { Client, type ClientConfig } from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import { resolveSecret } from '../secrets';
import { effectiveSslmode, explainTlsError, sslAttempts, worthFallback, type SslOption } from './tls';

export type Side = 'source' | 'target';

export interface EndpointSpec {
  uri: string;
  password?: string;
}

export interface ConnectionInfo {
  host: string;
  port: number;
  database: string;
  user: string;
  password?: string;
  /** libpq sslmode from the URI (?sslmode=require); absent: prefer, as libpq. RDS 15+ requires SSL. See src/pg/tls.ts. */
  sslmode?: string;
  /** libpq sslrootcert from the URI: the CA file on the worker (or `system`) that verify-ca/verify-full check against. */
  sslrootcert?: string;
}

/** Parses a spec URI (which never holds a password) and resolves the password reference. */
export async function connectionInfo(endpoint: EndpointSpec, side: Side): Promise<ConnectionInfo> {
  const url = new URL(endpoint.uri);
  const password = await resolveSecret(endpoint.password, `${side}.password`);
  return {
    host: decodeURIComponent(url.hostname.replace(/^\[|\]$/g, '')),
    port: url.port ? Number(url.port) : 5432,
    database: decodeURIComponent(url.pathname.slice(1)),
    user: url.username ? decodeURIComponent(url.username) : (process.env.USER ?? 'postgres'),
    password,
    sslmode: url.searchParams.get('sslmode') ?? undefined,
    sslrootcert: url.searchParams.get('sslrootcert') ?? undefined,
  };
}

/** Human label for messages: user@host:port/db — never the password. */
export function describeEndpoint(info: ConnectionInfo): string {
  return `${info.user}@${info.host}:${info.port}/${info.database}`;
}

/**
 * TCP keepalives on every connection, both ways: a dead network path (a NAT or load balancer that
 * dropped the flow, a node that vanished) errors the connection within about a minute instead of
 * leaving a COPY waiting for the start-to-close timeout. What the keepalives cannot see (a server
 * that answers but makes no progress) the stall watchdog (src/stall.ts) reports and fails.
 */
export const KEEPALIVE = { idleSeconds: 30, intervalSeconds: 10, count: 3 } as const;

/** Server-side keepalives (the server notices a vanished worker too), as -c options for the startup packet. */
const SERVER_KEEPALIVE_OPTIONS = `-c tcp_keepalives_idle=${KEEPALIVE.idleSeconds} -c tcp_keepalives_interval=${KEEPALIVE.intervalSeconds} -c tcp_keepalives_count=${KEEPALIVE.count}`;

/**
 * search_path of every session pgmove opens: pg_catalog first, then only the session's own temporary
 * schema (searched for relations, never for functions or operators). A role or database setting
 * (`ALTER ROLE … SET search_path = evil, pg_catalog`, which a database owner may set) or an object in
 * `public` (a function of the same name with a closer argument type) can then never put someone
 * else's function or operator under pgmove's SQL — which runs with the privileges the migration role
 * has, SUPERUSER during some privilege elevations. pg_dump and pg_restore empty it themselves; every
 * name pgmove's own SQL uses outside pg_catalog is schema-qualified.
 */
export const PINNED_SEARCH_PATH = 'pg_catalog,pg_temp';
export const SEARCH_PATH_OPTION = `-c search_path=${PINNED_SEARCH_PATH}`;

/** libpq conninfo keywords for client-side keepalives (libpq has no environment variables for them). */
export function keepaliveConninfo(): string {
  return `keepalives=1 keepalives_idle=${KEEPALIVE.idleSeconds} keepalives_interval=${KEEPALIVE.intervalSeconds} keepalives_count=${KEEPALIVE.count}`;
}

/**
 * libpq conninfo for a child tool's --dbname: the database and the keepalives. Host, user and password
 * come from the environment (libpqEnv), so no secret is ever in argv.
 */
export function libpqConninfo(database: string): string {
  return `dbname='${database.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}' ${keepaliveConninfo()}`;
}

/**
 * Environment for libpq child processes (pg_dump, pg_restore, psql): the password goes here, never
 * into argv. `applicationName` lets the stall watchdog find the tool's backends on the server.
 */
export function libpqEnv(info: ConnectionInfo, applicationName = 'pgmove'): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PGHOST: info.host,
    PGPORT: String(info.port),
    PGDATABASE: info.database,
    PGUSER: info.user,
    PGAPPNAME: applicationName,
    PGCONNECT_TIMEOUT: '15',
    PGOPTIONS: `${SEARCH_PATH_OPTION} -c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0 ${SERVER_KEEPALIVE_OPTIONS}`,
  };
  // TLS exactly as the node-postgres connections (src/pg/tls.ts), whatever the worker's own environment says.
  env.PGSSLMODE = effectiveSslmode(info);
  if (info.sslrootcert) env.PGSSLROOTCERT = info.sslrootcert;
  else delete env.PGSSLROOTCERT;
  if (info.password !== undefined) env.PGPASSWORD = info.password;
  else delete env.PGPASSWORD;
  return env;
}

const NON_RETRYABLE_SQLSTATES: Record<string, string> = {
  '28P01': 'authentication failed: check the secret referenced by {side}.password',
  '28000': 'the server rejected the connection (pg_hba.conf or role): allow {user} from this worker in pg_hba.conf, or fix {side}.uri',
  '3D000': 'database does not exist: create it first or fix the database name in {side}.uri',
  '42501': 'permission denied: grant the privilege named in the error to {user}',
};

/** Turns a connection error into a non-retryable failure with the fix, when it is bad input. */
export function classifyConnectError(error: unknown, info: ConnectionInfo, side: Side): Error {
  const err = error as { code?: string; message?: string };
  const where = `${side} ${describeEndpoint(info)}`;
  const template = err.code ? NON_RETRYABLE_SQLSTATES[err.code] : undefined;
  const tls = explainTlsError(error, info, `${side}.uri`);
  if (tls) return ApplicationFailure.nonRetryable(`cannot connect to ${where}: ${tls}`, 'TlsVerification');
  const fill = (text: string) => text.replace(/\{side\}/g, side).replace(/\{user\}/g, info.user);
  if (template) {
    return ApplicationFailure.nonRetryable(`cannot connect to ${where}: ${fill(template)} (${err.message})`, 'BadInput');
  }
  if (err.code === 'ENOTFOUND') {
    return ApplicationFailure.nonRetryable(
      `cannot connect to ${where}: host "${info.host}" does not resolve; fix the host in ${side}.uri`,
      'Unreachable',
    );
  }
  if (err.code === 'ECONNREFUSED' || err.code === 'EHOSTUNREACH' || /timeout/i.test(err.message ?? '')) {
    return ApplicationFailure.nonRetryable(
      `cannot connect to ${where}: ${err.code ?? 'connection timed out'}; check that PostgreSQL listens on ${info.host}:${info.port} and that the worker can reach it (firewall, security group, port), or fix the address in ${side}.uri`,
      'Unreachable',
    );
  }
  return error instanceof Error ? error : new Error(String(error));
}

export interface ConnectOptions {
  /**
   * Classify bad-input errors as non-retryable: pre-flight only. Later phases (and cleanup, which must
   * be able to unfreeze the source after a failover) let Temporal retry.
   */
  classify?: boolean;
  applicationName?: string;
  statementTimeoutMs?: number;
  /** A logical replication connection (walsender), for CREATE_REPLICATION_SLOT with an exported snapshot. */
  replication?: 'database';
}

/** node-postgres configuration of a connection (exported for unit tests); `ssl`: the attempt's TLS (default: the first of sslAttempts). */
export function clientConfig(info: ConnectionInfo, options: ConnectOptions = {}, ssl: SslOption = sslAttempts(info)[0]!): ClientConfig {
  const config: ClientConfig = {
    host: info.host,
    port: info.port,
    database: info.database,
    user: info.user,
    password: info.password,
    application_name: options.applicationName ?? 'pgmove',
    connectionTimeoutMillis: 15_000,
    ssl,
    statement_timeout: options.statementTimeoutMs,
    // Node sets the idle time; interval and count stay the OS's (the server-side ones below are ours).
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE.idleSeconds * 1000,
    // search_path pinned (PINNED_SEARCH_PATH): startup options win over role and database settings.
    // Row security off: a policy must make COPY fail, never filter rows silently (as pg_dump does).
    // Timeouts a role or database may set would cancel long COPYs or the snapshot holder; a lock wait is
    // not left infinite silently either: the stall watchdog reports and ends it (timeouts.stall).
    options: `${SEARCH_PATH_OPTION} -c row_security=off -c statement_timeout=${options.statementTimeoutMs ?? 0} -c idle_in_transaction_session_timeout=0 -c lock_timeout=0 ${SERVER_KEEPALIVE_OPTIONS}`,
  };
  if (options.replication) Object.assign(config, { replication: options.replication }); // not in @types/pg
  return config;
}

/**
 * Opens a connection with TLS as the sslmode says: prefer (and allow) make a second attempt the other
 * way when the first one fails for any reason but an unreachable server (src/pg/tls.ts).
 */
export async function connect(info: ConnectionInfo, side: Side, options: ConnectOptions = {}): Promise<Client> {
  let failure: unknown;
  try {
    const attempts = sslAttempts(info);
    for (const [index, ssl] of attempts.entries()) {
      const client = new Client(clientConfig(info, options, ssl));
      // A dropped connection must surface as a query error, not crash the worker.
      client.on('error', () => undefined);
      try {
        await client.connect();
        return client;
      } catch (error) {
        await client.end().catch(() => undefined);
        failure = error;
        if (index === attempts.length - 1 || !worthFallback(error)) break;
      }
    }
  } catch (error) {
    failure = error; // a TLS configuration pgmove cannot use (TlsConfigError)
  }
  throw options.classify ? classifyConnectError(failure, info, side) : failure;
}

/** Runs fn with a fresh connection and always closes it. */
export async function withClient<T>(
  info: ConnectionInfo,
  side: Side,
  fn: (client: Client) => Promise<T>,
  options?: ConnectOptions,
): Promise<T> {
  const client = await connect(info, side, options);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}
