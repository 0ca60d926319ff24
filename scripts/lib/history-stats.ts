/**
 * What a workflow's runs weigh in Temporal: events per run and the largest single payload (bytes of
 * data and metadata as stored), found by walking every run's recorded history.
 */
import type { Client } from '@temporalio/client';

export interface RunStats {
  runId: string;
  events: number;
  largestPayloadBytes: number;
  /** Where the largest payload is (event type and its number). */
  largestPayloadAt: string;
}

function payloadSizes(value: unknown, found: number[]): void {
  if (!value || typeof value !== 'object' || value instanceof Uint8Array) return;
  const payload = value as { data?: unknown; metadata?: Record<string, Uint8Array> };
  if (payload.data instanceof Uint8Array) {
    const metadata = Object.entries(payload.metadata ?? {}).reduce((n, [k, v]) => n + k.length + (v?.length ?? 0), 0);
    found.push(payload.data.length + metadata);
    return;
  }
  for (const child of Object.values(value)) payloadSizes(child, found);
}

/** Every run of the workflow id (oldest first: the list is by start time), with its size figures. */
export async function workflowRunStats(client: Client, workflowId: string): Promise<RunStats[]> {
  const runIds: string[] = [];
  for await (const run of client.workflow.list({ query: `WorkflowId = '${workflowId.replace(/'/g, "\\'")}'` })) runIds.push(run.runId);
  const stats: RunStats[] = [];
  for (const runId of runIds.reverse()) {
    const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
    let largest = 0;
    let at = '';
    for (const event of history.events ?? []) {
      const sizes: number[] = [];
      payloadSizes(event, sizes);
      const max = Math.max(0, ...sizes);
      if (max > largest) {
        largest = max;
        at = `event ${String(event.eventId)} ${Object.keys(event).find((k) => k.endsWith('EventAttributes')) ?? ''}`;
      }
    }
    stats.push({ runId, events: history.events?.length ?? 0, largestPayloadBytes: largest, largestPayloadAt: at });
  }
  return stats;
}
