/** The privilege hack's activities (elevate before pre-flight, revert last in cleanup). Deterministic code only. */
import { ActivityCancellationType, patched, proxyActivities } from '@temporalio/workflow';
import { PATCHES } from './patches';
import type { Duration, RetryPolicy } from '@temporalio/common';
import type * as activities from '../activities';
import type { MigrationSpecInput } from '../src/spec';

export function elevationActivities(input: MigrationSpecInput) {
  const retry: RetryPolicy = { maximumAttempts: input.retries?.maximumAttempts ?? 10, initialInterval: '2s', maximumInterval: '1m' };
  const heartbeatTimeout = (input.timeouts?.heartbeat ?? '60s') as Duration;
  return {
    // A cancelled elevation finishes (its trust window closed) before the revert may start.
    get elevatePrivileges() {
      const cancellationType = patched(PATCHES.elevationWaitsForCancel) ? ActivityCancellationType.WAIT_CANCELLATION_COMPLETED : ActivityCancellationType.TRY_CANCEL;
      return proxyActivities<typeof activities>({ startToCloseTimeout: '10m', heartbeatTimeout, retry, cancellationType }).elevatePrivileges;
    },
    // Like the unfreeze: retried until it succeeds — the source must never keep a trust line.
    revertPrivileges: proxyActivities<typeof activities>({ startToCloseTimeout: '10m', heartbeatTimeout, retry: { initialInterval: '2s', maximumInterval: '1m' } }).revertPrivileges,
  };
}
