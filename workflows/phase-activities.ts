/**
 * Activity proxies of migrateDatabase's phases, with the spec's timeouts and retries, named for what
 * they run: `schema`, `copy`, `postData` and `validate` the phase's bulk work (each with its
 * `timeouts.*`); `steps` the short single steps around it — plan, fence, measure, create or drop the
 * stream, set sequences — bounded (10 minutes) so that a hung one is retried; `untilDone` the steps that
 * must never be left half done — unfreeze, a cutover's or rollback's stage read and abandon, the drop of
 * the stream in the cleanup of old runs (./legacy-cleanup) — retried without limit. Only names: each proxy's options are those it always
 * had. Deterministic code only.
 */
import { ActivityCancellationType, proxyActivities } from '@temporalio/workflow';
import type { Duration, RetryPolicy } from '@temporalio/common';
import type * as activities from '../activities';
import type { MigrationSpec } from '../src/spec';
import { durationMs } from '../src/units';

/** `sourceFrozen`: the offline method holds the source frozen through every phase — a lost worker must cost seconds there too. */
export function phaseActivities(spec: MigrationSpec, { sourceFrozen = false }: { sourceFrozen?: boolean } = {}) {
  const retry: RetryPolicy = { maximumAttempts: spec.retries.maximumAttempts, initialInterval: '2s', maximumInterval: '1m' };
  // The spec's durations were validated by pre-flight ("4h", "30s"): Temporal's own duration format.
  const timeouts = spec.timeouts as Record<keyof MigrationSpec['timeouts'], Duration>;
  const heartbeatTimeout = sourceFrozen ? freezeHeartbeatTimeout(spec) : timeouts.heartbeat;
  // An abort waits until a cancelled activity has really stopped (COPY ended) before cleanup runs.
  const cancellationType = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED;
  return {
    schema: proxyActivities<typeof activities>({ startToCloseTimeout: timeouts.schema, heartbeatTimeout, retry, cancellationType }),
    copy: proxyActivities<typeof activities>({ startToCloseTimeout: timeouts.copy, heartbeatTimeout, retry, cancellationType }),
    postData: proxyActivities<typeof activities>({ startToCloseTimeout: timeouts.postData, heartbeatTimeout, retry, cancellationType }),
    validate: proxyActivities<typeof activities>({ startToCloseTimeout: timeouts.validate, heartbeatTimeout, retry, cancellationType }),
    steps: proxyActivities<typeof activities>({ startToCloseTimeout: '10m', heartbeatTimeout, retry, cancellationType }),
    // The source must never stay frozen: unfreezing is retried until it succeeds (the status shows
    // "cleanup owes: unfreeze the source" and the last error meanwhile).
    untilDone: proxyActivities<typeof activities>({
      startToCloseTimeout: Math.max(5 * 60_000, durationMs(spec.cutover.hookTimeout) + 60_000),
      heartbeatTimeout: freezeHeartbeatTimeout(spec),
      retry: { initialInterval: '2s', maximumInterval: '1m' }, // no maximumAttempts: unlimited
    }),
  };
}

/**
 * Heartbeat timeout of the activities that hold the source frozen (cutover, unfreeze): a lost worker must
 * cost seconds of write freeze, not a minute. A spec carried into a continued run from before
 * `cutover.freezeHeartbeat` existed keeps `timeouts.heartbeat`.
 */
export function freezeHeartbeatTimeout(spec: MigrationSpec): Duration {
  return (spec.cutover.freezeHeartbeat ?? spec.timeouts.heartbeat) as Duration;
}
