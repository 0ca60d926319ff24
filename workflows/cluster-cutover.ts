/**
 * One cutover for every online database of a cluster migration: all switch, or none do. A two-phase
 * commit with this workflow as the coordinator, its decision durable in its history:
 *   1. every logical child is asked to cut over as a participant: it freezes its source, drains, stops
 *      its subscription, sets sequences and compares counts, marks "switching" on its source, votes
 *      `ready` (or `failed`) and then waits for the decision (a retry after a crash waits again);
 *   2. all ready in time → the cluster's switch hook runs once; exit 0 → decision `switch` (every child
 *      marks itself switched and validates); any failed vote, a timeout or a failed hook → `abandon`
 *      (every child unfreezes its source and resumes syncing).
 * Deterministic code only.
 */
import { condition, getExternalWorkflowHandle, proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities';
import type { ClusterSpec, ClusterSpecInput } from '../src/cluster-spec';
import type { ClusterStatus, CutoverAttempt, CutoverRequest, DatabaseRow } from '../src/model';
import { durationMs } from '../src/units';
import { cutoverSignal, type CutoverDecision, type CutoverVote } from './messages';
import { causeMessage } from '../src/error-text';

export interface ClusterCutoverState {
  request?: CutoverRequest;
  running?: boolean;
  attempt: number;
  votes: Record<number, Record<string, CutoverVote>>;
  decisions: Record<number, CutoverDecision>;
}

function onlineRows(status: ClusterStatus): DatabaseRow[] {
  return status.databases.filter((r) => r.method === 'logical' && r.status === 'running');
}

/** Why a cluster cutover cannot start now, or undefined. */
export function clusterCutoverRefusal(input: ClusterSpecInput, status: ClusterStatus, state: ClusterCutoverState): string | undefined {
  if ((input.cutover?.mode ?? 'together') !== 'together') return `cutover.mode is perDatabase: cut each database over on its own (pgmove cutover ${status.migrationId}.<database>)`;
  if (state.running || state.request) return 'a cluster cutover is already running';
  if (status.phase !== 'databases') return `the databases are not migrating yet (phase: ${status.phase})`;
  const pending = status.databases.filter((r) => r.status === 'pending').map((r) => r.database);
  if (pending.length) return `databases not started yet: ${pending.join(', ')}`;
  const online = onlineRows(status);
  if (!online.length) return 'no online (logical) database is running: there is nothing to cut over';
  const notSyncing = online.filter((r) => r.phase !== 'syncing').map((r) => `${r.database} (${r.phase})`);
  if (notSyncing.length) return `not every online database is syncing yet: ${notSyncing.join(', ')}`;
  const blocked = online.filter((r) => r.cutoverBlocker !== '').map((r) => `${r.database}: ${r.cutoverBlocker ?? 'no measurement of its stream yet'}`);
  if (blocked.length) return `not every online database is ready: ${blocked.join('; ')}`;
  return undefined;
}

export async function runClusterCutover(spec: ClusterSpec, status: ClusterStatus, state: ClusterCutoverState, publish: () => void): Promise<void> {
  const request = state.request ?? {};
  state.request = undefined;
  state.running = true;
  const attempt = (state.attempt += 1);
  const online = onlineRows(status);
  const record: CutoverAttempt = {
    requestedBy: `${request.approvedBy ?? 'operator'}${request.reason ? ` (${request.reason})` : ''}`,
    startedAt: new Date().toISOString(),
    outcome: 'running',
  };
  (status.cutovers ??= []).push(record);
  publish();
  const coordinated = { parentId: status.migrationId, attempt };
  for (const row of online) {
    await getExternalWorkflowHandle(row.workflowId).signal(cutoverSignal, { approvedBy: request.approvedBy, reason: request.reason, coordinated });
  }
  const votes = () => Object.values(state.votes[attempt] ?? {});
  const decided = () => votes().some((v) => v.vote === 'failed') || online.every((r) => state.votes[attempt]?.[r.workflowId]?.vote === 'ready');
  const inTime = await condition(decided, durationMs(spec.cutover.readyTimeout));
  const failed = votes().filter((v) => v.vote === 'failed');
  let error: string | undefined;
  if (!inTime) error = `not ready within cutover.readyTimeout (${spec.cutover.readyTimeout}): ${online.filter((r) => !state.votes[attempt]?.[r.workflowId]).map((r) => r.database).join(', ')}`;
  else if (failed.length) error = failed.map((v) => `${databaseOf(status, v.workflowId)}: ${v.error ?? 'failed'}`).join('; ');
  if (!error && spec.cutover.switchHook) {
    try {
      await hooks(spec).clusterSwitchHook({ spec, targets: online.map((r) => r.targetDatabase) });
    } catch (hookError) {
      error = `switch hook: ${causeMessage(hookError)}`;
    }
  }
  state.decisions[attempt] = error ? 'abandon' : 'switch';
  Object.assign(record, error ? { outcome: 'failed', error: `called off, every database resumes syncing: ${error}` } : { outcome: 'switched' });
  if (error) status.errors.push(`cluster cutover ${attempt} called off: ${error}`);
  state.running = false;
  publish();
}

function hooks(spec: ClusterSpec) {
  return proxyActivities<typeof activities>({
    startToCloseTimeout: durationMs(spec.cutover.hookTimeout) + 60_000,
    heartbeatTimeout: '30s',
    // Exit non-zero means "not switched" (the hook's contract): no retry. A lost worker is retried.
    retry: { maximumAttempts: 3, initialInterval: '1s', nonRetryableErrorTypes: ['HookFailed'] },
  });
}

function databaseOf(status: ClusterStatus, workflowId: string): string {
  return status.databases.find((r) => r.workflowId === workflowId)?.database ?? workflowId;
}
