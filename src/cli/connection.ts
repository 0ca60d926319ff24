/** Temporal client for the CLI: TEMPORAL_ADDRESS, else the running dev stack's, else 127.0.0.1:7233. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { errorMessage } from '../error-text';

export const PROJECT_ROOT = join(__dirname, '..', '..');
export const STACK_DIR = process.env.PGMOVE_HOME ?? join(PROJECT_ROOT, '.pgmove');

export function temporalAddress(): string {
  if (process.env.TEMPORAL_ADDRESS) return process.env.TEMPORAL_ADDRESS;
  const stackFile = join(STACK_DIR, 'stack.json');
  if (existsSync(stackFile)) {
    const stack = JSON.parse(readFileSync(stackFile, 'utf8')) as { temporal?: { address?: string } };
    if (stack.temporal?.address) return stack.temporal.address;
  }
  return '127.0.0.1:7233';
}

export async function withTemporalClient<T>(fn: (client: Client) => Promise<T>): Promise<T> {
  const address = temporalAddress();
  let connection: Connection;
  try {
    connection = await Connection.connect({ address, connectTimeout: 5000 });
  } catch (error) {
    throw new Error(`cannot reach Temporal at ${address} (${errorMessage(error)}): start it with \`npx pgmove dev up\` or set TEMPORAL_ADDRESS`);
  }
  try {
    return await fn(new Client({ connection, namespace: process.env.TEMPORAL_NAMESPACE ?? 'default' }));
  } finally {
    await connection.close();
  }
}
