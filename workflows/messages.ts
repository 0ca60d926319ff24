/**
 * The workflows' messages, defined once: clients (CLI, tests) import these definitions; the
 * `temporal` CLI uses the same names (signals `abort` and `cutover`, updates `requestCutover`, `requestRollback` and `finalize`, query `status`).
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import { defineSearchAttributeKey } from '@temporalio/common';
import type { ClusterStatus, CutoverAnswer, CutoverRequest, MigrationStatus, Phase } from '../src/model';

export type { CutoverAnswer, CutoverRequest };

export interface AbortInput {
  reason?: string;
}

export const abortSignal = defineSignal<[AbortInput?]>('abort');
export const statusQuery = defineQuery<MigrationStatus>('status');

/** Logical method: cut over now (ignored, with a warning in the status, unless the migration is syncing). */
export const cutoverSignal = defineSignal<[CutoverRequest?]>('cutover');

/**
 * Logical method: ask for the cutover and get an answer. Rejected (the update fails with the reason)
 * when not syncing yet, when the lag is above cutover.maxLagBytes, or when a cutover is already running.
 */
export const requestCutoverUpdate = defineUpdate<CutoverAnswer, [CutoverRequest]>('requestCutover');

/** cutover.rollbackWindow: who asks to switch back (or to end the window), recorded in the status. */
export interface RollbackRequest {
  approvedBy?: string;
  reason?: string;
}

/**
 * Inside the rollback window: switch back to the old server (freeze the new one, drain the reverse
 * stream, sequences, switch hook with PGMOVE_DIRECTION=rollback). Rejected with the reason when the
 * window is not open, the old server lags above cutover.maxLagBytes, or the reverse stream is not streaming.
 */
export const requestRollbackUpdate = defineUpdate<CutoverAnswer, [RollbackRequest]>('requestRollback');

/** Ends the rollback window now: the reverse stream is dropped on both servers and the migration completes. */
export const finalizeUpdate = defineUpdate<CutoverAnswer, [RollbackRequest]>('finalize');

/** Registered by the dev stack (`--search-attribute MigrationPhase=Keyword`); filterable in the Web UI. */
export const migrationPhaseKey = defineSearchAttributeKey('MigrationPhase', 'KEYWORD');

export const TASK_QUEUE = 'pgmove';

/** migrateCluster answers the same `status` query with its per-database table (kind: 'cluster'). */
export const clusterStatusQuery = defineQuery<ClusterStatus>('status');

/** A child migrateDatabase tells its migrateCluster parent each phase it enters (and how it ended). */
export interface DatabaseProgress {
  workflowId: string;
  phase: Phase;
  method: string;
  error?: string;
  /** While syncing: why a cutover would be refused now ('' when it would be accepted). */
  cutoverBlocker?: string;
}
export const databaseProgressSignal = defineSignal<[DatabaseProgress]>('databaseProgress');

/** Cluster cutover (mode together): each database votes once it is frozen, drained and ready (or failed). */
export interface CutoverVote {
  workflowId: string;
  attempt: number;
  vote: 'ready' | 'failed';
  error?: string;
}
export const cutoverVoteSignal = defineSignal<[CutoverVote]>('cutoverVote');

/** The parent's decision for one cluster cutover attempt; undefined while votes are outstanding. */
export type CutoverDecision = 'switch' | 'abandon';
export const cutoverDecisionQuery = defineQuery<CutoverDecision | undefined, [number]>('cutoverDecision');
