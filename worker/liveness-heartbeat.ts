/**
 * Activity interceptor that heartbeats for activities which do not report progress themselves, as
 * long as the worker process lives. With a heartbeat timeout on every activity, a killed worker's
 * activity is retried elsewhere after that timeout (seconds) instead of its start-to-close timeout
 * (up to hours); the beats also deliver cancellation (abort) to short activities.
 */
import type { Context } from '@temporalio/activity';
import type { ActivityInboundCallsInterceptor, ActivityInterceptorsFactory } from '@temporalio/worker';
import { sendsOwnHeartbeats } from '../src/heartbeat';

type Execute = NonNullable<ActivityInboundCallsInterceptor['execute']>;

class LivenessHeartbeat implements ActivityInboundCallsInterceptor {
  constructor(private readonly context: Context) {}

  async execute(input: Parameters<Execute>[0], next: Parameters<Execute>[1]): Promise<unknown> {
    const timeoutMs = this.context.info.heartbeatTimeoutMs;
    if (!timeoutMs) return next(input);
    // Re-send the previous attempt's details, so a resumable activity killed again before its own
    // first beat still finds its progress on the next attempt.
    const previous: unknown = this.context.info.heartbeatDetails;
    const timer = setInterval(() => {
      if (!sendsOwnHeartbeats(this.context)) this.context.heartbeat(previous);
    }, Math.max(200, Math.min(1000, timeoutMs / 4)));
    try {
      return await next(input);
    } finally {
      clearInterval(timer);
    }
  }
}

export const livenessHeartbeatInterceptor: ActivityInterceptorsFactory = (context) => ({ inbound: new LivenessHeartbeat(context) });
