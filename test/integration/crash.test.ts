/**
 * SIGKILL the worker in the middle of copying a large table, start a new one: the migration completes,
 * the data is equal, no row is duplicated, and the units finished before the crash were not copied again.
 */
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { createBigDatabase, startMigration, tableFingerprint } from '../helpers/migration';
import { statusQuery } from '../../workflows/messages';
import { waitFor } from '../../src/dev/ports';
import { stopWorkerProcess } from '../../src/dev/worker-process';
import type { MigrationResult } from '../../workflows/migrate-database';
import { defaultPayloadConverter } from '@temporalio/common';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await createBigDatabase(source, 'crashdb', 2_500_000);
  await adminQuery(target, 'postgres', 'CREATE DATABASE crashdb');
});

afterAll(() => stack.stop());

// A 2.5M-row copy, a kill, a second worker and a full comparison: room for a loaded 2-core machine.
jest.setTimeout(900_000);

test('a worker killed mid-copy: resumed, equal, nothing copied twice', async () => {
  const first = await stack.startWorker();
  const handle = await startMigration(stack, {
    id: 'crash-resume',
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/crashdb`, password: stack.secretFile('s', source.superuserPassword) },
    method: 'dump',
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/crashdb`, password: stack.secretFile('t', target.superuserPassword) },
    jobs: 2,
    copy: { splitTablesLargerThanMB: 10, batchSmallTablesUpToMB: 1 },
    timeouts: { heartbeat: '5s' },
  });
  // Kill once some ranges of the big table are done and others are still to copy.
  const atKill = await waitFor('some ranges of public.big copied', async () => {
    const status = await handle.query(statusQuery);
    const big = status.tables['public.big'];
    return big && big.unitsDone >= 2 && big.unitsDone <= big.units - 3 ? big : undefined;
  }, 300_000, 20);
  await stopWorkerProcess(first, 'SIGKILL');
  const killedAt = Date.now();
  await stack.startWorker();
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.validation?.ok).toBe(true);

  // Independent checks: same rows, no duplicate keys.
  const expected = await tableFingerprint(source, 'crashdb', 'public.big');
  expect(await tableFingerprint(target, 'crashdb', 'public.big')).toEqual(expected);
  expect(expected.rows).toBe('2500000');
  expect(expected.keys).toBe(expected.rows);

  // From the history: every unit was scheduled once; those finished before the kill ran exactly once,
  // and at least one unit was interrupted and retried.
  const history = await handle.fetchHistory();
  const events = history.events ?? [];
  const scheduled = new Map<string, { unit: string; attempt?: number; completedAt?: number }>();
  for (const event of events) {
    const id = Number(event.eventId);
    const scheduledAttrs = event.activityTaskScheduledEventAttributes;
    // copyPlannedUnit names its unit by index into the plan stored on the target (copyUnit: by the unit itself).
    if (['copyUnit', 'copyPlannedUnit'].includes(scheduledAttrs?.activityType?.name ?? '')) {
      const input = defaultPayloadConverter.fromPayload<{ unit?: { id: string }; index?: number }>(scheduledAttrs!.input!.payloads![0]!);
      scheduled.set(String(id), { unit: input.unit?.id ?? `#${input.index}` });
    }
    const started = event.activityTaskStartedEventAttributes;
    if (started && scheduled.has(String(started.scheduledEventId))) scheduled.get(String(started.scheduledEventId))!.attempt = started.attempt ?? 1;
    const completed = event.activityTaskCompletedEventAttributes;
    if (completed && scheduled.has(String(completed.scheduledEventId))) {
      const time = event.eventTime!;
      const unit = scheduled.get(String(completed.scheduledEventId))!;
      unit.completedAt = Number(time.seconds) * 1000 + Math.floor((time.nanos ?? 0) / 1e6);
      // A unit scheduled by index is named in its result.
      if (unit.unit.startsWith('#')) unit.unit = defaultPayloadConverter.fromPayload<{ unitId: string }>(completed.result!.payloads![0]!).unitId;
    }
  }
  const units = [...scheduled.values()];
  expect(new Set(units.map((u) => u.unit)).size).toBe(units.length);
  const bigUnits = units.filter((u) => u.unit.startsWith('range:public.big:'));
  expect(bigUnits.length).toBe(atKill.units);
  const before = units.filter((u) => u.completedAt !== undefined && u.completedAt < killedAt);
  expect(before.length).toBeGreaterThanOrEqual(2);
  for (const unit of before) expect(unit.attempt).toBe(1);
  expect(units.filter((u) => (u.attempt ?? 1) > 1).length).toBeGreaterThanOrEqual(1);
  for (const unit of units) expect(unit.completedAt).toBeDefined();
});
