/**
 * The migration spec: what an operator writes (YAML or JSON), validated before anything starts.
 * Every error names the field. Passwords are references (env:NAME, file:/path), never values.
 * Pure (no Node built-ins): the workflow bundle may import the types; parsing runs in activities/CLI.
 */
import { z } from 'zod';
import { ApplicationFailure } from '@temporalio/common';
import { durationMs, sizeBytes } from './units';
import { privilegeElevationSchema } from './elevation-spec';
import { awsSchema, dmsSchema, endpointOverrideSchema, rdsProvisionSchema } from './aws/spec';

const SECRET_REF =
  /^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+|k8s-secret:[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-.a-z0-9]*[a-z0-9])?\/[-._a-zA-Z0-9]+|aws-secretsmanager:arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[^#]+(#.+)?)$/;
const ALLOWED_URI_PARAMETERS = new Set(['sslmode', 'sslrootcert', 'connect_timeout', 'application_name']);
/** libpq's sslmode values (src/pg/tls.ts maps them for node-postgres and the child tools). */
export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];
const DURATION = /^\d+(\.\d+)?\s*(ms|s|m|h|d)$/;

/** A password reference (shared with the cluster spec's role passwords). */
export const secretRef = z
  .string()
  .regex(SECRET_REF, 'must be a reference like env:SOURCE_PASSWORD, file:/run/secrets/pw, k8s-secret:namespace/name/key or aws-secretsmanager:<secret ARN>#password, never the password itself');

