/** What the CLI reads from an ended migration's history: its type and the input it was started with. */
import { defaultPayloadConverter } from '@temporalio/common';
import type { Client } from '@temporalio/client';

export interface StartedMigration<T> {
  status: string;
  workflowType: string;
  /** The start input: references to secrets only, never a secret. */
  input?: T;
}

export async function startedMigration<T>(client: Client, id: string): Promise<StartedMigration<T>> {
  const handle = client.workflow.getHandle(id);
  const description = await handle.describe();
  const history = await handle.fetchHistory();
  const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  return { status: description.status.name, workflowType: description.type, input: payload ? defaultPayloadConverter.fromPayload<T>(payload) : undefined };
}
