/**
 * migrateCluster: many databases of one server and their shared roles, as one durable migration.
 * plan → pre-flight of every database (all-or-nothing or best-effort) → globals (roles, memberships,
 * target databases) → one child migrateDatabase per database, `concurrency` at a time → [one cutover
 * for every online database: all switch or none] → database grants and comments. The children carry
 * the work (and their own histories); this parent keeps a per-database table and continues as new
 * between databases when its history grows. Deterministic code only.
 */
import {
  ApplicationFailure,
  ContinueAsNew,
  ParentClosePolicy,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type * as activities from '../activities';
import type { ClusterPlan, PlannedDatabase } from '../activities/globals';
import type { ClusterSpecInput } from '../src/cluster-spec';
import type { ClusterPhase, ClusterStatus, CutoverRequest } from '../src/model';
import {
  abortSignal,
  clusterStatusQuery,
  cutoverDecisionQuery,
  cutoverSignal,
  cutoverVoteSignal,
  databaseProgressSignal,
  migrationPhaseKey,
  requestCutoverUpdate,
  type CutoverDecision,
} from './messages';
import { migrateDatabase } from './migrate-database';
import { renderClusterMarkdown } from './status-markdown';
import { errorText } from './error-text';
import { clusterCutoverRefusal, runClusterCutover, type ClusterCutoverState } from './cluster-cutover';

export interface ClusterResult {
  migrationId: string;
  outcome: 'completed' | 'dryRun';
  status: ClusterStatus;
}

/** What the parent carries into its next run (continue-as-new); never a secret. */
export interface ClusterResume {
  plan: ClusterPlan;
  status: ClusterStatus;
}

// The worker heartbeats for every activity (liveness interceptor): a lost worker costs 30 s, not the timeout.
const heartbeatTimeout = '30s';
const quick = proxyActivities<typeof activities>({ startToCloseTimeout: '10m', heartbeatTimeout, retry: { maximumAttempts: 5, initialInterval: '2s' } });
const planning = proxyActivities<typeof activities>({ startToCloseTimeout: '30m', heartbeatTimeout, retry: { maximumAttempts: 3, initialInterval: '2s' } });
// Undo must happen: retried until it succeeds.
const undo = proxyActivities<typeof activities>({ startToCloseTimeout: '10m', heartbeatTimeout, retry: { initialInterval: '2s', maximumInterval: '1m' } });

export async function migrateCluster(input: ClusterSpecInput, resume?: ClusterResume): Promise<ClusterResult> {
  const migrationId = workflowInfo().workflowId;
  const status: ClusterStatus = resume?.status ?? {
    kind: 'cluster',
    migrationId,
    phase: 'starting',
    dryRun: input.dryRun ?? false,
    concurrency: input.concurrency ?? 2,
    databases: [],
    timings: {},
    errors: [],
    warnings: [],
    runs: 0,
  };
  status.runs += 1;
  const publish = () => setCurrentDetails(renderClusterMarkdown(status));
  const enterPhase = (phase: ClusterPhase) => {
    const now = new Date().toISOString();
    const current = status.timings[status.phase];
    if (current && !current.endedAt) Object.assign(current, { endedAt: now, seconds: (Date.parse(now) - Date.parse(current.startedAt)) / 1000 });
    status.phase = phase;
    if (!['completed', 'failed', 'aborted', 'dryRunCompleted'].includes(phase)) status.timings[phase] = { startedAt: now };
    if (input.searchAttributes !== false) upsertSearchAttributes([{ key: migrationPhaseKey, value: `cluster:${phase}` }]);
    publish();
  };
  const row = (workflowId: string) => status.databases.find((r) => r.workflowId === workflowId);
  const running = new Set<string>();
  /** Bumped on every change the scheduler waits for (a child's phase or end, an abort). */
  const changes = { count: 0 };
  const cutover: ClusterCutoverState = { votes: {}, decisions: {}, attempt: 0 };

  setHandler(clusterStatusQuery, () => status);
  setHandler(databaseProgressSignal, (progress) => {
    const r = row(progress.workflowId);
    if (!r) return;
    if (progress.phase !== 'failed' && progress.phase !== 'aborted' && progress.phase !== 'completed') r.phase = progress.phase;
    r.method = progress.method;
    // Readiness is measured while syncing; any other phase (a cutover running, say) is not ready.
    if (progress.cutoverBlocker !== undefined) r.cutoverBlocker = progress.cutoverBlocker;
    else delete r.cutoverBlocker;
    changes.count += 1;
    publish();
  });
  setHandler(abortSignal, (request) => {
    if (status.abortReason !== undefined || ['completed', 'failed', 'aborted'].includes(status.phase)) return;
    status.abortReason = request?.reason ?? 'aborted by operator';
    status.errors.push(`abort requested: ${status.abortReason}`);
    // Every running child aborts itself (its own cleanup, its own objects only).
    for (const id of running) void getExternalWorkflowHandle(id).signal(abortSignal, { reason: `cluster ${migrationId} aborted: ${status.abortReason}` }).catch(() => undefined);
    changes.count += 1;
    publish();
  });
  setHandler(cutoverVoteSignal, (vote) => {
    (cutover.votes[vote.attempt] ??= {})[vote.workflowId] = vote;
  });
  setHandler(cutoverDecisionQuery, (attempt: number): CutoverDecision | undefined => cutover.decisions[attempt]);
  setHandler(cutoverSignal, (request) => {
    const refusal = clusterCutoverRefusal(input, status, cutover);
    if (refusal) status.warnings.push(`cutover signal ignored: ${refusal}`);
    else cutover.request = request ?? {};
    publish();
  });
  setHandler(
    requestCutoverUpdate,
    (request: CutoverRequest) => {
      cutover.request = { ...request };
      return { accepted: true, reason: `cluster cutover accepted for every online database; follow it with pgmove status ${migrationId}` };
    },
    {
      validator: (_request: CutoverRequest) => {
        const refusal = clusterCutoverRefusal(input, status, cutover);
        if (refusal) throw new Error(`cutover rejected: ${refusal}`);
      },
    },
  );

  let plan = resume?.plan;
  try {
    if (!plan) {
      enterPhase('preflight');
      plan = await planning.planCluster(input);
      status.concurrency = plan.spec.concurrency;
      status.databases = plan.databases.map((d) => ({ database: d.database, targetDatabase: d.targetDatabase, workflowId: d.workflowId, method: String(d.spec.method ?? 'auto'), phase: 'pending', status: 'pending' }));
      await preflightAll(plan, status, publish);
      if (plan.spec.dryRun) {
        enterPhase('dryRunCompleted');
        return { migrationId, outcome: 'dryRun', status };
      }
      if (status.abortReason !== undefined) throw ApplicationFailure.nonRetryable(`migration aborted: ${status.abortReason}`, 'Aborted');
      enterPhase('globals');
      status.globals = await planning.migrateGlobals({ spec: plan.spec, databases: plan.databases.filter((d) => row(d.workflowId)?.status !== 'skipped') });
      enterPhase('databases');
    }
    const ready = plan;
    await runChildren(ready, status, running, publish, () => shouldContinue(ready));
    const failed = status.databases.filter((r) => r.status === 'failed' || r.status === 'aborted');
    if (status.abortReason !== undefined) throw ApplicationFailure.nonRetryable(`migration aborted: ${status.abortReason}`, 'Aborted');
    const completed = ready.databases.filter((d) => row(d.workflowId)?.status === 'completed');
    const finished = await quick.finishGlobals({ spec: ready.spec, completed });
    status.warnings.push(...finished.warnings);
    if (failed.length) {
      throw ApplicationFailure.nonRetryable(`${failed.length} of ${status.databases.length} database(s) did not migrate: ${failed.map((r) => `${r.database} (${(r.error ?? r.status).split('\n')[0]})`).join('; ')}`, 'DatabasesFailed');
    }
  } catch (error) {
    if (error instanceof ContinueAsNew) throw error;
    const aborted = status.abortReason !== undefined;
    if (!(error instanceof ApplicationFailure && error.type === 'DatabasesFailed')) status.errors.push(aborted ? `aborted: ${status.abortReason}` : errorText(error, TEMPORAL_WRAPPERS));
    if (plan && status.phase !== 'preflight') await undoGlobals(plan, status, enterPhase);
    enterPhase(aborted ? 'aborted' : 'failed');
    throw error;
  }
  enterPhase('completed');
  return { migrationId, outcome: 'completed', status };

  function shouldContinue(ready: ClusterPlan): boolean {
    const info = workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= ready.spec.historyEventsPerRun;
  }

  /**
   * Starts children up to the concurrency limit (a database that is syncing no longer copies: it frees
   * its lane); serves the cluster cutover; continues as new between databases when the history is long.
   */
  async function runChildren(ready: ClusterPlan, status: ClusterStatus, running: Set<string>, publish: () => void, historyFull: () => boolean): Promise<void> {
    const results: Promise<void>[] = [];
    const busy = () => [...running].filter((id) => row(id)?.phase !== 'syncing').length;
    // Continue as new between databases: wait for the running ones to end, unless one is syncing
    // (it ends only with a cutover, so the history grows a little longer instead).
    const deferForNewRun = () => historyFull() && [...running].every((id) => row(id)?.phase !== 'syncing');
    for (;;) {
      const next = status.abortReason === undefined ? ready.databases.find((d) => row(d.workflowId)?.status === 'pending') : undefined;
      if (!next && running.size === 0) break;
      if (next && running.size === 0 && historyFull()) {
        await continueAsNew<typeof migrateCluster>(input, { plan: ready, status });
      }
      if (next && busy() < ready.spec.concurrency && !deferForNewRun()) {
        results.push(startDatabase(ready, next, running, publish));
        continue;
      }
      if (cutover.request) {
        enterPhase('cutover');
        await runClusterCutover(ready.spec, status, cutover, publish);
        enterPhase('databases');
        continue;
      }
      const seen = changes.count;
      await condition(() => changes.count !== seen || cutover.request !== undefined);
    }
    await Promise.all(results);
  }

  async function startDatabase(ready: ClusterPlan, planned: PlannedDatabase, running: Set<string>, publish: () => void): Promise<void> {
    const r = row(planned.workflowId)!;
    r.status = 'running';
    r.phase = 'starting';
    r.startedAt = new Date().toISOString();
    running.add(planned.workflowId);
    publish();
    try {
      const child = await startChild(migrateDatabase, {
        workflowId: planned.workflowId,
        args: [planned.spec],
        // The parent only continues as new with no child running; terminating the parent ends them.
        parentClosePolicy: ParentClosePolicy.TERMINATE,
        staticSummary: `pgmove database ${planned.database} → ${planned.targetDatabase} (cluster ${ready.spec.id})`,
      });
      // An abort that arrived while this child was being started has not reached it yet.
      if (status.abortReason !== undefined) await child.signal(abortSignal, { reason: `cluster ${migrationId} aborted: ${status.abortReason}` });
      const result = await child.result();
      r.status = 'completed';
      r.phase = 'completed';
      r.method = result.status.method;
    } catch (error) {
      const text = errorText(error, TEMPORAL_WRAPPERS);
      r.status = /aborted/.test(text) || status.abortReason !== undefined ? 'aborted' : 'failed';
      r.phase = r.status;
      r.error = oneLine(text);
    } finally {
      r.endedAt = new Date().toISOString();
      r.seconds = (Date.parse(r.endedAt) - Date.parse(r.startedAt!)) / 1000;
      running.delete(planned.workflowId);
      changes.count += 1;
      publish();
    }
  }
}

/** Pre-flight of every database before anything is written, `concurrency` at a time. */
async function preflightAll(plan: ClusterPlan, status: ClusterStatus, publish: () => void): Promise<void> {
  const queue = [...plan.databases];
  const failures: string[] = [];
  const lane = async () => {
    for (let planned = queue.shift(); planned; planned = queue.shift()) {
      const r = status.databases.find((d) => d.workflowId === planned.workflowId)!;
      r.phase = 'preflight';
      try {
        const checked = await planning.preflight(planned.spec, { targetMaintenanceDatabase: plan.targetMaintenanceDatabase, rolesToCreate: plan.rolesToCreate }, planned.workflowId);
        r.method = checked.report.method;
        r.phase = 'pending';
      } catch (error) {
        const text = errorText(error, TEMPORAL_WRAPPERS);
        failures.push(`${planned.database}: ${text}`);
        Object.assign(r, { phase: 'skipped', status: 'skipped', error: oneLine(text) });
      }
      publish();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(plan.spec.concurrency, plan.databases.length)) }, lane));
  if (failures.length && plan.spec.onPreflightFailure === 'allOrNothing') {
    throw ApplicationFailure.nonRetryable(
      `pre-flight failed for ${failures.length} database(s), nothing was written (onPreflightFailure: allOrNothing):\n${failures.map((f) => `* ${f}`).join('\n')}`,
      'PreflightFailed',
    );
  }
  if (failures.length) status.warnings.push(`skipped after a failed pre-flight (onPreflightFailure: bestEffort): ${failures.map((f) => f.split(':')[0]).join(', ')}`);
  if (failures.length === plan.databases.length) throw ApplicationFailure.nonRetryable('every database failed pre-flight; nothing was written', 'PreflightFailed');
}

