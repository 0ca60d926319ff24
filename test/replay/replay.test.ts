/**
 * Worker upgrades: every recorded history (test/replay/histories/<date>-<commit>/, recorded from the real stack by
 * `npm run record-histories`) must replay against the current workflow code. A change to the commands
 * a workflow emits without a `patched()` guard fails here with a non-determinism error — the error a
 * migration syncing for days would hit when a new worker version picks it up.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker, bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { OWED } from '../../src/model';

const HISTORIES = join(__dirname, 'histories');
/** One directory per recording (<date>-<commit>): older ones are the runs older workers left open. */
const files = readdirSync(HISTORIES, { recursive: true, encoding: 'utf8' })
  .filter((name) => name.endsWith('.json'))
  .sort();
let bundle: WorkflowBundleWithSourceMap;

beforeAll(async () => {
  bundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../../workflows'), logger: undefined });
});

test('histories of every workflow path are recorded', () => {
  const workflowTypes = new Set(files.map((name) => workflowTypeOf(name)));
  for (const type of ['migrateDatabase', 'migrateCluster', 'cleanupMigration', 'unfreezeMigrationSource', 'recoverMigration']) {
    expect([...workflowTypes]).toContain(type);
  }
});

test.each(files)('%s replays against the current workflow code', async (name) => {
  const history = historyFromJSON(JSON.parse(readFileSync(join(HISTORIES, name), 'utf8')));
  const results: { error?: unknown }[] = [];
  for await (const result of Worker.runReplayHistories({ workflowBundle: bundle, replayName: name }, [{ history, workflowId: name }])) results.push(result);
  expect(results).toHaveLength(1);
  expect(results[0]!.error).toBeUndefined();
});

// A run continued as new from an older worker carries its status as that worker stored it.
test('what cleanup owes, as recorded runs stored it, is what the code owes (OWED in src/model.ts)', () => {
  const stored = new Set<string>();
  for (const name of files) collectCleanupOwed(JSON.parse(readFileSync(join(HISTORIES, name), 'utf8')), stored);
  expect(stored.size).toBeGreaterThan(0);
  const known: string[] = Object.values(OWED);
  expect([...stored].filter((owed) => !known.includes(owed))).toEqual([]);
});

/** Every `cleanupOwed` entry in a history's JSON payloads (base64 `data`: workflow inputs, results, continue-as-new). */
function collectCleanupOwed(value: unknown, into: Set<string>): void {
  if (Array.isArray(value)) return value.forEach((item) => collectCleanupOwed(item, into));
  if (!value || typeof value !== 'object') return;
  for (const [key, child] of Object.entries(value)) {
    if (key === 'cleanupOwed' && Array.isArray(child)) child.forEach((owed) => into.add(String(owed)));
    else if (key === 'data' && typeof child === 'string') collectCleanupOwed(decodedPayload(child), into);
    else collectCleanupOwed(child, into);
  }
}

function decodedPayload(data: string): unknown {
  try {
    return JSON.parse(Buffer.from(data, 'base64').toString('utf8'));
  } catch {
    return undefined; // not a JSON payload
  }
}

function workflowTypeOf(name: string): string {
  const json = JSON.parse(readFileSync(join(HISTORIES, name), 'utf8')) as { events: { workflowExecutionStartedEventAttributes?: { workflowType?: { name?: string } } }[] };
  return json.events[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name ?? 'unknown';
}
