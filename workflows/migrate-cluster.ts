/**
 * migrateCluster: many databases of one server and their shared roles, as one durable migration.
 * plan → pre-flight of every database (all-or-nothing or best-effort) → globals (roles, memberships,
 * target databases) → one child migrateDatabase per database, `concurrency` at a time → [one cutover
 * for every online database: all switch or none] → database grants and comments. The children carry
 * the work (and their own histories); this parent keeps a per-database table and continues as new
 * between databases when its history grows. Deterministic code only.
 */
import {
  ActivityCancellationType,
  ApplicationFailure,
  CancellationScope,
  ContinueAsNew,
  ParentClosePolicy,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  patched,
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
import type { ClusterPhase, ClusterStatus, CutoverRequest, DatabaseRow } from '../src/model';
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
import { PATCHES } from './patches';
import { advancePhase } from './phase-timing';

export interface ClusterResult {
  migrationId: string;
  outcome: 'completed' | 'dryRun';
  status: ClusterStatus;
}

/** What the parent carries into its next run (continue-as-new); never a secret. */
export interface ClusterResume {
  plan: ClusterPlan;
  status: ClusterStatus;
  /** The cluster cutover's attempt counter and recent decisions (a participant may still read its attempt's). */
  cutover?: Pick<ClusterCutoverState, 'attempt' | 'decisions'>;
}

// The worker heartbeats for every activity (liveness interceptor): a lost worker costs 30 s, not the timeout.
const heartbeatTimeout = '30s';
const quick = proxyActivities<typeof activities>({ startToCloseTimeout: '10m', heartbeatTimeout, retry: { maximumAttempts: 5, initialInterval: '2s' } });
// A cancellation waits for a running globals phase to stop: the undo must not race its last statements.
const planning = proxyActivities<typeof activities>({ startToCloseTimeout: '30m', heartbeatTimeout, retry: { maximumAttempts: 3, initialInterval: '2s' }, cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED });
// Undo must happen: retried until it succeeds.
const undo = proxyActivities<typeof activities>({ startToCloseTimeout: '10m', heartbeatTimeout, retry: { initialInterval: '2s', maximumInterval: '1m' } });

export async function migrateCluster(input: ClusterSpecInput, resume?: ClusterResume): Promise<ClusterResult> {
  const migrationId = workflowInfo().workflowId;
  // Runs recorded before it keep TERMINATE children, awaited by their results, and a cancellable undo.
  const ownCleanup = patched(PATCHES.clusterChildrenCleanUp);
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
    advancePhase(status, phase, new Date().toISOString());
    if (input.searchAttributes !== false) upsertSearchAttributes([{ key: migrationPhaseKey, value: `cluster:${phase}` }]);
    publish();
  };
  const row = (workflowId: string) => status.databases.find((r) => r.workflowId === workflowId);
  // Children a former run started keep running (ABANDON): this run follows them by their signals.
  const running = new Set<string>(status.databases.filter((r) => r.status === 'running').map((r) => r.workflowId));
  /** Children whose start is not recorded yet: a run that continued as new now would never start them. */
  const starting = new Set<string>();
  /** Bumped on every change the scheduler waits for (a child's phase or end, an abort). */
  const changes = { count: 0 };
  const cutover: ClusterCutoverState = { votes: {}, decisions: { ...resume?.cutover?.decisions }, attempt: resume?.cutover?.attempt ?? 0 };
  /** Why the children are being stopped (an abort, a cancellation or a failure of this workflow). */
  let stopReason: string | undefined;
  const abortChildren = (reason: string) => {
    stopReason ??= reason;
    for (const id of running) void getExternalWorkflowHandle(id).signal(abortSignal, { reason: `cluster ${migrationId} aborted: ${reason}` }).catch(() => undefined);
  };

  setHandler(clusterStatusQuery, () => status);
  setHandler(databaseProgressSignal, (progress) => {
    const r = row(progress.workflowId);
    if (!r) return;
    if (ownCleanup) {
      // A child's last report is delivered before it closes: the end of a child a former run started.
      if (r.status !== 'running') return;
      if (['completed', 'failed', 'aborted'].includes(progress.phase)) {
        settleRow(r, progress.phase as 'completed' | 'failed' | 'aborted', progress.method, progress.error);
        publish();
        return;
      }
    }
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
    abortChildren(status.abortReason);
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
    // A cancelled cluster migration ends like an aborted one: every child and the globals are undone.
    if (ownCleanup && isCancellation(error) && status.abortReason === undefined) status.abortReason = 'the cluster migration was cancelled';
    const aborted = status.abortReason !== undefined;
    if (!(error instanceof ApplicationFailure && error.type === 'DatabasesFailed')) status.errors.push(aborted ? `aborted: ${status.abortReason}` : errorText(error, TEMPORAL_WRAPPERS));
    if (ownCleanup) {
      // Neither a cancellation nor a failure of this workflow cuts a child's cleanup short, nor its own.
      await CancellationScope.nonCancellable(async () => {
        if (running.size) {
          abortChildren(status.abortReason ?? `the cluster migration failed: ${oneLine(errorText(error, TEMPORAL_WRAPPERS))}`);
          publish();
          await condition(() => running.size === 0);
        }
        if (plan && status.phase !== 'preflight') await undoGlobals(plan, status, enterPhase);
      });
    } else if (plan && status.phase !== 'preflight') {
      await undoGlobals(plan, status, enterPhase);
    }
    enterPhase(aborted ? 'aborted' : 'failed');
    throw error;
  }
  enterPhase('completed');
  return { migrationId, outcome: 'completed', status };

  function settleRow(r: DatabaseRow, outcome: 'completed' | 'failed' | 'aborted', method: string | undefined, error: string | undefined): void {
    r.status = outcome;
    r.phase = outcome;
    if (method) r.method = method;
    if (error !== undefined) r.error = oneLine(error);
    r.endedAt = new Date().toISOString();
    r.seconds = (Date.parse(r.endedAt) - Date.parse(r.startedAt ?? r.endedAt)) / 1000;
    running.delete(r.workflowId);
    changes.count += 1;
  }

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
      if (ownCleanup) {
        // Children outlive this run: continue as new whenever the history is long, unless a start, a
        // cutover or an abort is under way (their state lives in this run).
        if (historyFull() && starting.size === 0 && !cutover.request && !cutover.running && stopReason === undefined) {
          await continueAsNew<typeof migrateCluster>(input, { plan: ready, status, cutover: { attempt: cutover.attempt, decisions: recentDecisions(cutover) } });
        }
      } else if (next && running.size === 0 && historyFull()) {
        await continueAsNew<typeof migrateCluster>(input, { plan: ready, status });
      }
      if (next && busy() < ready.spec.concurrency && (ownCleanup || !deferForNewRun())) {
        results.push(startDatabase(ready, next, running, publish));
        continue;
      }
      if (cutover.request) {
        enterPhase('cutover');
        // A running cutover is never cut in half: a cancellation waits for its decision.
        if (ownCleanup) await CancellationScope.nonCancellable(() => runClusterCutover(ready.spec, status, cutover, publish));
        else await runClusterCutover(ready.spec, status, cutover, publish);
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
    starting.add(planned.workflowId);
    publish();
    const summary = `pgmove database ${planned.database} → ${planned.targetDatabase} (cluster ${ready.spec.id})`;
    // Not cancellable: a cancellation of this workflow stops a child by its abort (and waits for its cleanup).
    const uncancelled = <T>(fn: () => Promise<T>) => (ownCleanup ? CancellationScope.nonCancellable(fn) : fn());
    try {
      const child = await uncancelled(() =>
        startChild(migrateDatabase, {
          workflowId: planned.workflowId,
          args: [planned.spec],
          // ABANDON: the child outlives a run that continues as new (and stops by its own abort).
          // Before: the parent only continued as new with no child running; terminating it ended them.
          parentClosePolicy: ownCleanup ? ParentClosePolicy.ABANDON : ParentClosePolicy.TERMINATE,
          staticSummary: summary,
        }),
      );
      starting.delete(planned.workflowId);
      changes.count += 1;
      // An abort that arrived while this child was being started has not reached it yet.
      const abortReason = ownCleanup ? stopReason : status.abortReason;
      if (abortReason !== undefined) await uncancelled(() => child.signal(abortSignal, { reason: `cluster ${migrationId} aborted: ${abortReason}` }));
      const result = await uncancelled(() => child.result());
      r.status = 'completed';
      r.phase = 'completed';
      r.method = result.status.method;
    } catch (error) {
      const text = errorText(error, TEMPORAL_WRAPPERS);
      r.status = /aborted/.test(text) || status.abortReason !== undefined ? 'aborted' : 'failed';
      r.phase = r.status;
      r.error = oneLine(text);
    } finally {
      starting.delete(planned.workflowId);
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

/** The last few decisions: a participant that crashed reads its attempt's decision again. */
function recentDecisions(state: ClusterCutoverState): ClusterCutoverState['decisions'] {
  return Object.fromEntries(Object.entries(state.decisions).filter(([attempt]) => Number(attempt) > state.attempt - 5));
}

/** Temporal's generic wrapper messages say nothing a table row needs. */
const TEMPORAL_WRAPPERS = /^(Activity task failed|Child Workflow execution failed)$/;

/** One line for the per-database table (pre-flight lists its checks on separate lines). */
function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ');
}