const postgresUri = z
  .string()
  .refine((value) => /^postgres(ql)?:\/\//.test(value), 'must start with postgresql://')
  .refine((value) => {
    try {
      return new URL(value).password === '';
    } catch {
      return true; // reported by the next check
    }
  }, 'contains a password: remove it from the URI and reference it with the sibling field "password" (env:NAME or file:/path)')
  .refine((value) => {
    try {
      return [...new URL(value).searchParams.keys()].every((key) => ALLOWED_URI_PARAMETERS.has(key));
    } catch {
      return true;
    }
  }, 'only sslmode, sslrootcert, connect_timeout and application_name may be URI parameters (a password never: use the sibling field "password")')
  .refine((value) => {
    try {
      const mode = new URL(value).searchParams.get('sslmode');
      return mode === null || (SSL_MODES as readonly string[]).includes(mode);
    } catch {
      return true;
    }
  }, `sslmode must be one of ${SSL_MODES.join(', ')}`)
  .refine((value) => {
    try {
      const url = new URL(value);
      return url.hostname !== '' && url.pathname.length > 1;
    } catch {
      return false;
    }
  }, 'must name a host and a database, e.g. postgresql://user@host:5432/dbname');

const endpoint = z
  .object({
    uri: postgresUri,
    password: secretRef.optional(),
  })
  .strict();

/** The source endpoint may carry the privilege elevation ("privilege hack", see src/elevation-spec.ts). */
const sourceEndpoint = endpoint.extend({ privilegeElevation: privilegeElevationSchema.optional() }).strict();
/** The target: an existing database (uri), or an RDS instance pgmove creates (provision). */
const target = z
  .object({
    uri: postgresUri.optional(),
    password: secretRef.optional(),
    provision: rdsProvisionSchema.optional(),
    endpointOverride: endpointOverrideSchema.optional(),
  })
  .strict()
  .refine((t) => (t.uri === undefined) !== (t.provision === undefined), {
    message: 'give exactly one of target.uri (an existing, empty database) and target.provision (an RDS instance pgmove creates)',
  })
  .refine((t) => t.provision === undefined || t.password === undefined, {
    path: ['password'],
    message: 'an instance pgmove provisions gets its master password from RDS (kept in Secrets Manager): remove target.password',
  })
  .refine((t) => t.endpointOverride === undefined || t.provision !== undefined, {
    path: ['endpointOverride'],
    message: 'only with target.provision (with target.uri, write the address you want into the URI)',
  });

const duration = z.string().regex(DURATION, 'must be a duration like 30s, 15m, 4h or 1d');

/** Byte sizes: a number of bytes, or "512kB", "64MB", "10GB", "1TB" (PostgreSQL's units, 1024-based). */
const byteSize = z.union([
  z.number().int().min(0),
  z.string().regex(/^\d+(\.\d+)?\s*(B|kB|MB|GB|TB)$/, 'must be a size like 1048576, 512kB, 64MB or 10GB'),
]);

/** A command run by the worker as argv (no shell: write ["sh", "-c", "..."] to get one). */
const hookCommand = z.array(z.string().min(1)).min(1, 'must name a program, e.g. ["kubectl", "apply", "-f", "db-secret.yaml"]');

const qualifiedTable = z
  .string()
  .regex(/^[^.]+\.[^.]+$/, 'must be schema-qualified, e.g. public.orders (quote nothing; names are taken literally)');

export const specSchema = z
  .object({
    id: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/, 'must be letters, digits, ".", "_" or "-" (it becomes the workflow id)')
      .optional(),
    source: sourceEndpoint,
    target,
    method: z.enum(['auto', 'dump', 'logical', 'dms']).default('auto'),
    aws: awsSchema.default({ region: 'us-east-1' }),
    /** Method dms (AWS DMS); offered by pre-flight only when this block is present. */
    dms: dmsSchema.optional(),
    jobs: z.number().int().min(1).max(64).default(4),
    include: z
      .object({ schemas: z.array(z.string().min(1)).default([]), tables: z.array(qualifiedTable).default([]) })
      .strict()
      .default({ schemas: [], tables: [] }),
    exclude: z
      .object({ schemas: z.array(z.string().min(1)).default([]), tables: z.array(qualifiedTable).default([]) })
      .strict()
      .default({ schemas: [], tables: [] }),
    dryRun: z.boolean().default(false),
    /** Upsert the MigrationPhase search attribute; false where it cannot be registered. */
    searchAttributes: z.boolean().default(true),
    freezeSource: z.boolean().default(true),
    dump: z
      .object({
        noOwner: z.boolean().default(true),
        noPrivileges: z.boolean().default(false),
        extraArgs: z
          .array(
            z
              .string()
              .regex(/^--[a-z-]+(=.*)?$/, 'must be a long pg_dump option like --no-comments')
              .refine(
                (arg) => !/^--(dbname|host|port|username|password|no-password|file|format|section|jobs|snapshot|schema|table|exclude-schema|exclude-table)\b/.test(arg),
                'connection, output and filter options are pgmove\'s own: use the spec fields (source.uri, include, exclude)',
              ),
          )
          .default([]),
      })
      .strict()
      .default({ noOwner: true, noPrivileges: false, extraArgs: [] }),
    copy: z
      .object({
        /**
         * Tables larger than this are split into key ranges of about this size (a crash copies at most one
         * again); a table above a lane's even share of the data (and 256 MB) is split to keep the lanes even.
         */
        splitTablesLargerThanMB: z.number().int().min(1).default(1024),
        /** Small tables are grouped into one activity up to this many MB, to keep the history small. */
        batchSmallTablesUpToMB: z.number().int().min(1).default(64),
        /** The offline copy continues as a new workflow run after this many history events (Temporal's limit is 51,200). */
        historyEventsPerRun: z.number().int().min(100).max(40_000).default(10_000),
        /** Offline: build a table's plain indexes and key constraints as soon as its copy ends, while others copy. */
        indexesDuringCopy: z.boolean().default(true),
        /** …for tables up to this size (a table copied whole: see splitTablesLargerThanMB); larger ones' indexes are built by post-data's parallel pg_restore. */
        indexesDuringCopyUpToMB: z.number().int().min(0).default(1024),
      })
      .strict()
      .default({ splitTablesLargerThanMB: 1024, batchSmallTablesUpToMB: 64, historyEventsPerRun: 10_000, indexesDuringCopy: true, indexesDuringCopyUpToMB: 1024 }),
    validate: z
      .object({
        checksums: z.boolean().default(true),
        /**
         * Offline with the source frozen: compare each table right after its copy, while the other lanes copy.
         * auto: when source and target are different hosts (on one machine they share its cores, and the
         * comparisons would only slow the copy down).
         */
        duringCopy: z.union([z.boolean(), z.literal('auto')]).default('auto'),
      })
      .strict()
      .default({ checksums: true, duringCopy: 'auto' }),
    tools: z
      .object({
        /** Directory holding pg_dump/pg_restore; default: the source's major, else the newest available. */
        pgBinDir: z.string().min(1).optional(),
      })
      .strict()
      .default({}),
    timeouts: z
      .object({
        preflight: duration.default('5m'),
        schema: duration.default('1h'),
        copy: duration.default('4h'),
        postData: duration.default('4h'),
        validate: duration.default('2h'),
        heartbeat: duration.default('60s'),
        /**
         * An activity whose progress has not moved for this long while it waits (on a lock, or for bytes
         * from the source) is failed so Temporal retries it; the status names the blocker long before.
         */
        stall: duration.default('5m'),
      })
      .strict()
      .default({ preflight: '5m', schema: '1h', copy: '4h', postData: '4h', validate: '2h', heartbeat: '60s', stall: '5m' }),
    logical: z
      .object({
        /** Tables without a primary key or replica identity get REPLICA IDENTITY FULL on the source (restored afterwards). */
        replicaIdentityFull: z.boolean().default(false),
        /** The source as the target server reaches it, when that differs from source.uri (the worker's view). */
        sourceUriFromTarget: postgresUri.optional(),
        /** The target as the source server reaches it (the rollback window's reverse stream), when that differs from target.uri. */
        targetUriFromSource: postgresUri.optional(),
        /** Retained WAL of the slot above which the status warns, and above which the migration aborts. */
        walWarningBytes: byteSize.default('1GB'),
        walLimitBytes: byteSize.default('20GB'),
        /** How often lag and retained WAL are measured while syncing. */
        statusInterval: duration.default('5s'),
        /** Syncing continues as a new workflow run after this many history events (Temporal's limit is 51,200). */
        historyEventsPerRun: z.number().int().min(100).max(40_000).default(10_000),
        /**
         * auto: PostgreSQL 16+ targets apply large transactions with parallel apply workers while they run
         * (streaming = parallel), and changes travel in binary when every replicated column is of a
         * built-in type; off: streaming = off, text (README, Benchmarks: apply rate).
         */
        applyStreaming: z.enum(['auto', 'off']).default('auto'),
      })
      .strict()
      .default({ replicaIdentityFull: false, walWarningBytes: '1GB', walLimitBytes: '20GB', statusInterval: '5s', historyEventsPerRun: 10_000, applyStreaming: 'auto' }),
    cutover: z
      .object({
        /** readOnly: pgmove fences the source itself; hook: freezeHook/unfreezeHook do it. */
        freeze: z.enum(['readOnly', 'hook']).default('readOnly'),
        freezeHook: hookCommand.optional(),
        unfreezeHook: hookCommand.optional(),
        /** Run once the target holds everything: e.g. point the application's Secret at the target. */
        switchHook: hookCommand.optional(),
        /** A cutover request is refused while the replication lag is above this. */
        maxLagBytes: byteSize.default('16MB'),
        /** How long the frozen source may take to be fully applied on the target before the cutover gives up. */
        drainTimeout: duration.default('60s'),
        hookTimeout: duration.default('5m'),
        /** Cut over without an operator: true = as soon as lag ≤ maxLagBytes; { at } = not before that time. */
        autoCutover: z
          .union([z.boolean(), z.object({ at: z.string().datetime({ offset: true, message: 'must be an ISO time like 2026-11-24T02:00:00Z' }) }).strict()])
          .default(false),
        /** Row counts of every table compared inside the freeze (checksums run after the switch). */
        quickValidation: z.boolean().default(true),
        /**
         * After a successful switch the old source stays fenced (frozen), so a client that still points at
         * it (a pod not yet restarted, a cron job) fails loudly instead of writing where nobody reads:
         * `pgmove unfreeze ID` releases it. `writable` unfreezes it when the migration ends.
         */
        sourceAfterSwitch: z.enum(['frozen', 'writable']).default('frozen'),
        /**
         * Heartbeat timeout of the activities that hold the source frozen (the cutover, the unfreeze): a
         * worker lost during the freeze is noticed after this, and the retry runs on another worker.
         */
        freezeHeartbeat: duration.default('5s'),
        /**
         * A retried cutover (its worker was lost with the source frozen) goes on only while the source has
         * been frozen for less than this; later, it unfreezes the source and returns to syncing.
         */
        resumeFrozenWithin: duration.default('30s'),
        /**
         * Off when absent. After the switch, changes on the new server stream back to the old one for this
         * long (e.g. 24h), so `pgmove rollback ID` can switch back without losing a write; `pgmove finalize
         * ID`, or the end of the window, drops the reverse stream. Logical method, readOnly freeze only.
         */
        rollbackWindow: duration.optional(),
      })
      .strict()
      .default({
        freeze: 'readOnly',
        maxLagBytes: '16MB',
        drainTimeout: '60s',
        hookTimeout: '5m',
        autoCutover: false,
        quickValidation: true,
        sourceAfterSwitch: 'frozen',
        freezeHeartbeat: '5s',
        resumeFrozenWithin: '30s',
      }),
    retries: z
      .object({ maximumAttempts: z.number().int().min(1).max(1000).default(10) })
      .strict()
      .default({ maximumAttempts: 10 }),
  })
  .strict()
  .refine((spec) => spec.include.schemas.length === 0 || spec.include.tables.length === 0, {
    path: ['include'],
    message: 'list either schemas or tables, not both (pg_dump ignores --schema when --table is given)',
  })
  .refine((spec) => spec.cutover.freeze !== 'hook' || (spec.cutover.freezeHook && spec.cutover.unfreezeHook), {
    path: ['cutover', 'freeze'],
    message: 'freeze: hook needs both cutover.freezeHook and cutover.unfreezeHook (the source must always be unfrozen)',
  })
  .refine((spec) => !spec.cutover.rollbackWindow || (spec.method !== 'dump' && spec.method !== 'dms'), {
    path: ['cutover', 'rollbackWindow'],
    message: 'needs the logical method (the reverse stream is native logical replication): set method: logical, or remove rollbackWindow',
  })
  .refine((spec) => !spec.cutover.rollbackWindow || spec.cutover.freeze === 'readOnly', {
    path: ['cutover', 'rollbackWindow'],
    message: "needs cutover.freeze: readOnly (a rollback fences the new server with pgmove's own fence, which a freeze hook cannot stand in for)",
  })
  .refine((spec) => !DURATION.test(spec.timeouts.stall) || durationMs(spec.timeouts.stall) >= 5000, {
    path: ['timeouts', 'stall'],
    message: 'must be at least 5s (the servers are asked about a stall every quarter of it); the default is 5m',
  })
  .refine((spec) => !DURATION.test(spec.cutover.freezeHeartbeat) || durationMs(spec.cutover.freezeHeartbeat) >= 3000, {
    path: ['cutover', 'freezeHeartbeat'],
    message: 'must be at least 3s (the worker sends heartbeats at most every 2 s); the default is 5s',
  })
  .refine((spec) => sizeBytes(spec.logical.walWarningBytes) <= sizeBytes(spec.logical.walLimitBytes), {
    path: ['logical', 'walWarningBytes'],
    message: 'must not be above logical.walLimitBytes',
  })
  .refine((spec) => spec.method !== 'dms' || (spec.dms !== undefined && spec.dms.enabled), {
    path: ['method'],
    message: 'method dms needs a dms: {...} block (replication instance class, LOB limit, ...) — see the README',
  });

