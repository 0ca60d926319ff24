/**
 * Periodic heartbeats for long activities: they carry progress details (shown in the Web UI under
 * "Pending Activities") and are how a cancelled activity learns of it.
 *
 * Every activity runs with a heartbeat timeout, so a worker that dies is noticed within seconds,
 * not after the activity's start-to-close timeout. Activities that report progress call
 * `startHeartbeat`; for all others the worker's liveness interceptor beats on their behalf.
 */
import { Context } from '@temporalio/activity';

/** Contexts whose activity sends its own heartbeats (with progress details). */
const selfBeating = new WeakSet<Context>();

export interface Heartbeater {
  /** Sends the current details now (also called every interval). */
  beat(): void;
  stop(): void;
  signal: AbortSignal;
}

export function startHeartbeat(details: () => unknown, intervalMs = 1000): Heartbeater {
  const context = Context.current();
  selfBeating.add(context);
  // Several beats per heartbeat timeout, so one late beat on a loaded machine is not a lost worker.
  const timeoutMs = context.info.heartbeatTimeoutMs;
  if (timeoutMs) intervalMs = Math.max(200, Math.min(intervalMs, timeoutMs / 3));
  const beat = () => context.heartbeat(details());
  beat();
  const timer = setInterval(beat, intervalMs);
  return { beat, stop: () => clearInterval(timer), signal: context.cancellationSignal };
}

/** True once the activity of this context has started its own heartbeats. */
export function sendsOwnHeartbeats(context: Context): boolean {
  return selfBeating.has(context);
}
