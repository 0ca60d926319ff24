/**
 * Pre-flight checks of what the migration covers, before anything is written: the target is another
 * database than the source (asked of the servers, not read from the URIs), it is empty, and every
 * include/exclude filter of the spec names something on the source.
 */
import type { Client } from 'pg';
import { resettableObjects } from '../src/pg/target-objects';
import { ApplicationFailure } from '@temporalio/common';
import type { MigrationSpec } from '../src/spec';
import { describeEndpoint, type ConnectionInfo } from '../src/pg/connect';
import { ident } from '../src/pg/sql';
import type { PreflightCheck, PreflightReport } from '../src/model';

/** Ends pre-flight for good, naming each failed check with its fix. */
export function preflightFailure(failed: PreflightCheck[], report?: PreflightReport): ApplicationFailure {
  const lines = failed.map((c) => `  - ${c.name}: ${c.detail}${c.fix ? `\n      fix: ${c.fix}` : ''}`);
  return ApplicationFailure.create({
    message: `pre-flight failed, nothing was written:\n${lines.join('\n')}`,
    type: 'PreflightFailed',
    nonRetryable: true,
    details: report ? [report] : [],
  });
}

/** What a server says about itself and the database a session is connected to. */
export interface DatabaseIdentity {
  /** pg_control_system().system_identifier: set by initdb, kept by physical copies (replicas, clones). */
  systemIdentifier: string | null;
  /** pg_postmaster_start_time() as epoch seconds: tells a running server from a clone of it. */
  startedAt: string;
  databaseOid: string;
  database: string;
}

export async function databaseIdentity(client: Client): Promise<DatabaseIdentity> {
  const row = (
    await client.query<{ started_at: string; oid: string; datname: string }>(
      `SELECT extract(epoch FROM pg_postmaster_start_time())::text AS started_at, d.oid::text AS oid, d.datname
         FROM pg_database d WHERE d.datname = current_database()`,
    )
  ).rows[0]!;
  // A managed service may revoke pg_control_system(): the start time and the database still decide.
  const systemIdentifier = await client
    .query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()')
    .then((r) => r.rows[0]?.id ?? null)
    .catch(() => null);
  return { systemIdentifier, startedAt: row.started_at, databaseOid: row.oid, database: row.datname };
}

/**
 * Source and target must not be one database: 127.0.0.1, localhost, a DNS name, a pooler or a port
 * forward may all reach the same server. The same server is the same system identifier and the same
 * postmaster start (to the microsecond); the same database then is the same database OID.
 */
export async function sameDatabaseCheck(
  source: Client,
  target: Client,
  sourceInfo: ConnectionInfo,
  targetInfo: ConnectionInfo,
): Promise<{ check: PreflightCheck; sameServer: boolean }> {
  const [s, t] = await Promise.all([databaseIdentity(source), databaseIdentity(target)]);
  const sameServer = s.startedAt === t.startedAt && (s.systemIdentifier === null || t.systemIdentifier === null || s.systemIdentifier === t.systemIdentifier);
  const same = sameServer && s.databaseOid === t.databaseOid;
  const server = `system identifier ${s.systemIdentifier ?? 'unreadable'}, running since ${new Date(Number(s.startedAt) * 1000).toISOString()}`;
  return {
    sameServer,
    check: {
      name: 'source and target are different databases',
      ok: !same,
      detail: same
        ? `source ${describeEndpoint(sourceInfo)} and target ${describeEndpoint(targetInfo)} are the same database: both reach one server (${server}) and its database "${s.database}" (oid ${s.databaseOid}); a migration onto itself would reset the source`
        : sameServer
          ? `one server (${server}), two databases: "${s.database}" → "${t.database}"`
          : 'different servers',
      fix: same
        ? `point target.uri at another database — a new, empty one (CREATE DATABASE ${ident(`${targetInfo.database}_new`)}; on the target server) or one on the new server; host names are not compared, the servers are`
        : undefined,
    },
  };
}

/** Relation kinds a table filter may name (pg_dump --table takes them all; partitioned parents name their leaves). */
const FILTERABLE_RELKINDS = `('r', 'p', 'v', 'm', 'S', 'f')`;

