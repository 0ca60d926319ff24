/**
 * The source's password travels in CREATE SUBSCRIPTION's connection string: it must reach neither the
 * target server's log nor pg_stat_statements. The target logs like a strict production server
 * (log_min_error_statement = error, log_statement = ddl, log_min_duration_statement = 0, a logging
 * collector, pg_stat_statements with track_utility) and the source's password is a string of its own.
 * (1) a target role that may not change those settings is refused in pre-flight, before the probe ever
 * sends the password; (2) with SET ON PARAMETER granted, a probe that fails (the target cannot reach
 * the source) is refused without the statement in the log; (3) a migration that syncs and cuts over.
 * After each, the target's log files and pg_stat_statements are searched for the password.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { migrationFailure, startMigration, userObjects } from '../helpers/migration';
import { createOnlineTarget, createPgbenchSource, replicationLeftovers, waitForStatus, type OnlineDatabase } from '../helpers/online';
import { freePort, waitFor } from '../../src/dev/ports';
import { requestCutoverUpdate } from '../../workflows/messages';
import type { MigrationStatus } from '../../src/model';

const SOURCE_SECRET = `src-only-${Math.random().toString(36).slice(2)}-pw`;
const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
let sourceDb: OnlineDatabase;
let targetDb: OnlineDatabase;

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN, {
    logging_collector: 'on',
    log_directory: "'log'",
    log_min_error_statement: 'error',
    log_statement: "'ddl'",
    log_min_duration_statement: '0',
    shared_preload_libraries: "'pg_stat_statements'",
    'pg_stat_statements.track_utility': 'on',
  });
  await stack.startWorker();
  sourceDb = await createPgbenchSource(source, 'shop', 1);
  await adminQuery(source, 'postgres', `ALTER ROLE migrator PASSWORD '${SOURCE_SECRET}'`);
  sourceDb = { ...sourceDb, password: SOURCE_SECRET };
  targetDb = await createOnlineTarget(target, 'shop');
  await adminQuery(target, 'postgres', 'CREATE EXTENSION pg_stat_statements');
  // A role that may create subscriptions but not change any logging setting (like an RDS master user).
  await adminQuery(target, 'postgres', `CREATE ROLE plain LOGIN PASSWORD 'plain-pw'; GRANT pg_create_subscription TO plain`);
  await adminQuery(target, 'postgres', 'CREATE DATABASE plain OWNER plain');
});

afterAll(async () => {
  await stack.stop();
});

/** Every file the target server logged to (the collector's files and pg_ctl's server.log). */
function targetLog(): string {
  const dir = join(target.dataDir, 'log');
  return [join(target.dataDir, 'server.log'), ...readdirSync(dir).map((f) => join(dir, f))].map((f) => readFileSync(f, 'utf8')).join('\n');
}

async function statementTexts(): Promise<string[]> {
  return (await adminQuery<{ query: string }>(target, 'postgres', 'SELECT query FROM pg_stat_statements')).map((r) => r.query);
}

async function expectNoSecretOnTarget(): Promise<void> {
  const log = targetLog();
  // The logging works (it would have caught the statement): DDL and durations are there.
  expect(log).toMatch(/statement: CREATE DATABASE/);
  expect(log).toMatch(/duration: [\d.]+ ms/);
  expect(log).not.toContain(SOURCE_SECRET);
  const texts = await statementTexts();
  expect(texts.length).toBeGreaterThan(0);
  expect(texts.filter((t) => t.includes(SOURCE_SECRET))).toEqual([]);
}

function spec(id: string, targetUri: string, targetPassword: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    source: { uri: sourceDb.uri, password: stack.secretFile(`s-${id}`, sourceDb.password) },
    target: { uri: targetUri, password: stack.secretFile(`t-${id}`, targetPassword) },
    method: 'logical' as const,
    logical: { statusInterval: '1s', replicaIdentityFull: true, ...extra },
  };
}

test('a target role that may not silence statement logging is refused before the password is sent, with the fix', async () => {
  // The target could not reach the source either: without the refusal, the probe would fail and be logged.
  const closed = await freePort();
  const handle = await startMigration(stack, spec('plain-role', `postgresql://plain@127.0.0.1:${target.port}/plain`, 'plain-pw', { sourceUriFromTarget: `postgresql://migrator@127.0.0.1:${closed}/shop` }));
  const failure = await migrationFailure(handle);
  expect(failure.message).toContain("the target would write the source's password");
  expect(failure.message).toContain('log_min_error_statement = error');
  expect(failure.message).toContain('log_statement = ddl');
  expect(failure.message).toContain('pg_stat_statements.track_utility = on');
  expect(failure.message).toContain('GRANT SET ON PARAMETER log_statement, log_min_error_statement, log_min_duration_statement, pg_stat_statements.track_utility TO "plain";');
  expect(failure.message).not.toContain(SOURCE_SECRET);
  expect(await userObjects(target, 'plain')).toEqual([]);
  expect(await replicationLeftovers(target, 'plain')).toEqual([]);
  await expectNoSecretOnTarget();
});

test('with SET ON PARAMETER granted, a probe that cannot reach the source fails without logging its statement', async () => {
  await adminQuery(target, 'postgres', 'GRANT SET ON PARAMETER pg_stat_statements.track_utility TO migrator');
  const closed = await freePort();
  const handle = await startMigration(stack, spec('unreachable', targetDb.uri, targetDb.password, { sourceUriFromTarget: `postgresql://migrator@127.0.0.1:${closed}/shop` }));
  const failure = await migrationFailure(handle);
  expect(failure.message).toContain(`the target cannot connect to the source at 127.0.0.1:${closed}`);
  expect(failure.message).not.toContain(SOURCE_SECRET);
  // The target did log the failure itself (the collector writes it asynchronously) — just not the statement.
  await waitFor('the failure in the target log', async () => /ERROR: .*could not connect to the publisher/.test(targetLog()) || undefined, 30_000, 50);
  expect(await replicationLeftovers(target, 'shop')).toEqual([]);
  await expectNoSecretOnTarget();
});

test('a logical migration that syncs and cuts over leaves the password in neither the log nor pg_stat_statements', async () => {
  const handle = await startMigration(stack, spec('synced', targetDb.uri, targetDb.password));
  const syncing = await waitForStatus(handle, 'syncing', (s) => s.phase === 'failed' || (s.phase === 'syncing' && s.replication?.streaming === true), 240_000);
  expect(syncing.errors ?? []).toEqual([]);
  const [sub] = await adminQuery<{ n: string }>(target, 'shop', 'SELECT count(*)::text AS n FROM pg_subscription');
  expect(sub!.n).toBe('1');
  await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'test' }] });
  await handle.result();
  const status: MigrationStatus = await handle.query('status');
  expect(status.phase).toBe('completed');
  await expectNoSecretOnTarget();
});
