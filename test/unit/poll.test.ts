/**
 * pollUntil (src/poll.ts): the first defined answer ends the wait, a check's error ends it at once, the
 * time limit ends it with PollTimeoutError or the caller's error, and cancellation ends it mid-sleep.
 */
import { PollTimeoutError, pollUntil } from '../../src/poll';

test('returns the first defined answer, checking intervalMs apart', async () => {
  let calls = 0;
  const started = Date.now();
  await expect(pollUntil(() => (++calls === 3 ? false : undefined), { intervalMs: 20, what: 'x' })).resolves.toBe(false);
  expect(calls).toBe(3);
  expect(Date.now() - started).toBeGreaterThanOrEqual(35);
});

test("a check's error ends the wait", async () => {
  await expect(pollUntil(() => Promise.reject(new Error('boom')), { intervalMs: 10, what: 'x' })).rejects.toThrow('boom');
});

test('the time limit: PollTimeoutError naming what was waited for, or the caller’s error', async () => {
  await expect(pollUntil(() => undefined, { intervalMs: 10, timeoutMs: 50, what: 'the thing' })).rejects.toThrow(PollTimeoutError);
  await expect(pollUntil(() => undefined, { intervalMs: 10, timeoutMs: 50, what: 'the thing' })).rejects.toThrow('the thing: not done within 0.05 s');
  await expect(pollUntil(() => undefined, { intervalMs: 10, timeoutMs: 50, what: 'x', timeoutError: () => new Error('mine') })).rejects.toThrow('mine');
});

test('cancellation ends the wait during its sleep, with the signal’s reason or the caller’s error', async () => {
  const controller = new AbortController();
  const reason = new Error('cancelled');
  setTimeout(() => controller.abort(reason), 30);
  const started = Date.now();
  await expect(pollUntil(() => undefined, { intervalMs: 10_000, signal: controller.signal, what: 'x' })).rejects.toBe(reason);
  expect(Date.now() - started).toBeLessThan(5000);
  await expect(pollUntil(() => undefined, { intervalMs: 10, signal: controller.signal, what: 'x', cancelledError: () => new Error('mine') })).rejects.toThrow('mine');
});