/**
 * After a failure or an abort: drop the target databases nobody migrated, and the roles if nothing is
 * kept. Also after a globals phase that failed half-way: only what carries this migration's mark goes.
 */
async function undoGlobals(plan: ClusterPlan, status: ClusterStatus, enterPhase: (phase: ClusterPhase) => void): Promise<void> {
  enterPhase('cleanup');
  const rowOf = (d: PlannedDatabase) => status.databases.find((r) => r.workflowId === d.workflowId)!;
  const unused = plan.databases.filter((d) => ['pending', 'skipped', 'aborted'].includes(rowOf(d).status)).map((d) => d.targetDatabase);
  const created = status.globals?.databasesCreated ?? [];
  const keptDatabases = plan.databases.filter((d) => !unused.includes(d.targetDatabase) && created.includes(d.targetDatabase));
  const result = await undo.dropGlobals({ spec: plan.spec, databases: unused, dropRoles: keptDatabases.length === 0 });
  if (result.dropped.length) status.warnings.push(`cleanup dropped: ${result.dropped.join(', ')}`);
  if (result.kept.length || keptDatabases.length) {
    status.warnings.push(`kept: ${[...result.kept, ...keptDatabases.map((d) => `database ${d.targetDatabase} (its migration ${rowOf(d).status})`)].join(', ')}`);
  }
}

/** Temporal's generic wrapper messages say nothing a table row needs. */
const TEMPORAL_WRAPPERS = /^(Activity task failed|Child Workflow execution failed)$/;

/** One line for the per-database table (pre-flight lists its checks on separate lines). */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ');
}
