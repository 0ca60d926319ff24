/**
 * Activity-side waiting: "check, sleep, until a deadline" in one place, so every wait honours the
 * activity's cancellation and ends with an error that says what it waited for. Workflows wait with
 * Temporal's sleep/condition instead (this module uses timers).
 */

/** Sleeps, or rejects as soon as the signal aborts (an activity's cancellation). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => (signal?.removeEventListener('abort', onAbort), resolve()), ms);
    const onAbort = () => (clearTimeout(timer), reject(signal?.reason));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A wait that reached its time limit (retryable: a new attempt waits again). */
export class PollTimeoutError extends Error {
  constructor(what: string, timeoutMs: number) {
    super(`${what}: not done within ${timeoutMs / 1000} s`);
    this.name = 'PollTimeout';
  }
}

export interface PollOptions {
  /** Between two checks. */
  intervalMs: number;
  /** Gives up once this long has passed and a check still says "not yet"; absent: no limit of its own. */
  timeoutMs?: number;
  /** The activity's cancellation: the wait ends at once when it aborts. */
  signal?: AbortSignal;
  /** What is waited for, named by the timeout error. */
  what: string;
  /** The error at the time limit, when the caller knows better than PollTimeoutError (the last state seen). */
  timeoutError?: () => Error;
  /** The error on cancellation (default: the signal's reason). */
  cancelledError?: () => Error;
}

/**
 * Calls `check` until it returns something other than undefined, and returns that; `intervalMs` apart.
 * A check that throws ends the wait with its error. After a "not yet": cancelled → the cancellation
 * error, past the time limit → the timeout error, else sleep and check again.
 */
export async function pollUntil<T>(check: () => Promise<T | undefined> | T | undefined, options: PollOptions): Promise<T> {
  const { signal } = options;
  const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
  const cancelled = () => options.cancelledError?.() ?? signal?.reason;
  for (;;) {
    const result = await check();
    if (result !== undefined) return result;
    if (signal?.aborted) throw cancelled();
    if (deadline !== undefined && Date.now() > deadline) throw options.timeoutError?.() ?? new PollTimeoutError(options.what, options.timeoutMs!);
    try {
      await pause(options.intervalMs, signal);
    } catch {
      throw cancelled();
    }
  }
}
