/**
 * The cluster spec: many databases of one server, their shared roles, one migration. It reads like the
 * old migration Job's db_config.yaml (databases, timeouts, retries, dump options): `defaults` holds any
 * single-database spec field, and each entry of `databases` may override them. Every child spec is
 * validated with the single-database schema, errors naming the database and the field.
 * Pure (no Node built-ins): the workflow bundle imports the types.
 */
import { migrationIdProblem, UNSAFE_IN_ID } from './migration-id';
import { z } from 'zod';
import { parseSpec, secretRef, SpecError, type MigrationSpecInput } from './spec';


/** Server-level endpoint: the URI names the maintenance database (postgres); each child gets its own. */
const serverEndpoint = z
  .object({
    uri: z.string().regex(/^postgres(ql)?:\/\/[^/]+\/[^/?]+/, 'must be a URI like postgresql://admin@host:5432/postgres (the maintenance database)'),
    password: z.string().optional(), // validated in each database's spec (the reference kinds live there)
    /** The privilege hack for the source server, shared by every database (validated per database). */
    privilegeElevation: z.unknown().optional(),
  })
  .strict();

/** Fields of a database entry that belong to the cluster, not to the per-database spec. */
const CLUSTER_ONLY = ['id', 'dryRun', 'searchAttributes'] as const;

const databaseEntry = z
  .object({
    name: z.string().min(1),
    /** Database name on the target (default: the same). */
    targetName: z.string().min(1).optional(),
    source: z.object({ uri: z.string(), password: z.string().optional() }).strict().optional(),
    target: z.object({ uri: z.string(), password: z.string().optional() }).strict().optional(),
  })
  .catchall(z.unknown())
  .refine((entry) => CLUSTER_ONLY.every((key) => !(key in entry)), { message: `${CLUSTER_ONLY.join(', ')} are set once for the whole cluster` });

export const clusterSpecSchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,150}$/, 'must be letters, digits, ".", "_" or "-" (it becomes the workflow id)'),
    source: serverEndpoint,
    target: serverEndpoint,
    /** Names (or entries with overrides), or "all": every database that accepts connections but templates and postgres. */
    databases: z.union([z.literal('all'), z.array(z.union([z.string().min(1), databaseEntry])).min(1, 'list at least one database, or write databases: all')]),
    /** With databases: all, the ones to leave out. */
    exceptDatabases: z.array(z.string().min(1)).default([]),
    /** Single-database spec fields shared by every database (method, jobs, timeouts, retries, dump, cutover, ...). */
    defaults: z.record(z.string(), z.unknown()).default({}),
    /** How many databases migrate at once. */
    concurrency: z.number().int().min(1).max(32).default(2),
    /** allOrNothing: one database failing pre-flight fails the whole migration before anything is written. */
    onPreflightFailure: z.enum(['allOrNothing', 'bestEffort']).default('allOrNothing'),
    roles: z
      .object({
        /** Copy roles and memberships first (RDS-safe); children then keep owners and grants. */
        migrate: z.boolean().default(true),
        /** LOGIN roles get their password from these references; the others are created NOLOGIN and reported. */
        passwords: z.record(z.string(), secretRef).default({}),
        exclude: z.array(z.string().min(1)).default([]),
      })
      .strict()
      .default({ migrate: true, passwords: {}, exclude: [] }),
    cutover: z
      .object({
        /** together: one cutover for every online database (all switch or none); perDatabase: each its own. */
        mode: z.enum(['together', 'perDatabase']).default('together'),
        /** together: run once, when every database is frozen, drained and ready; exit 0 = switched. */
        switchHook: z.array(z.string().min(1)).min(1).optional(),
        hookTimeout: z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/, 'must be a duration like 5m').default('5m'),
        /** together: how long the databases may take to be frozen and drained before the cutover is called off. */
        readyTimeout: z.string().regex(/^\d+(\.\d+)?\s*(ms|s|m|h|d)$/, 'must be a duration like 5m').default('5m'),
      })
      .strict()
      .default({ mode: 'together', hookTimeout: '5m', readyTimeout: '5m' }),
    dryRun: z.boolean().default(false),
    searchAttributes: z.boolean().default(true),
    /** The parent continues as new (between databases) after this many history events. */
    historyEventsPerRun: z.number().int().min(50).max(40_000).default(10_000),
  })
  .strict()
  .refine((spec) => spec.databases === 'all' || spec.exceptDatabases.length === 0, {
    path: ['exceptDatabases'],
    message: 'only with databases: all (otherwise list just the databases to migrate)',
  });

