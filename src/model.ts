/**
 * Data that crosses the workflow/activity boundary. Types only (no runtime code), so workflow code can
 * import them. Nothing here ever holds a secret: endpoints carry password references.
 */
import type { TableName } from './pg/sql';
import type { ElevationRecord } from './elevation-spec';
import type { AwsResource, DmsPlan, DmsProgress, ProvisionedTarget } from './aws/model';

export type Phase =
  | 'starting'
  | 'provisionTarget'
  | 'elevatePrivileges'
  | 'preflight'
  | 'freeze'
  | 'preData'
  | 'copy'
  | 'postData'
  | 'syncing'
  | 'cutover'
  | 'rollbackWindow'
  | 'rollback'
  | 'sequences'
  | 'validate'
  | 'cleanup'
  | 'completed'
  | 'failed'
  | 'aborted'
  | 'dryRunCompleted';

export interface PreflightCheck {
  name: string;
  ok: boolean;
  detail: string;
  /** The exact statement or action that fixes a failed check. */
  fix?: string;
}

export interface PreflightReport {
  sourceVersion: string;
  targetVersion: string;
  clientTools: { binDir: string; version: string };
  method: 'dump' | 'logical' | 'dms';
  methodReason: string;
  /** Why the logical method cannot run here (empty when it can); shown when auto falls back to dump. */
  logicalBlockers: string[];
  /** Logical method only: what replication cannot carry and how pgmove handles it. */
  logical?: LogicalPlan;
  /** Method dms only: what the task carries and the LOB sizes measured on the source. */
  dms?: DmsPlan;
  tables: number;
  sequences: number;
  largeObjects: number;
  totalBytes: number;
  estimatedSeconds: number;
  checks: PreflightCheck[];
  notes: string[];
  /** Extensions installed on the target before the migration (an abort keeps them). */
  targetExtensions: string[];
  /** What the migration would do, for dry runs. */
  plan: string[];
}

export interface LogicalPlan {
  /** Tables without a primary key or replica identity that get REPLICA IDENTITY FULL on the source. */
  replicaIdentityFull: string[];
  /** Unlogged tables (not replicated): copied inside the cutover freeze. */
  unloggedTables: string[];
  /** Large objects (not replicated): copied inside the cutover freeze. */
  largeObjects: number;
}

/** Names of the replication objects of one migration (derived from its id, so a retry finds them). */
export interface ReplicationNames {
  publication: string;
  slot: string;
  subscription: string;
}

/** One measurement of the logical stream while syncing. */
export interface ReplicationState {
  /** WAL the source has written that the target has not yet confirmed (bytes). */
  lagBytes: number;
  /** The walsender's replay lag as the source sees it (seconds; 0 when idle and caught up). */
  lagSeconds: number;
  /** WAL the slot keeps on the source's disk (bytes). */
  retainedWalBytes: number;
  /** The subscription's apply worker is connected and streaming. */
  streaming: boolean;
  applyErrors: number;
  /** Tables created on the source since the start, which logical replication does not carry. */
  newTables: string[];
  measuredAt: string;
  warning?: string;
}

export interface CutoverRequest {
  approvedBy?: string;
  reason?: string;
  /** Set by a migrateCluster parent: prepare, vote, and switch only when the parent decides so. */
  coordinated?: { parentId: string; attempt: number };
}

export interface CutoverAnswer {
  accepted: boolean;
  reason: string;
}

export interface CutoverAttempt {
  requestedBy: string;
  startedAt: string;
  outcome: 'running' | 'switched' | 'failed';
  error?: string;
  /** Milliseconds from the freeze until the target was ready for writes, and until the switch hook had run. */
  freezeToReadyMs?: number;
  freezeToSwitchedMs?: number;
  /** Where the freeze window went (step → ms). */
  steps?: Record<string, number>;
  /** What the switch hook printed (last 4 kB, passwords redacted). */
  switchHookOutput?: string;
}

/**
 * The rollback window after a switch (cutover.rollbackWindow): the new server's changes stream back to
 * the old one until `pgmove rollback` switches back, `pgmove finalize` or the window's end drops the
 * reverse stream, or its WAL guardrail closes it.
 */
export interface RollbackState {
  openedAt: string;
  /** The window ends (finalized) at this time. */
  until: string;
  /** When the switch the window follows happened (a continued run restores the workflow's switch mark from it). */
  switchedAt: string;
  state: 'open' | 'rollingBack' | 'rolledBack' | 'finalized' | 'closed';
  /** Why the window ended without a rollback (finalize, its end, the WAL guardrail). */
  endedBecause?: string;
  /** The reverse stream: lag of the old server behind the new one, WAL the reverse slot holds on the new server. */
  reverse?: ReplicationState;
  attempts?: CutoverAttempt[];
}

