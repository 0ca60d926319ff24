/**
 * Waiting on AWS through the SDK's waiters (`waitUntil…` of @aws-sdk/client-rds and
 * client-database-migration-service): they poll the describe call, match its answer against the
 * service model's success and failure states, stop at `abortSignal` and give up after `maxWaitTime`.
 * What pgmove adds around them, in `waitWith`:
 * - a fixed poll interval, PGMOVE_AWS_POLL_MS (15 s; tests against moto set it low), as before: the
 *   waiters' own back-off grows to 2 min (DMS) or 30 min (RDS) between polls, too coarse for the status
 *   an activity shows in its heartbeat details;
 * - `observe`, which sees every describe answer: activities put the status into their heartbeat details
 *   (a waiter reports nothing until it ends), stop at once on states the waiter would wait through
 *   until its time is up, or accept an answer the waiter does not (see the callers);
 * - a describe error that retrying cannot fix (a missing permission) ends the wait at once, classified
 *   like every other AWS call; the waiter would poll it until the time is up.
 * The activities keep their heartbeat timers running while a waiter blocks.
 */
import { ApplicationFailure } from '@temporalio/common';
import { classifyAwsError, isAwsNotFound } from './errors';

/** How often AWS is polled (tests against moto set it low). */
export const pollMs = (): number => Number(process.env.PGMOVE_AWS_POLL_MS ?? 15_000);

/** The shape of an SDK waiter (`waitUntilDBInstanceAvailable` …), typed only as far as used here. */
type Waiter<C, I> = (params: { client: C; maxWaitTime: number; minDelay?: number; maxDelay?: number; abortSignal?: AbortSignal }, input: I) => Promise<unknown>;

export interface WaitOptions<O> {
  /** Gives up after this long: the caller says what to do then. */
  timeoutMs: number;
  /** The activity's cancellation signal: a cancelled wait rejects with its reason. */
  signal?: AbortSignal;
  /** For classifying a describe error: what pgmove was doing, and the spec field that fixes it. */
  action: string;
  field: string;
  /** Sees every describe answer; 'done' ends the wait as a success, an Error ends it with that error. */
  observe?: (output: O) => 'done' | Error | undefined;
}

/**
 * Runs an SDK waiter with pgmove's settings. Resolves 'done', 'timeout', or 'failed' (the waiter met
 * one of its failure states: the last answer went through `observe`, so the caller knows which one).
 */
export async function waitWith<C extends object, I, O>(waiter: Waiter<C, I>, client: C, input: I, options: WaitOptions<O>): Promise<'done' | 'timeout' | 'failed'> {
  const { signal, observe } = options;
  if (signal?.aborted) throw signal.reason;
  const stop = new AbortController();
  let verdict: 'done' | Error | undefined;
  const end = (v: 'done' | Error) => {
    verdict ??= v;
    stop.abort();
  };
  const onCancel = () => stop.abort();
  signal?.addEventListener('abort', onCancel, { once: true });
  // The waiter calls client.send(describe command): this client sees its answers and errors first.
  const send = (client as unknown as { send: (command: unknown) => Promise<O> }).send.bind(client);
  const watched = Object.create(client, {
    send: {
      value: async (command: unknown) => {
        try {
          const output = await send(command);
          const v = observe?.(output);
          if (v) end(v);
          return output;
        } catch (error) {
          if (!isAwsNotFound(error)) {
            const classified = classifyAwsError(error, options.action, options.field);
            if (classified instanceof ApplicationFailure) end(classified);
          }
          throw error;
        }
      },
    },
  }) as C;
  const delay = pollMs() / 1000;
  try {
    // minDelay = maxDelay: a fixed interval, no back-off.
    await waiter({ client: watched, maxWaitTime: Math.max(options.timeoutMs / 1000, 2 * delay), minDelay: delay, maxDelay: delay, abortSignal: stop.signal }, input);
    if (verdict instanceof Error) throw verdict;
    return 'done';
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    if (verdict === 'done') return 'done';
    if (verdict) throw verdict;
    const e = error as Error;
    if (e.name === 'TimeoutError') return 'timeout';
    // waitUntil… throws the waiter's result as JSON: {"state":"FAILURE",…}.
    if (e.message?.startsWith('{"state":"FAILURE"')) return 'failed';
    throw error;
  } finally {
    signal?.removeEventListener('abort', onCancel);
  }
}
