/**
 * Online-migration test helpers: pgbench as the application (scripts/lib/pgbench), what replication
 * leaves on a server, replica identities, application-role clients, waiting for a status.
 */
import { Client } from 'pg';
import type { WorkflowHandle } from '@temporalio/client';
import { adminQuery, type ClusterHandle, type TestStack } from './stack';
import { waitFor } from '../../src/dev/ports';
import { APP_PASSWORD, startPgbench as startPgbenchIn, type PgbenchRun } from '../../scripts/lib/pgbench';
import { statusQuery } from '../../workflows/messages';
import type { MigrationStatus } from '../../src/model';

export { APP_PASSWORD, STATEMENT_LOGGING_SETTINGS, createOnlineTarget, createPgbenchSource, pgbenchSums, type OnlineDatabase, type PgbenchRun } from '../../scripts/lib/pgbench';

/** pgbench as the application, its script kept in the test's directory. */
export function startPgbench(stack: TestStack, cluster: ClusterHandle, database: string, clients = 4, rate = 200): PgbenchRun {
  return startPgbenchIn(stack.dir, cluster, database, clients, rate);
}

/** Slots, publications and subscriptions on a server (all databases): [] means nothing left behind. */
export async function replicationLeftovers(cluster: ClusterHandle, database: string): Promise<string[]> {
  const rows = await adminQuery<{ o: string }>(
    cluster,
    database,
    `SELECT 'slot ' || slot_name AS o FROM pg_replication_slots
     UNION ALL SELECT 'publication ' || pubname FROM pg_publication
     UNION ALL SELECT 'subscription ' || subname FROM pg_subscription`,
  );
  return rows.map((r) => r.o).sort();
}

/** Replica identity of every table in public (d, n, f, i). */
export async function replicaIdentities(cluster: ClusterHandle, database: string): Promise<Record<string, string>> {
  const rows = await adminQuery<{ t: string; r: string }>(cluster, database, `SELECT relname AS t, relreplident AS r FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1`);
  return Object.fromEntries(rows.map((r) => [r.t, r.r]));
}

/** A client of the application role, connected now. */
export async function appClient(cluster: ClusterHandle, database: string): Promise<Client> {
  const client = new Client({ host: cluster.host, port: cluster.port, database, user: 'app', password: APP_PASSWORD });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

export async function waitForStatus(handle: WorkflowHandle, what: string, check: (status: MigrationStatus) => boolean, timeoutMs = 120_000): Promise<MigrationStatus> {
  let last: MigrationStatus | undefined;
  return waitFor(what, async () => {
    last = await handle.query(statusQuery);
    return check(last) ? last : undefined;
  }, timeoutMs, 100).catch((error: Error) => {
    throw new Error(`${error.message}; last status: ${JSON.stringify({ phase: last?.phase, replication: last?.replication, cutovers: last?.cutovers, errors: last?.errors, warnings: last?.warnings })}`);
  });
}
