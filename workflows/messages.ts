/**
 * The workflows' messages, defined once: clients (CLI, tests) import these definitions; the
 * `temporal` CLI uses the same names (signal `abort`, query `status`).
 */
import { defineQuery, defineSignal } from '@temporalio/workflow';
import { defineSearchAttributeKey } from '@temporalio/common';
import type { MigrationStatus } from '../src/model';

export interface AbortInput {
  reason?: string;
}

export const abortSignal = defineSignal<[AbortInput?]>('abort');
export const statusQuery = defineQuery<MigrationStatus>('status');

/** Registered by the dev stack (`--search-attribute MigrationPhase=Keyword`); filterable in the Web UI. */
export const migrationPhaseKey = defineSearchAttributeKey('MigrationPhase', 'KEYWORD');

export const TASK_QUEUE = 'pgmove';