/** One unit of copy work: a whole table, a key range of a large table, or a batch of small tables. */
export interface CopyUnit {
  id: string;
  tables: CopyTable[];
  /** Set for one key range of a split table: rows with lo <= key < hi (null bound = open). */
  range?: { key: string; lo: string | null; hi: string | null };
  bytes: number;
}

export interface CopyTable extends TableName {
  columns: string[];
  binary: boolean;
  bytes: number;
}

export interface CopyUnitResult {
  unitId: string;
  tables: { table: string; rows: number; bytes: number }[];
  seconds: number;
}

/** Logical method: the units copied at one replication slot's snapshot, which stream from that slot. */
export interface CopyGeneration {
  generation: number;
  slot: string;
  /** The units' ids (at most 200 when the plan is stored on the target; `unitCount` then has them all). */
  units: string[];
  unitCount?: number;
  tables: number;
  rows: number;
  bytes: number;
}

export interface CopyPlan {
  units: CopyUnit[];
  /** Whole tables in scope, for per-table progress (name → total bytes, number of units). */
  tables: Record<string, { bytes: number; units: number }>;
  largeObjects: number;
}

/** What the workflow keeps of a copy plan stored on the target (src/pg/copy-plan-store.ts): counts, not tables. */
export interface CopyPlanSummary {
  units: number;
  tables: number;
  /** Tables without a unit (nothing to copy), done from the start. */
  emptyTables: number;
  totalBytes: number;
  largeObjects: number;
  /** The largest tables (bytes, units), whose progress the status shows one by one. */
  largestTables: Record<string, { bytes: number; units: number }>;
}

/** The logical method's copy of a plan stored on the target, as the workflow records it: totals only. */
export interface StoredSlotCopyResult {
  units: number;
  tables: number;
  rows: number;
  bytes: number;
  /** Rows and bytes of the tables the status tracks one by one (CopyPlanSummary.largestTables). */
  largestTables: Record<string, { rows: number; bytes: number; unitsDone: number }>;
  slowest: { unit: string; seconds: number; tables: number; rows: number }[];
  generations?: CopyGeneration[];
}

/** A copied unit of a stored plan, as the workflow records it: totals, and the table of a one-table unit. */
export interface PlannedUnitResult {
  unitId: string;
  index: number;
  seconds: number;
  tables: number;
  /** Tables this unit completed (see copy-plan-store.markUnitDone). */
  tablesDone: number;
  rows: number;
  bytes: number;
  /** One-table units (a large table, or a key range of one): its name and counts. */
  table?: { table: string; rows: number; bytes: number };
  /** Indexes and key constraints built right after the copy (src/pg/table-indexes.ts); absent from older workers. */
  indexesBuilt?: number;
  /** Tables compared on both servers right after their copy (validation compares only the others). */
  tablesCompared?: number;
}

/** What the freeze changed on the source, so it can be undone exactly (also after a crash). */
export interface FreezeState {
  database: string;
  /** The migration that froze it: only that migration (or `pgmove unfreeze` of it) releases the fence. */
  migrationId?: string;
  /** Roles (or PUBLIC) whose CONNECT privilege was revoked. */
  revokedConnectFrom: string[];
  /** CONNECT granted to the migration role itself (it came through a revoked grant); revoked on unfreeze. */
  grantedConnectToSelf?: boolean;
  /** The database's own default_transaction_read_only before the freeze, or null if unset. */
  previousReadOnlySetting: string | null;
  terminatedSessions: number;
  /** Superusers other than us can still connect: reported, not blocked. */
  unfencedSuperusers: string[];
  /** The database's comment before the freeze (the freeze record is kept there meanwhile). */
  previousComment?: string | null;
  /** Random, per freeze: names this freeze's schema archive in a worker's work dir (absent from older records). */
  token?: string;
  /** Set by the cleanup of a migration that ended and kept its fence on purpose (pgmove recover leaves it to pgmove unfreeze). */
  keptAtEnd?: string;
}

export interface TableValidation {
  table: string;
  sourceRows: number;
  targetRows: number;
  sourceChecksum?: string;
  targetChecksum?: string;
  ok: boolean;
  /** Time the comparison of this table took. */
  seconds?: number;
}

export interface ValidationReport {
  ok: boolean;
  /** Every table up to 100; above, the differing ones and the 10 slowest (the rest counted in tablesOmitted). */
  tables: TableValidation[];
  tablesChecked?: number;
  rowsChecked?: number;
  tablesOmitted?: number;
  /** Of tablesChecked, compared during the copy, right after each table's copy (offline, source frozen). */
  tablesComparedDuringCopy?: number;
  sequences: { sequence: string; source: string; target: string; ok: boolean }[];
  schemaDifferences: string[];
  largeObjects: { source: number; target: number; ok: boolean };
  summary: string;
}

export interface PhaseTiming {
  startedAt: string;
  endedAt?: string;
  seconds?: number;
}

