/**
 * The workflows' messages, defined once: clients (CLI, tests) import these definitions; the
 * `temporal` CLI uses the same names (signals `abort` and `cutover`, update `requestCutover`, query `status`).
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import { defineSearchAttributeKey } from '@temporalio/common';
import type { CutoverAnswer, CutoverRequest, MigrationStatus } from '../src/model';

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

/** Registered by the dev stack (`--search-attribute MigrationPhase=Keyword`); filterable in the Web UI. */
export const migrationPhaseKey = defineSearchAttributeKey('MigrationPhase', 'KEYWORD');

export const TASK_QUEUE = 'pgmove';