/** What the operator writes (defaults optional). */
export type MigrationSpecInput = z.input<typeof specSchema>;
/** A validated spec whose target may still be `provision` (what the CLI checks before starting). */
export type ParsedSpec = z.output<typeof specSchema>;
/** The data path of a target: an existing database, or the provisioned instance once it exists. */
export interface ResolvedTarget {
  uri: string;
  password?: string;
}
/** The validated spec with every default filled in and the target resolved: the workflow's input after pre-flight. */
export type MigrationSpec = Omit<ParsedSpec, 'target'> & { target: ResolvedTarget };

export class SpecError extends Error {
  constructor(public readonly problems: string[]) {
    super(`invalid migration spec:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'SpecError';
  }
}

/** Runs a spec parser; its SpecError is bad input no retry fixes, so it fails the activity for good (BadSpec). */
export function parsedOrBadSpec<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (error instanceof SpecError) throw ApplicationFailure.nonRetryable(error.message, 'BadSpec');
    throw error;
  }
}

/** An activity's spec input, validated: a bad one fails the activity for good (BadSpec). */
export function validateSpec(specInput: unknown): MigrationSpec {
  return parsedOrBadSpec(() => parseSpec(specInput));
}

/** Validates a spec whose target is an existing database (or already provisioned); throws SpecError. */
export function parseSpec(input: unknown): MigrationSpec {
  const spec = parseSpecInput(input);
  if (spec.target.uri === undefined) {
    throw new SpecError(['target.provision: the instance does not exist yet (the workflow\'s provisionTarget phase creates it and resolves the target)']);
  }
  return { ...spec, target: { uri: spec.target.uri, password: spec.target.password } };
}

/** Validates an already-parsed spec object; throws SpecError listing every problem by field path. */
export function parseSpecInput(input: unknown): ParsedSpec {
  const result = specSchema.safeParse(input);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const field = issue.path.length > 0 ? issue.path.join('.') : '(spec)';
    if (issue.code === 'unrecognized_keys') {
      return `${field === '(spec)' ? '' : field + ': '}unknown field(s) ${issue.keys.map((k) => `"${k}"`).join(', ')} — check the spelling against the README's spec reference`;
    }
    return `${field}: ${issue.message}`;
  });
  throw new SpecError(problems);
}

/** Workflow id for a spec: its `id`, else derived from the source and target database names. */
export function migrationIdFor(spec: Pick<ParsedSpec, 'id' | 'source' | 'target'>): string {
  if (spec.id) return spec.id;
  if (spec.target.uri === undefined) {
    const database = new URL(spec.source.uri).pathname.slice(1);
    return `pgmove-${spec.target.provision?.identifier ?? `rds-${database}`}`.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 200);
  }
  const targetUri = spec.target.uri;
  const part = (uri: string) => {
    const url = new URL(uri);
    return `${url.hostname}-${url.pathname.slice(1)}`.replace(/[^A-Za-z0-9._-]/g, '_');
  };
  return `pgmove-${part(spec.source.uri)}-to-${part(targetUri)}`.slice(0, 200);
}

export { durationMs, sizeBytes } from './units';
