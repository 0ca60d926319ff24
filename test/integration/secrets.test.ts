/**
 * Secrets on a real worker. A spec cannot make the worker send a secret the operator did not allow to a
 * host of the spec author's choice (refused before any connection); and a password that looks like an
 * ordinary word, echoed by a failing switch hook, appears neither in the workflow history, nor in the
 * status, nor in the worker's log.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { migrationFailure, startMigration } from '../helpers/migration';
import { createOnlineTarget, createPgbenchSource, waitForStatus } from '../helpers/online';
import { abortSignal, statusQuery } from '../../workflows/messages';
import type { MigrationSpecInput } from '../../src/spec';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
/** Outside every allowed place: a secret of someone else on the worker's machine. */
const otherDir = mkdtempSync(join(tmpdir(), 'pgmove-not-allowed-'));

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await stack.startWorker();
});

afterAll(async () => {
  rmSync(otherDir, { recursive: true, force: true });
  await stack.stop();
});

/** Every string and decoded payload of a workflow's history. */
async function historyText(workflowId: string): Promise<string> {
  const history = await stack.client!.workflow.getHandle(workflowId).fetchHistory();
  const out: string[] = [];
  const walk = (value: unknown): void => {
    if (value instanceof Uint8Array) out.push(Buffer.from(value).toString('utf8'));
    else if (typeof value === 'string') out.push(value);
    else if (value && typeof value === 'object') for (const v of Object.values(value)) walk(v);
  };
  walk(history);
  return out.join('\n');
}

const workerLog = (): string => readFileSync(stack.workers[0]!.logFile, 'utf8');

test('a reference the operator did not allow: refused before any connection, naming the kind and the setting', async () => {
  const stolen = join(otherDir, 'token');
  writeFileSync(stolen, 'gooseberry\n');
  // The spec author's own "source": it would receive the password in a cleartext password exchange.
  const connections: string[] = [];
  const trap: Server = createServer((socket) => {
    connections.push(`${socket.remoteAddress}`);
    socket.destroy();
  });
  await new Promise<void>((resolve) => trap.listen(0, '127.0.0.1', resolve));
  try {
    const port = (trap.address() as { port: number }).port;
    const to = await createOnlineTarget(target, 'refused');
    const handle = await startMigration(stack, {
      id: 'secret-not-allowed',
      source: { uri: `postgresql://postgres@127.0.0.1:${port}/postgres`, password: `file:${stolen}` },
      target: { uri: to.uri, password: stack.secretFile('refused-t', to.password) },
      method: 'dump',
    } as MigrationSpecInput);
    const failure = await migrationFailure(handle);
    expect(failure.type).toBe('SecretNotAllowed');
    expect(failure.nonRetryable).toBe(true);
    expect(failure.message).toContain(`source.password: this worker does not allow the file: secret reference file:${stolen}; nothing was written`);
    expect(failure.message).toContain('PGMOVE_ALLOWED_SECRETS');
    expect(connections).toEqual([]);
    expect(await historyText(handle.workflowId)).not.toContain('gooseberry');
    expect(workerLog()).not.toContain('gooseberry');
  } finally {
    await new Promise<void>((resolve) => trap.close(() => resolve()));
  }
});

test('a plain-word password echoed by a failing switch hook: not in the history, the status or the worker log', async () => {
  const PASSWORD = 'marmalade';
  const from = await createPgbenchSource(source, 'app', 1);
  const to = await createOnlineTarget(target, 'echoed');
  await adminQuery(target, 'postgres', `ALTER ROLE migrator PASSWORD '${PASSWORD}'`);
  // A careless hook: prints its environment and the password file, then fails.
  const hook = ['sh', '-c', 'env; echo "connecting with $(cat "$PGMOVE_TARGET_PASSWORD_FILE")" >&2; exit 3'];
  const handle = await startMigration(stack, {
    id: 'secret-echoed',
    source: { uri: from.uri, password: stack.secretFile('echoed-s', from.password) },
    target: { uri: to.uri, password: stack.secretFile('echoed-t', PASSWORD) },
    method: 'logical',
    logical: { replicaIdentityFull: true, statusInterval: '1s' },
    cutover: { autoCutover: true, switchHook: hook, sourceAfterSwitch: 'writable' },
  } as MigrationSpecInput);
  const status = await waitForStatus(handle, 'the failed cutover attempt', (s) => s.cutovers?.[0]?.outcome === 'failed', 240_000);
  const statusText = JSON.stringify(status);
  expect(statusText).toContain('cutover.switchHook failed');
  expect(statusText).toContain('connecting with [redacted]');
  expect(statusText).not.toContain(PASSWORD);
  await handle.signal(abortSignal, { reason: 'test done' });
  await handle.result().catch(() => undefined);
  expect(JSON.stringify(await handle.query(statusQuery))).not.toContain(PASSWORD);
  const history = await historyText(handle.workflowId);
  expect(history).toContain('connecting with [redacted]');
  expect(history).not.toContain(PASSWORD);
  expect(workerLog()).not.toContain(PASSWORD);
});
