/**
 * Compensations never skip each other: a migration with the privilege hack fails after post-data, and
 * the unfreeze — the first compensation — fails permanently (injected). Every other compensation still
 * runs: the target is reset, the scratch directory is gone, and the elevation is reverted (pg_hba.conf
 * byte-identical, the role as before); the failed unfreeze is reported with the command that finishes
 * it by hand. Before the "independent-compensations" patch the failed unfreeze ended the sequence and
 * left the trust line and the granted SUPERUSER behind. Runs on Temporal's time-skipping server with the
 * real activities (two of them wrapped to fail) against real PostgreSQL.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { Context } from '@temporalio/activity';
import * as activities from '../../activities';
import { activityInterceptors } from '../../worker/interceptors';
import { statusQuery } from '../../workflows/messages';
import { renderStatusMarkdown } from '../../workflows/status-markdown';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { createBigDatabase, databaseAccessState, userObjects } from '../helpers/migration';
import { createPlainRole, elevationLeftovers, requirePasswordsEverywhere, roleState, sha256 } from '../helpers/elevation';
import { waitFor } from '../../src/dev/ports';
import { OWED } from '../../src/model';

const TEST_SERVER = join(__dirname, '..', '..', '.tools', 'venv', 'bin', 'temporal-test-server');
const stack = new TestStack();
let env: TestWorkflowEnvironment;
let source: ClusterHandle;
let target: ClusterHandle;

beforeAll(async () => {
  if (!existsSync(TEST_SERVER)) throw new Error(`${TEST_SERVER} missing: run npm run setup`);
  env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path: TEST_SERVER } } });
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await requirePasswordsEverywhere(source);
  await createPlainRole(source, 'dumper', 'dumper-pw');
  await createBigDatabase(source, 'compdb', 5000);
  await adminQuery(target, 'postgres', 'CREATE DATABASE compdb');
});

afterAll(async () => {
  await env?.teardown();
  await stack.stop();
});

test('the unfreeze fails for good: the target reset, the scratch files and the elevation revert still run', async () => {
  const hba = join(source.dataDir, 'pg_hba.conf');
  const hbaBefore = sha256(hba);
  const roleBefore = await roleState(source, 'dumper');
  const accessBefore = await databaseAccessState(source, 'compdb');
  const migrationId = 'compensations-independent';
  const workDir = join(stack.dir, 'work');
  process.env.PGMOVE_WORK_DIR = workDir;
  const calls: string[] = [];
  const tracked = Object.fromEntries(
    Object.entries(activities).map(([name, fn]) => [
      name,
      async (...args: unknown[]) => {
        calls.push(name);
        return (fn as (...a: unknown[]) => unknown)(...args);
      },
    ]),
  );
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue: 'compensations',
    workflowsPath: require.resolve('../../workflows'),
    interceptors: { activity: activityInterceptors },
    activities: {
      ...tracked,
      syncSequences: async () => {
        calls.push('syncSequences');
        throw ApplicationFailure.nonRetryable('injected: the sequences step fails', 'Injected');
      },
      unfreezeSource: async () => {
        calls.push('unfreezeSource');
        throw ApplicationFailure.nonRetryable('injected: the unfreeze fails', 'Injected');
      },
    },
  });
  const outcome = await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('migrateDatabase', {
      taskQueue: 'compensations',
      workflowId: migrationId,
      args: [
        {
          source: {
            uri: `postgresql://dumper@127.0.0.1:${source.port}/compdb`,
            password: stack.secretFile('dumper', 'dumper-pw'),
            privilegeElevation: { backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') },
          },
          target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/compdb`, password: stack.secretFile('target', target.superuserPassword) },
          method: 'dump',
          freezeSource: true,
          timeouts: { heartbeat: '5s' },
          searchAttributes: false, // the time-skipping server has no custom search attributes
        },
      ],
    });
    const error = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    await waitFor('the status to be final', async () => (await handle.query(statusQuery)).phase === 'failed', 10_000);
    return { error, status: await handle.query(statusQuery) };
  });
  expect(outcome.error).toBeInstanceOf(WorkflowFailedError);
  const { status } = outcome;
  expect(status.errors.join('\n')).toContain('injected: the sequences step fails');
  // The unfreeze was tried once (non-retryable) and is reported with the command that finishes it.
  expect(calls.filter((name) => name === 'unfreezeSource')).toHaveLength(1);
  expect(status.cleanupOwed).toEqual([OWED.unfreeze]);
  expect(status.cleanupFailed).toEqual([{ step: OWED.unfreeze, error: expect.stringContaining('injected: the unfreeze fails'), byHand: `pgmove unfreeze ${migrationId}` }]);
  expect(renderStatusMarkdown(status)).toContain(`finish it with \`pgmove unfreeze ${migrationId}\``);
  // ...and the source is indeed still fenced: the injection took effect.
  expect(await databaseAccessState(source, 'compdb')).not.toEqual(accessBefore);
  // Every compensation after it ran: target reset, scratch files removed, elevation reverted.
  expect(calls).toEqual(expect.arrayContaining(['cleanup', 'revertPrivileges']));
  expect(calls.indexOf('revertPrivileges')).toBeGreaterThan(calls.indexOf('unfreezeSource'));
  expect(await userObjects(target, 'compdb')).toEqual([]);
  expect(existsSync(join(workDir, migrationId))).toBe(false);
  expect(status.privilegeElevation?.attributesSet).toContain('SUPERUSER');
  expect(status.privilegeElevation?.revertedAt).toBeDefined();
  expect(sha256(hba)).toBe(hbaBefore);
  expect(await roleState(source, 'dumper')).toEqual(roleBefore);
  expect(elevationLeftovers(source)).toEqual([]);
});

test('cancelled during the elevation: the revert starts only once the elevate activity has stopped', async () => {
  const hba = join(source.dataDir, 'pg_hba.conf');
  const hbaBefore = sha256(hba);
  const roleBefore = await roleState(source, 'dumper');
  const migrationId = 'compensations-cancel-elevation';
  process.env.PGMOVE_WORK_DIR = join(stack.dir, 'work');
  // A database of its own: the test before leaves compdb fenced on purpose.
  await createBigDatabase(source, 'canceldb', 1000);
  await adminQuery(target, 'postgres', 'CREATE DATABASE canceldb');
  const events: string[] = [];
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue: 'compensations-cancel',
    workflowsPath: require.resolve('../../workflows'),
    interceptors: { activity: activityInterceptors },
    activities: {
      ...activities,
      // The real elevation, then an activity that is slow to stop (as one mid-grant would be).
      elevatePrivileges: async (input: Parameters<typeof activities.elevatePrivileges>[0]) => {
        await activities.elevatePrivileges(input);
        events.push('elevated');
        try {
          await Context.current().sleep(600_000);
        } catch (error) {
          await new Promise((resolve) => setTimeout(resolve, 1500));
          events.push('elevate stopped');
          throw error;
        }
        throw new Error('not cancelled');
      },
      revertPrivileges: async (input: Parameters<typeof activities.revertPrivileges>[0]) => {
        events.push('revert started');
        return activities.revertPrivileges(input);
      },
    },
  });
  const error = await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('migrateDatabase', {
      taskQueue: 'compensations-cancel',
      workflowId: migrationId,
      args: [
        {
          source: {
            uri: `postgresql://dumper@127.0.0.1:${source.port}/canceldb`,
            password: stack.secretFile('dumper', 'dumper-pw'),
            privilegeElevation: { backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') },
          },
          target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/canceldb`, password: stack.secretFile('target', target.superuserPassword) },
          method: 'dump',
          timeouts: { heartbeat: '5s' },
          searchAttributes: false,
        },
      ],
    });
    await waitFor('the elevation to be in place', async () => events.includes('elevated'), 120_000);
    await handle.cancel();
    return handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
  });
  expect(error).toBeInstanceOf(WorkflowFailedError);
  expect(events).toEqual(['elevated', 'elevate stopped', 'revert started']);
  expect(sha256(hba)).toBe(hbaBefore);
  expect(await roleState(source, 'dumper')).toEqual(roleBefore);
  expect(elevationLeftovers(source)).toEqual([]);
});