export type ClusterSpecInput = z.input<typeof clusterSpecSchema>;
export type ClusterSpec = z.output<typeof clusterSpecSchema>;

/** A spec is a cluster spec when it lists databases. */
export function isClusterSpec(input: unknown): boolean {
  return typeof input === 'object' && input !== null && 'databases' in input;
}

export function parseClusterSpec(input: unknown): ClusterSpec {
  const result = clusterSpecSchema.safeParse(input);
  if (!result.success) {
    throw new SpecError(result.error.issues.map((issue) => `${issue.path.length ? issue.path.join('.') : '(spec)'}: ${issue.message}`));
  }
  // One switch for all: a database's own switch hook would switch it alone.
  const perDatabaseHooks = [result.data.defaults, ...namedDatabases(result.data)].some((o) => typeof o.cutover === 'object' && o.cutover !== null && 'switchHook' in o.cutover);
  if (result.data.cutover.mode === 'together' && perDatabaseHooks) {
    throw new SpecError(['cutover.mode: together runs one switch hook for every database: move cutover.switchHook from defaults/databases to the top-level cutover.switchHook (or use mode: perDatabase)']);
  }
  // A rollback switches one database back; a cluster cutover switched them together (not supported yet).
  if ([result.data.defaults, ...namedDatabases(result.data)].some((o) => typeof o.cutover === 'object' && o.cutover !== null && 'rollbackWindow' in o.cutover)) {
    throw new SpecError(['cutover.rollbackWindow: a rollback window is for single-database migrations (pgmove start with a database spec); remove it from defaults/databases of the cluster spec']);
  }
  // The shared defaults must make a valid database spec on their own.
  childSpecFor(result.data, { name: 'postgres' });
  for (const entry of result.data.databases === 'all' ? [] : result.data.databases) childSpecFor(result.data, typeof entry === 'string' ? { name: entry } : entry);
  return result.data;
}

export type DatabaseEntry = z.output<typeof databaseEntry>;

/** The databases the spec names explicitly (with databases: all, the source decides). */
export function namedDatabases(spec: ClusterSpec): DatabaseEntry[] {
  return spec.databases === 'all' ? [] : spec.databases.map((entry) => (typeof entry === 'string' ? { name: entry } : entry));
}

export function childWorkflowId(clusterId: string, database: string): string {
  const id = `${clusterId}.${database}`;
  if (!migrationIdProblem(id)) return id;
  // A database name may hold anything: what cannot name files and pg_hba.conf records is replaced, and a
  // short hash of the real name keeps two such databases apart.
  let hash = 0;
  for (const char of database) hash = (Math.imul(hash, 31) + char.codePointAt(0)!) >>> 0;
  return `${clusterId}.${database.replace(UNSAFE_IN_ID, '_').slice(0, 180)}-${hash.toString(16).padStart(8, '0')}`;
}

/** The single-database spec of one child: defaults, then the entry's overrides; validated. */
export function childSpecFor(spec: ClusterSpec, entry: DatabaseEntry): MigrationSpecInput {
  const { name, targetName, source, target, ...overrides } = entry;
  const base: Record<string, unknown> = {
    // With the roles migrated, owners and grants follow the objects.
    dump: { noOwner: !spec.roles.migrate },
  };
  const merged = deepMerge(deepMerge(base, spec.defaults), overrides);
  const child = {
    ...merged,
    id: childWorkflowId(spec.id, name),
    source: source ?? { ...spec.source, uri: withDatabase(spec.source.uri, name) },
    target: target ?? { ...spec.target, uri: withDatabase(spec.target.uri, targetName ?? name) },
    dryRun: spec.dryRun,
    searchAttributes: spec.searchAttributes,
  };
  try {
    parseSpec(child);
  } catch (error) {
    if (error instanceof SpecError) throw new SpecError(error.problems.map((problem) => `databases[${name}] (after defaults): ${problem}`));
    throw error;
  }
  return child as MigrationSpecInput;
}

/** The same server URI with another database (path), keeping user, host, port and parameters. */
export function withDatabase(uri: string, database: string): string {
  const url = new URL(uri);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const current = out[key];
    out[key] = isPlainObject(current) && isPlainObject(value) ? deepMerge(current, value) : value;
  }
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
