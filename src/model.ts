/**
 * Data that crosses the workflow/activity boundary. Types only (no runtime code), so workflow code can
 * import them. Nothing here ever holds a secret: endpoints carry password references.
 */
import type { TableName } from './pg/sql';

export type Phase =
  | 'starting'
  | 'preflight'
  | 'freeze'
  | 'preData'
  | 'copy'
  | 'postData'
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
  method: 'dump';
  methodReason: string;
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

export interface CopyPlan {
  units: CopyUnit[];
  /** Whole tables in scope, for per-table progress (name → total bytes, number of units). */
  tables: Record<string, { bytes: number; units: number }>;
  largeObjects: number;
}

/** What the freeze changed on the source, so it can be undone exactly (also after a crash). */
export interface FreezeState {
  database: string;
  /** Roles (or PUBLIC) whose CONNECT privilege was revoked. */
  revokedConnectFrom: string[];
  /** CONNECT granted to the migration role itself (it came through a revoked grant); revoked on unfreeze. */
  grantedConnectToSelf?: boolean;
  /** The database's own default_transaction_read_only before the freeze, or null if unset. */
  previousReadOnlySetting: string | null;
  terminatedSessions: number;
  /** Superusers other than us can still connect: reported, not blocked. */
  unfencedSuperusers: string[];
}

export interface TableValidation {
  table: string;
  sourceRows: number;
  targetRows: number;
  sourceChecksum?: string;
  targetChecksum?: string;
  ok: boolean;
}

export interface ValidationReport {
  ok: boolean;
  tables: TableValidation[];
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
  /** What cleanup still has to undo (e.g. "unfreeze source"). */
  cleanupOwed: string[];
}
