/**
 * Periodic heartbeats for long activities: they carry progress details (shown in the Web UI under
 * "Pending Activities") and are how a cancelled activity learns of it.
 */
import { Context } from '@temporalio/activity';

export interface Heartbeater {
  /** Sends the current details now (also called every interval). */
  beat(): void;
  stop(): void;
  signal: AbortSignal;
}

export function startHeartbeat(details: () => unknown, intervalMs = 1000): Heartbeater {
  const context = Context.current();
  const beat = () => context.heartbeat(details());
  beat();
  const timer = setInterval(beat, intervalMs);
  return { beat, stop: () => clearInterval(timer), signal: context.cancellationSignal };
}
