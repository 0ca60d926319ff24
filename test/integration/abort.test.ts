/**
 * Abort during the copy (with the plain temporal CLI, and with `pgmove abort`): the copy stops (no
 * pgmove session left on either server), the target is reset, the source unfrozen, and the workflow
 * ends with the reason.
 */
import { spawnSync } from 'node:child_process';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { createBigDatabase, databaseAccessState, migrationFailure, pgmoveCli, startMigration, userObjects } from '../helpers/migration';
import { snapshot } from '../../src/cli/status-view';
import { statusQuery } from '../../workflows/messages';
import { temporalCli } from '../../src/dev/temporal-server';
import { waitFor } from '../../src/dev/ports';
import type { WorkflowHandle } from '@temporalio/client';
import type { MigrationStatus } from '../../src/model';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await stack.startWorker();
  await createBigDatabase(source, 'abortdb', 4_000_000);
  await adminQuery(target, 'postgres', 'CREATE DATABASE abort1');
  await adminQuery(target, 'postgres', 'CREATE DATABASE abort2');
});

afterAll(() => stack.stop());

async function startAndWaitForCopy(id: string, database: string): Promise<WorkflowHandle> {
  const handle = await startMigration(stack, {
    id,
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/abortdb`, password: stack.secretFile(`${id}-s`, source.superuserPassword) },
    method: 'dump',
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/${database}`, password: stack.secretFile(`${id}-t`, target.superuserPassword) },
    jobs: 1,
    copy: { splitTablesLargerThanMB: 100000, batchSmallTablesUpToMB: 1 },
  });
  // Wait until a COPY is streaming rows (heartbeat shows bytes) for the big table.
  await waitFor('the big table to be copying', async () => {
    const view = await snapshot(handle);
    return view.inFlight.some((a) => (a.activity === 'copyUnit' || a.activity === 'copyPlannedUnit') && a.details?.table === 'public.big' && Number(a.details.bytes) > 0);
  }, 120_000, 50);
  return handle;
}

async function expectCleanAbort(handle: WorkflowHandle, database: string, reason: string, accessBefore: unknown): Promise<MigrationStatus> {
  const failure = await migrationFailure(handle);
  expect(failure.type).toBe('Aborted');
  expect(failure.message).toContain(reason);
  const status = await handle.query(statusQuery);
  expect(status.phase).toBe('aborted');
  expect(status.cleanupOwed).toEqual([]);
  // The COPY streams ended: no pgmove session remains on either server.
  for (const cluster of [source, target]) {
    await waitFor('pgmove sessions to end', async () => {
      const rows = await adminQuery<{ n: number }>(cluster, 'postgres', `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'pgmove%'`);
      return rows[0]?.n === 0;
    }, 15_000);
  }
  expect(await userObjects(target, database)).toEqual([]);
  expect(await databaseAccessState(source, 'abortdb')).toEqual(accessBefore);
  return status;
}

test('abort signal from the temporal CLI during the copy', async () => {
  const accessBefore = await databaseAccessState(source, 'abortdb');
  const handle = await startAndWaitForCopy('abort-temporal-cli', 'abort1');
  // While frozen, the source refuses CONNECT to other roles and defaults to read-only.
  expect((await databaseAccessState(source, 'abortdb')).settings).toContain('default_transaction_read_only=on');
  const signal = spawnSync(temporalCli(), ['workflow', 'signal', '--address', stack.temporal!.address, '--workflow-id', 'abort-temporal-cli', '--name', 'abort', '--input', '{"reason":"wrong target chosen"}'], { encoding: 'utf8' });
  expect(signal.status).toBe(0);
  await expectCleanAbort(handle, 'abort1', 'wrong target chosen', accessBefore);
});

test('pgmove abort during the copy', async () => {
  const accessBefore = await databaseAccessState(source, 'abortdb');
  const handle = await startAndWaitForCopy('abort-pgmove-cli', 'abort2');
  const cli = pgmoveCli(stack, ['abort', 'abort-pgmove-cli', '--reason', 'maintenance window over']);
  expect(cli.code).toBe(0);
  await expectCleanAbort(handle, 'abort2', 'maintenance window over', accessBefore);
});
