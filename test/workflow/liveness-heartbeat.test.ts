/**
 * The worker's liveness interceptor: every pgmove activity runs with a heartbeat timeout so that a
 * killed worker is noticed in seconds. An activity that never heartbeats itself must still survive a
 * heartbeat timeout far shorter than its runtime, and an activity that reports progress must keep
 * its own details (the interceptor stays silent for it). Also checks that no workflow proxies an
 * activity without a heartbeat timeout.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NativeConnection, Worker } from '@temporalio/worker';
import { defaultPayloadConverter } from '@temporalio/common';
import * as fixtures from './fixtures/liveness-activities';
import { activityInterceptors } from '../../worker/interceptors';
import { TestStack } from '../helpers/stack';

const stack = new TestStack();
let connection: NativeConnection | undefined;
let worker: Worker | undefined;
let running: Promise<void> | undefined;

beforeAll(async () => {
  await stack.startTemporal();
  connection = await NativeConnection.connect({ address: stack.temporal!.address });
  worker = await Worker.create({
    connection,
    taskQueue: stack.taskQueue,
    workflowsPath: require.resolve('./fixtures/liveness-workflows'),
    activities: fixtures,
    interceptors: { activity: activityInterceptors },
    maxHeartbeatThrottleInterval: '2s',
    defaultHeartbeatThrottleInterval: '2s',
  });
  running = worker.run();
});

afterAll(async () => {
  if (worker?.getState() === 'RUNNING') worker.shutdown();
  await running?.catch(() => undefined);
  await connection?.close();
  await stack.stop();
});

jest.setTimeout(120_000);

test('an activity that never heartbeats outlives a heartbeat timeout of a third of its runtime, on its first attempt', async () => {
  const handle = await stack.client!.workflow.start('quietActivity', { taskQueue: stack.taskQueue, workflowId: 'quiet', args: [6000] });
  expect(await handle.result()).toBe('quiet done');
  const started = ((await handle.fetchHistory()).events ?? []).filter((e) => e.activityTaskStartedEventAttributes);
  expect(started.map((e) => e.activityTaskStartedEventAttributes!.attempt)).toEqual([1]);
});

test('an activity with its own progress heartbeats keeps its details', async () => {
  const handle = await stack.client!.workflow.start('reportingActivity', { taskQueue: stack.taskQueue, workflowId: 'reporting', args: [6000] });
  const seen: unknown[] = [];
  const done = handle.result();
  let finished = false;
  void done.finally(() => (finished = true));
  while (!finished) {
    const pending = (await handle.describe()).raw.pendingActivities ?? [];
    const payloads = pending[0]?.heartbeatDetails?.payloads;
    if (payloads?.length) seen.push(defaultPayloadConverter.fromPayload(payloads[0]!));
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  expect(await done).toBe('reporting done');
  expect(seen.length).toBeGreaterThan(5);
  for (const details of seen) expect(details).toEqual({ step: expect.any(Number) });
});

test('every activity a workflow proxies has a heartbeat timeout', () => {
  const dir = join(__dirname, '..', '..', 'workflows');
  const missing: string[] = [];
  let proxies = 0;
  let checked = 0;
  for (const file of readdirSync(dir).filter((name) => name.endsWith('.ts'))) {
    const source = readFileSync(join(dir, file), 'utf8');
    proxies += source.match(/proxyActivities<[^>]+>\(/g)?.length ?? 0;
    for (const match of source.matchAll(/proxyActivities<[^>]+>\(\{([^}]*(\{[^}]*\}[^}]*)*)\}\)/g)) {
      checked += 1;
      if (!match[1]!.includes('heartbeatTimeout')) missing.push(`${file}: ${match[0].slice(0, 80)}`);
    }
  }
  expect(missing).toEqual([]);
  // Every proxy was parsed (none slipped past the pattern), and there are many.
  expect(checked).toBe(proxies);
  expect(proxies).toBeGreaterThan(10);
});
