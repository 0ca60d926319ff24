/**
 * Workflow logic on Temporal's time-skipping test server (real activities, real PostgreSQL): a target
 * whose credentials stop working after pre-flight makes the copy fail; the retries' backoff is skipped,
 * the migration fails after `retries.maximumAttempts`, the source is unfrozen, and the status names
 * what cleanup could not do.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { WorkflowFailedError } from '@temporalio/client';
import * as activities from '../../activities';
import { activityInterceptors } from '../../worker/interceptors';
import { statusQuery } from '../../workflows/messages';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { createBigDatabase, databaseAccessState } from '../helpers/migration';
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
  await createBigDatabase(source, 'retrydb', 1000);
  await adminQuery(target, 'postgres', 'CREATE DATABASE retrydb');
});

afterAll(async () => {
  await env?.teardown();
  await stack.stop();
});

test('a target that rejects the copy: retried with backoff, then failed cleanly', async () => {
  const accessBefore = await databaseAccessState(source, 'retrydb');
  const targetSecret = stack.secretFile('target', target.superuserPassword);
  const worker = await Worker.create({
    connection: env.nativeConnection,
    taskQueue: 'retries',
    workflowsPath: require.resolve('../../workflows'),
    interceptors: { activity: activityInterceptors },
    activities: {
      ...activities,
      // Someone rotates the target's password between pre-data and the copy (the frozen offline copy
      // stores its plan on the target first; the other paths plan in the worker).
      storeCopyPlan: async (...args: Parameters<typeof activities.storeCopyPlan>) => {
        await adminQuery(target, 'postgres', `ALTER ROLE postgres PASSWORD 'rotated-elsewhere'`);
        return activities.storeCopyPlan(...args);
      },
      planCopy: async (...args: Parameters<typeof activities.planCopy>) => {
        await adminQuery(target, 'postgres', `ALTER ROLE postgres PASSWORD 'rotated-elsewhere'`);
        return activities.planCopy(...args);
      },
    },
  });
  const outcome = await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('migrateDatabase', {
      taskQueue: 'retries',
      workflowId: 'retries-exhausted',
      args: [
        {
          source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/retrydb`, password: stack.secretFile('source', source.superuserPassword) },
          method: 'dump',
          target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/retrydb`, password: targetSecret },
          retries: { maximumAttempts: 3 },
          searchAttributes: false, // the time-skipping server has no custom search attributes
        },
      ],
    });
    const error = await handle.result().then(() => undefined, (e: unknown) => e);
    await waitFor('the status to be final', async () => (await handle.query(statusQuery)).phase === 'failed', 10_000);
    const history = await handle.fetchHistory();
    const copyAttempts = (history.events ?? []).filter((e) => e.activityTaskStartedEventAttributes).map((e) => e.activityTaskStartedEventAttributes!.attempt ?? 1);
    return { error, status: await handle.query(statusQuery), maxAttempt: Math.max(...copyAttempts) };
  });
  expect(outcome.error).toBeInstanceOf(WorkflowFailedError);
  // The copy was tried retries.maximumAttempts times (the backoff between tries was skipped).
  expect(outcome.maxAttempt).toBe(3);
  const { status } = outcome;
  expect(status.phase).toBe('failed');
  expect(status.errors.join('\n')).toContain('password authentication failed');
  // Cleanup unfroze the source, but could not reset the target with bad credentials, and says so.
  expect(await databaseAccessState(source, 'retrydb')).toEqual(accessBefore);
  expect(status.errors.join('\n')).toContain('cleanup failed, still owed');
  expect(status.cleanupOwed).toContain(OWED.target);
});
