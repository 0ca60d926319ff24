/**
 * SIGKILL the worker while three databases of a cluster migration run (concurrency 3), start a new
 * one: every database completes and is equal, each child was started once, and inside each child every
 * copy unit was scheduled once (an interrupted one is retried as the same activity, never copied again
 * beside its first copy).
 */
import { defaultPayloadConverter } from '@temporalio/common';
import { TestStack, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { createBigDatabase, tableFingerprint } from '../helpers/migration';
import { waitForCluster } from '../helpers/cluster';
import { stopWorkerProcess } from '../../src/dev/worker-process';
import type { ClusterResult } from '../../workflows/migrate-cluster';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
const DATABASES = ['crash_a', 'crash_b', 'crash_c'];

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  for (const database of DATABASES) await createBigDatabase(source, database, 200_000);
});

afterAll(() => stack.stop());

// Three databases copying while a worker restarts: minutes, not seconds, on a loaded 2-core machine.
jest.setTimeout(900_000);

test('a worker killed while three children run and one copies: all complete, equal, nothing started or copied twice', async () => {
  const env = { PGMOVE_TEST_SOURCE_PASSWORD: source.superuserPassword };
  const first = await stack.startWorker(env);
  const handle = await stack.client!.workflow.start('migrateCluster', {
    taskQueue: stack.taskQueue,
    workflowId: 'cluster-crash',
    args: [
      {
        id: 'cluster-crash',
        source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/postgres`, password: 'env:PGMOVE_TEST_SOURCE_PASSWORD' },
        target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/postgres`, password: stack.secretFile('target', target.superuserPassword) },
        concurrency: 3,
        roles: { migrate: false },
        defaults: { method: 'dump', jobs: 1, copy: { splitTablesLargerThanMB: 3, batchSmallTablesUpToMB: 1 }, timeouts: { heartbeat: '5s' } },
        databases: DATABASES,
      },
    ],
  });
  // Three children running at once (concurrency 3), at least one of them copying. Waiting for all three
  // to copy at the same instant could miss a short overlap on a loaded machine.
  await waitForCluster(handle, 'three children running, one copying', (s) => s.databases.length === 3 && s.databases.every((r) => r.status === 'running') && s.databases.some((r) => r.phase === 'copy'), 240_000);
  await stopWorkerProcess(first, 'SIGKILL');
  await stack.startWorker(env);
  const result = (await handle.result()) as ClusterResult;
  expect(result.status.databases.map((r) => r.status)).toEqual(['completed', 'completed', 'completed']);

  for (const database of DATABASES) {
    const expected = await tableFingerprint(source, database, 'public.big');
    expect(await tableFingerprint(target, database, 'public.big')).toEqual(expected);
    expect(expected.keys).toBe('200000');
  }
  // The parent started each child once.
  const parentEvents = (await handle.fetchHistory()).events ?? [];
  const started = parentEvents.map((e) => e.startChildWorkflowExecutionInitiatedEventAttributes?.workflowId).filter(Boolean);
  expect(started.sort()).toEqual(DATABASES.map((d) => `cluster-crash.${d}`));
  // Inside each child: every copy unit scheduled once, each completed once, one run per child.
  let retried = 0;
  for (const database of DATABASES) {
    const events = (await stack.client!.workflow.getHandle(`cluster-crash.${database}`).fetchHistory()).events ?? [];
    const units: string[] = [];
    for (const event of events) {
      const scheduled = event.activityTaskScheduledEventAttributes;
      if (['copyUnit', 'copyPlannedUnit'].includes(scheduled?.activityType?.name ?? '')) {
        const input = defaultPayloadConverter.fromPayload<{ unit?: { id: string }; index?: number }>(scheduled!.input!.payloads![0]!);
        units.push(input.unit?.id ?? `#${input.index}`);
      }
      if ((event.activityTaskStartedEventAttributes?.attempt ?? 1) > 1) retried += 1;
    }
    expect(units.length).toBeGreaterThan(2);
    expect(new Set(units).size).toBe(units.length);
    expect(events.filter((e) => e.activityTaskCompletedEventAttributes).length).toBe(events.filter((e) => e.activityTaskScheduledEventAttributes).length);
    expect(events.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'preData').length).toBe(1);
  }
  // The kill interrupted at least one activity, which ran again as a retry of itself.
  expect(retried).toBeGreaterThanOrEqual(1);
});
