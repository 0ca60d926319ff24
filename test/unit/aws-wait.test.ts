/**
 * waitWith (src/aws/wait.ts) around a real SDK waiter (waitUntilDBInstanceAvailable) and a scripted
 * RDS client: the fixed poll interval, every answer seen by observe, the waiter's failure and timeout
 * states, cancellation through the activity's signal, and a describe error retrying cannot fix.
 */
import { RDSClient, waitUntilDBInstanceAvailable, type DescribeDBInstancesCommandOutput } from '@aws-sdk/client-rds';
import { ApplicationFailure } from '@temporalio/common';
import { waitWith } from '../../src/aws/wait';

beforeAll(() => {
  process.env.PGMOVE_AWS_POLL_MS = '20';
});
afterAll(() => {
  delete process.env.PGMOVE_AWS_POLL_MS;
});

/** A client whose describe answers are the given statuses in turn (the last one repeats); an Error entry is thrown. */
function scripted(answers: (string | Error)[]): { client: RDSClient; calls: () => number } {
  let calls = 0;
  const client = new RDSClient({ region: 'eu-west-1', credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
  client.send = (async () => {
    const answer = answers[Math.min(calls++, answers.length - 1)]!;
    if (answer instanceof Error) throw answer;
    return { DBInstances: [{ DBInstanceIdentifier: 'db', DBInstanceStatus: answer }], $metadata: {} };
  }) as unknown as RDSClient['send'];
  return { client, calls: () => calls };
}

const options = { action: 'describing the DB instance', field: 'target.provision' };

test('polls until available, every answer observed', async () => {
  const { client, calls } = scripted(['creating', 'backing-up', 'available']);
  const seen: string[] = [];
  const outcome = await waitWith(waitUntilDBInstanceAvailable, client, { DBInstanceIdentifier: 'db' }, {
    ...options,
    timeoutMs: 10_000,
    observe: (o: DescribeDBInstancesCommandOutput) => (seen.push(o.DBInstances![0]!.DBInstanceStatus!), undefined),
  });
  expect(outcome).toBe('done');
  expect(seen).toEqual(['creating', 'backing-up', 'available']);
  expect(calls()).toBe(3);
});

test("the waiter's failure state (deleting) is 'failed'; its time limit is 'timeout'", async () => {
  expect(await waitWith(waitUntilDBInstanceAvailable, scripted(['creating', 'deleting']).client, { DBInstanceIdentifier: 'db' }, { ...options, timeoutMs: 10_000 })).toBe('failed');
  expect(await waitWith(waitUntilDBInstanceAvailable, scripted(['creating']).client, { DBInstanceIdentifier: 'db' }, { ...options, timeoutMs: 300 })).toBe('timeout');
});

test("observe ends the wait: an Error with that error, 'done' as a success", async () => {
  const stop = new Error('storage-full');
  const failing = waitWith(waitUntilDBInstanceAvailable, scripted(['creating', 'storage-full']).client, { DBInstanceIdentifier: 'db' }, {
    ...options,
    timeoutMs: 10_000,
    observe: (o: DescribeDBInstancesCommandOutput) => (o.DBInstances![0]!.DBInstanceStatus === 'storage-full' ? stop : undefined),
  });
  await expect(failing).rejects.toBe(stop);
  const accepted = await waitWith(waitUntilDBInstanceAvailable, scripted(['creating', 'odd']).client, { DBInstanceIdentifier: 'db' }, {
    ...options,
    timeoutMs: 10_000,
    observe: (o: DescribeDBInstancesCommandOutput) => (o.DBInstances![0]!.DBInstanceStatus === 'odd' ? 'done' : undefined),
  });
  expect(accepted).toBe('done');
});

test("cancellation rejects with the signal's reason, at once", async () => {
  const controller = new AbortController();
  const reason = new Error('activity cancelled');
  setTimeout(() => controller.abort(reason), 100);
  const started = Date.now();
  await expect(waitWith(waitUntilDBInstanceAvailable, scripted(['creating']).client, { DBInstanceIdentifier: 'db' }, { ...options, timeoutMs: 60_000, signal: controller.signal })).rejects.toBe(reason);
  expect(Date.now() - started).toBeLessThan(5000);
});

test('a describe error retrying cannot fix ends the wait, classified; a not-found answer is waited through', async () => {
  const denied = Object.assign(new Error('not authorized'), { name: 'AccessDenied', $fault: 'client', $metadata: { httpStatusCode: 403 } });
  const error = await waitWith(waitUntilDBInstanceAvailable, scripted(['creating', denied]).client, { DBInstanceIdentifier: 'db' }, { ...options, timeoutMs: 10_000 }).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(ApplicationFailure);
  expect((error as ApplicationFailure).type).toBe('AwsPermissionDenied');
  const notFound = Object.assign(new Error('no such instance'), { name: 'DBInstanceNotFoundFault', $fault: 'client', $metadata: { httpStatusCode: 404 } });
  expect(await waitWith(waitUntilDBInstanceAvailable, scripted([notFound, notFound, 'available']).client, { DBInstanceIdentifier: 'db' }, { ...options, timeoutMs: 10_000 })).toBe('done');
});
