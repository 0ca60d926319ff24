/** Polling AWS until a resource is gone, with a deadline (deletes are asynchronous: an RDS instance takes minutes). */
const pollMs = (): number => Number(process.env.PGMOVE_AWS_POLL_MS ?? 15_000);

export async function waitGone(what: string, exists: () => Promise<boolean>, timeoutMs = 60 * 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (await exists()) {
    // A retryable error: Temporal retries the cleanup, which resumes waiting.
    if (Date.now() > deadline) throw new Error(`${what} still exists after ${Math.round(timeoutMs / 60_000)} min of waiting for its deletion`);
    await new Promise((resolve) => setTimeout(resolve, pollMs()));
  }
}
