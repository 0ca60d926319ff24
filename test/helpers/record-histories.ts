/**
 * Records the histories of every workflow a test file ran, for the replay test (test/replay/). Off
 * unless PGMOVE_RECORD_HISTORIES names a directory: `npm run record-histories` sets it and runs the
 * test files that cover each workflow path (scripts/record-histories.sh).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { Client } from '@temporalio/client';

/** The file name of one recorded run: test file, workflow id and run id, all filesystem-safe. */
export function historyFileName(testFile: string, workflowId: string, runId: string): string {
  const safe = (text: string) => text.replace(/[^A-Za-z0-9._-]+/g, '_');
  return `${safe(basename(testFile).replace(/\.test\.ts$/, ''))}--${safe(workflowId)}--${runId.slice(0, 8)}.json`;
}

/** Each test file has a Temporal server of its own: every run on it is this file's. */
export async function recordHistories(client: Client): Promise<number> {
  const dir = process.env.PGMOVE_RECORD_HISTORIES;
  if (!dir) return 0;
  const testFile = expect.getState().testPath ?? 'unknown';
  mkdirSync(dir, { recursive: true });
  let recorded = 0;
  for await (const execution of client.workflow.list()) {
    const history = await client.workflow.getHandle(execution.workflowId, execution.runId).fetchHistory();
    writeFileSync(join(dir, historyFileName(testFile, execution.workflowId, execution.runId)), historyToJSON(history) + '\n');
    recorded += 1;
  }
  return recorded;
}
