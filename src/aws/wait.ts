/** Polling AWS: the interval, a cancellable pause, and waiting until a deleted resource is gone (deletes are asynchronous: an RDS instance takes minutes). */
/** How often AWS is polled (tests against moto set it low). */
export const pollMs = (): number => Number(process.env.PGMOVE_AWS_POLL_MS ?? 15_000);

export async function waitGone(what: string, exists: () => Promise<boolean>, timeoutMs = 60 * 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (await exists()) {
    // A retryable error: Temporal retries the cleanup, which resumes waiting.
    if (Date.now() > deadline) throw new Error(`${what} still exists after ${Math.round(timeoutMs / 60_000)} min of waiting for its deletion`);
    await new Promise((resolve) => setTimeout(resolve, pollMs()));
  }
}

/** Sleeps, or rejects as soon as the signal aborts (an activity's cancellation). */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => (signal.removeEventListener('abort', onAbort), resolve()), ms);
    const onAbort = () => (clearTimeout(timer), reject(signal.reason));
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