/**
 * Every include/exclude entry must name a schema or relation on the source: a misspelt include would
 * silently migrate nothing (or less), a misspelt exclude would migrate what was meant to stay behind.
 * Names are exact (case-sensitive, unquoted); a near miss (other case, other schema) is suggested.
 */
export async function filterCheck(source: Client, spec: MigrationSpec): Promise<PreflightCheck> {
  const entries = [
    ...spec.include.schemas.map((s) => ({ field: 'include.schemas', schema: s, name: null as string | null, text: s })),
    ...spec.exclude.schemas.map((s) => ({ field: 'exclude.schemas', schema: s, name: null as string | null, text: s })),
    ...spec.include.tables.map((t) => ({ field: 'include.tables', ...splitTable(t), text: t })),
    ...spec.exclude.tables.map((t) => ({ field: 'exclude.tables', ...splitTable(t), text: t })),
  ];
  const unmatched =
    entries.length === 0
      ? []
      : (
          await source.query<{ i: number; similar: string | null }>(
            `SELECT f.i::int AS i,
                    CASE WHEN f.name IS NULL THEN
                      (SELECT n.nspname FROM pg_namespace n WHERE lower(n.nspname) = lower(f.schema) ORDER BY 1 LIMIT 1)
                    ELSE
                      (SELECT format('%s.%s', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.relkind IN ${FILTERABLE_RELKINDS}
                          AND ((lower(n.nspname) = lower(f.schema) AND lower(c.relname) = lower(f.name)) OR c.relname = f.name)
                        ORDER BY lower(n.nspname) = lower(f.schema) DESC, 1 LIMIT 1)
                    END AS similar
               FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS f(schema, name, i)
              WHERE CASE WHEN f.name IS NULL
                      THEN NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = f.schema)
                      ELSE NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                        WHERE n.nspname = f.schema AND c.relname = f.name AND c.relkind IN ${FILTERABLE_RELKINDS})
                    END
              ORDER BY 1`,
            [entries.map((e) => e.schema), entries.map((e) => e.name)],
          )
        ).rows.map((r) => ({ ...entries[r.i - 1]!, similar: r.similar }));
  return {
    name: 'include/exclude filters',
    ok: unmatched.length === 0,
    detail:
      unmatched.length === 0
        ? entries.length === 0
          ? 'no filters: every schema and table'
          : `each of the ${entries.length} filter(s) names a ${entries.some((e) => e.name) ? 'schema or table' : 'schema'} on the source`
        : unmatched
            .map((u) => `${u.field} "${u.text}" matches no ${u.name === null ? 'schema' : 'table'} on the source${u.similar ? ` (did you mean "${u.similar}"?)` : ''}`)
            .join('; '),
    fix: unmatched.length
      ? 'correct or remove each of these entries: names are exact and case-sensitive, tables as schema.table without quotes (in a cluster spec a filter under defaults applies to every database: put it in the entry of the database that has it)'
      : undefined,
  };
}

function splitTable(text: string): { schema: string; name: string } {
  const dot = text.indexOf('.');
  return { schema: text.slice(0, dot), name: text.slice(dot + 1) };
}

/** Never merge into existing data: the target database must hold no user objects. */
export async function targetEmptyCheck(target: Client, info: ConnectionInfo): Promise<PreflightCheck> {
  // Exactly what a reset after an unfinished run would drop (the extensions there now are kept by it).
  const extensions = (await target.query<{ extname: string }>('SELECT extname FROM pg_catalog.pg_extension')).rows.map((e) => e.extname);
  const objects = (await resettableObjects(target, extensions)).map((o) => o.label);
  return {
    name: 'target is empty',
    ok: objects.length === 0,
    detail: objects.length === 0 ? `${describeEndpoint(info)} holds no user objects` : `${describeEndpoint(info)} already holds ${objects.slice(0, 5).join(', ')}${objects.length > 5 ? ', …' : ''}`,
    fix: objects.length === 0 ? undefined : `pgmove never merges into existing data: point target.uri at a new database (CREATE DATABASE ${ident(info.database + '_new')};) or drop these objects`,
  };
}