export interface TableProgress {
  rows: number;
  bytes: number;
  totalBytes: number;
  unitsDone: number;
  units: number;
  done: boolean;
}

/**
 * What cleanup owes, listed in the status (`cleanupOwed`) until it is done. The values are the
 * sentences the status has always shown and stores: a run continued as new from an older worker, and
 * every recorded history, carry them as they are — so they never change; a new duty takes a new key.
 */
export const OWED = {
  unfreeze: 'unfreeze the source',
  replication: 'drop the subscription, replication slot and publication',
  target: 'reset the target if the migration does not complete',
  aws: 'delete the AWS resources this migration created',
  dms: 'delete the DMS task, endpoints, replication instance and subnet group',
  elevation: 'revert the privilege elevation on the source',
  reverse: "drop the rollback window's reverse stream (subscription on the source, slot and publication on the target)",
} as const;

export type CleanupOwed = (typeof OWED)[keyof typeof OWED];

export interface CleanupFailure {
  step: CleanupOwed;
  error: string;
  byHand: string;
}

export interface MigrationStatus {
  migrationId: string;
  phase: Phase;
  method: string;
  methodReason: string;
  dryRun: boolean;
  tables: Record<string, TableProgress>;
  totals: { tables: number; tablesDone: number; rows: number; bytes: number; totalBytes: number };
  timings: Partial<Record<Phase, PhaseTiming>>;
  preflight?: PreflightReport;
  validation?: ValidationReport;
  errors: string[];
  abortReason?: string;
  /** Offline copy of a plan stored on the target: units done, workflow runs, and the slowest units. */
  copyUnits?: {
    units: number;
    done: number;
    runs: number;
    slowest: { unit: string; seconds: number; tables: number; rows: number }[];
    /** Indexes and key constraints built as their tables finished copying (offline). */
    indexesBuilt?: number;
  };
  /** What cleanup still has to undo (e.g. `OWED.unfreeze`). */
  cleanupOwed: CleanupOwed[];
  /** Compensations that failed (each ran on its own), with the command that finishes each by hand. */
  cleanupFailed?: CleanupFailure[];
  /** Logical method: the copy's generations; all but the last were kept from attempts a crash ended. */
  copyGenerations?: CopyGeneration[];
  /** Logical method: the stream while syncing. */
  replication?: ReplicationState;
  cutovers?: CutoverAttempt[];
  /** cutover.rollbackWindow: the stream back to the old server after the switch, and how the window ended. */
  rollback?: RollbackState;
  warnings?: string[];
  /** What the privilege elevation changed on the source (and whether cleanup has reverted it). */
  privilegeElevation?: ElevationRecord;
  /** target.provision: the instance and what was created for it (no secret: a reference to it). */
  provisioned?: ProvisionedTarget;
  /** Method dms: the resources pgmove created and the task's last describe. */
  dms?: { resources: AwsResource[]; task?: DmsProgress };
  /** AWS resources deleted by cleanup (or kept, with the reason). */
  awsCleanup?: { deleted: AwsResource[]; kept: string[] };
}

/** One database of a cluster migration, as the parent's status table shows it. */
export interface DatabaseRow {
  database: string;
  targetDatabase: string;
  workflowId: string;
  method: string;
  phase: Phase | 'pending' | 'skipped';
  status: 'pending' | 'running' | 'completed' | 'failed' | 'aborted' | 'skipped';
  error?: string;
  /** Online databases while syncing: why a cutover would be refused now ('' = ready; absent = not measured yet). */
  cutoverBlocker?: string;
  startedAt?: string;
  endedAt?: string;
  seconds?: number;
}

/** What the globals phase did on the target (no secrets). */
export interface GlobalsReport {
  rolesCreated: string[];
  rolesExisting: string[];
  /** LOGIN roles without a password reference: created NOLOGIN, the operator must finish them. */
  rolesNeedingPassword: string[];
  /** Attributes RDS (and pgmove) will not copy: role → attributes left out. */
  attributesDropped: Record<string, string[]>;
  membershipsGranted: number;
  databasesCreated: string[];
  databasesExisting: string[];
  warnings: string[];
}

export type ClusterPhase = 'starting' | 'preflight' | 'globals' | 'databases' | 'cutover' | 'cleanup' | 'completed' | 'failed' | 'aborted' | 'dryRunCompleted';

export interface ClusterStatus {
  kind: 'cluster';
  migrationId: string;
  phase: ClusterPhase;
  dryRun: boolean;
  concurrency: number;
  databases: DatabaseRow[];
  globals?: GlobalsReport;
  /** Cluster-wide cutover attempts (cutoverMode: together). */
  cutovers?: CutoverAttempt[];
  timings: Partial<Record<ClusterPhase, PhaseTiming>>;
  errors: string[];
  warnings: string[];
  abortReason?: string;
  runs: number;
}
