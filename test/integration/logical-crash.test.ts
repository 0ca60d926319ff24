/**
 * SIGKILL the worker during the copy at the slot's snapshot (units copied before the kill are kept, the
 * rest is copied at a new slot), during syncing, and during the cutover (while the switch hook runs): a
 * new worker finishes each migration with equal data, and no slot, publication or subscription is left
 * on either server.
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { startMigration } from '../helpers/migration';
import { compareDatabases } from '../helpers/compare';
import { copyGenerationsSummary, renderStatusMarkdown } from '../../workflows/status-markdown';
import { appClient, createOnlineTarget, createPgbenchSource, pgbenchSums, replicationLeftovers, startPgbench, waitForStatus, type OnlineDatabase, type PgbenchRun } from '../helpers/online';
import { waitFor } from '../../src/dev/ports';
import { stopWorkerProcess, type WorkerHandle } from '../../src/dev/worker-process';
import { requestCutoverUpdate } from '../../workflows/messages';
import type { WorkflowHandle } from '@temporalio/client';
import type { MigrationResult } from '../../workflows/migrate-database';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
let sourceDb: OnlineDatabase;
let worker: WorkerHandle;
const runs: PgbenchRun[] = [];

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  worker = await stack.startWorker();
  sourceDb = await createPgbenchSource(source, 'shop', 10);
});

afterAll(async () => {
  for (const run of runs) await run.stop();
  await stack.stop();
});

async function start(id: string, extra: Record<string, unknown> = {}): Promise<WorkflowHandle> {
  const to = await createOnlineTarget(target, id.replace(/-/g, '_'));
  const bench = startPgbench(stack, source, 'shop', 2, 100);
  runs.push(bench);
  return startMigration(stack, {
    id,
    source: { uri: sourceDb.uri, password: stack.secretFile(`${id}-s`, sourceDb.password) },
    target: { uri: to.uri, password: stack.secretFile(`${id}-t`, to.password) },
    method: 'logical',
    jobs: 2,
    logical: { replicaIdentityFull: true, statusInterval: '1s' },
    timeouts: { heartbeat: '5s' },
    ...extra,
    // pgbench writes to the same source in every test: writable after each switch.
    cutover: { sourceAfterSwitch: 'writable', ...(extra.cutover as object | undefined) },
  });
}

async function crashWorker(): Promise<void> {
  await stopWorkerProcess(worker, 'SIGKILL');
  worker = await stack.startWorker();
}

async function expectEqualAndClean(handle: WorkflowHandle, database: string): Promise<MigrationResult> {
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.phase).toBe('completed');
  expect(result.status.validation?.ok).toBe(true);
  const [s, t] = [await pgbenchSums(source, 'shop'), await pgbenchSums(target, database)];
  expect(t).toEqual(s);
  expect(t.accounts).toBe(t.history);
  expect(await replicationLeftovers(source, 'shop')).toEqual([]);
  expect(await replicationLeftovers(target, database)).toEqual([]);
  return result;
}

async function cutoverWhenSynced(handle: WorkflowHandle): Promise<void> {
  await waitFor('cutover accepted', async () => {
    await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true);
    return handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'test' }] }).then(() => true, () => false);
  }, 300_000, 500);
}

// Each test waits for syncing, kills a worker and waits again: room for a loaded 2-core machine.
jest.setTimeout(900_000);

interface CopiedUnit {
  generation: number;
  tables: { table: string; filter: string | null }[];
}

/** Copy units recorded on the source as copied (unit publication comments), with their tables and row filters. */
async function unitsCopiedSoFar(): Promise<Map<string, CopiedUnit>> {
  const rows = await adminQuery<{ c: string; filter: string | null; t: string }>(
    source,
    'shop',
    `SELECT obj_description(p.oid, 'pg_publication') AS c, t.rowfilter AS filter, t.tablename AS t
       FROM pg_publication p JOIN pg_publication_tables t ON t.pubname = p.pubname WHERE p.pubname ~ '_u[0-9]+$'`,
  );
  const copied = new Map<string, CopiedUnit>();
  for (const row of rows) {
    const record = JSON.parse(row.c) as { copied: Record<string, { generation: number }> };
    for (const [unit, { generation }] of Object.entries(record.copied)) {
      if (!copied.has(unit)) copied.set(unit, { generation, tables: [] });
      copied.get(unit)!.tables.push({ table: row.t, filter: row.filter });
    }
  }
  return copied;
}

/** An application writing to ledger (updates and inserts) until a freeze ends its session. */
function writeLedger(): { stop: () => Promise<number> } {
  let stopped = false;
  let writes = 0;
  const loop = (async () => {
    const client = await appClient(source, 'shop');
    try {
      while (!stopped) {
        await client.query(`UPDATE ledger SET v = v + 1 WHERE code = md5((1 + floor(random() * 200000))::int::text)`);
        await client.query(`INSERT INTO ledger (code, v, note) VALUES (md5(random()::text || clock_timestamp()::text), 0, 'written while migrating')`);
        writes += 2;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    } catch {
      // The cutover's freeze ends the session: the application stops writing.
    } finally {
      await client.end().catch(() => undefined);
    }
  })();
  return { stop: async () => ((stopped = true), await loop, writes) };
}

test('killed during the copy at the slot snapshot: units copied before the kill are kept, the rest is copied at a new slot, equal data', async () => {
  // A whole-table unit (no integer key: never split) that copies first, then accounts in ~14 MB ranges.
  await adminQuery(source, 'shop', `SET ROLE migrator;
    CREATE TABLE ledger (code text PRIMARY KEY, v int NOT NULL, note text NOT NULL);
    INSERT INTO ledger SELECT md5(i::text), 0, repeat('x', 60) FROM generate_series(1, 200000) i;
    GRANT SELECT, INSERT, UPDATE ON ledger TO app; ANALYZE ledger;`);
  const writer = writeLedger();
  const handle = await start('crash-copy', { copy: { splitTablesLargerThanMB: 16 } });
  // Kill as soon as the source records ledger and one range of accounts as copied (pgbench writes meanwhile).
  const atKill = await waitFor('ledger and a range of accounts to be copied', async () => {
    const copied = await unitsCopiedSoFar();
    const done = [...copied.keys()];
    return done.includes('table:public.ledger') && done.some((u) => u.startsWith('range:public.pgbench_accounts')) ? copied : undefined;
  }, 300_000, 20);
  await stopWorkerProcess(worker, 'SIGKILL');
  // What the killed worker recorded (a unit may have finished between the last look and the kill).
  const kept = await unitsCopiedSoFar();
  // Rows written on the target from here on have a newer xmin than anything the killed worker committed.
  const { xid } = (await adminQuery<{ xid: string }>(target, 'postgres', 'SELECT pg_current_xact_id()::text AS xid'))[0]!;
  worker = await stack.startWorker();

  await cutoverWhenSynced(handle);
  const result = await expectEqualAndClean(handle, 'crash_copy');
  await writer.stop();
  const ref = (c: ClusterHandle, database: string) => ({ host: c.host, port: c.port, user: c.superuser, password: c.superuserPassword, database });
  expect(await compareDatabases(ref(source, 'shop'), ref(target, 'crash_copy'))).toEqual([]);

  // From the target's own rows: a kept unit's rows were written before the kill (only rows the stream
  // updated since are newer); no row of accounts outside the kept ranges is from before the kill.
  const rowsBefore = async (table: string, filter: string | null) =>
    (await adminQuery<{ before: string; all: string }>(target, 'crash_copy', `SELECT count(*) FILTER (WHERE xmin::text::bigint < ${xid})::text AS before, count(*)::text AS all FROM ${table} WHERE ${filter ?? 'true'}`))[0]!;
  const keptTables = [...kept.values()].flatMap((u) => u.tables).filter((t) => t.table === 'pgbench_accounts' || t.table === 'ledger');
  for (const { table, filter } of keptTables) {
    const { before, all } = await rowsBefore(table, filter);
    expect({ table, filter, kept: Number(before) > 0.9 * Number(all) }).toEqual({ table, filter, kept: true });
  }
  const rangeFilters = keptTables.filter((t) => t.table === 'pgbench_accounts').map((t) => `(${t.filter})`);
  expect(rangeFilters.length).toBeGreaterThan(0);
  expect((await rowsBefore('pgbench_accounts', `NOT (${rangeFilters.join(' OR ')})`)).before).toBe('0');
  // Each row of ledger was inserted once on the target: by the one copy, or by the stream.
  await waitFor('the target to count ledger inserts', async () => {
    const [row] = await adminQuery<{ ins: string; n: string }>(target, 'crash_copy', `SELECT n_tup_ins::text AS ins, (SELECT count(*) FROM ledger)::text AS n FROM pg_stat_user_tables WHERE relname = 'ledger'`);
    return row!.ins === row!.n;
  }, 60_000, 200);

  // The status: generation 0 kept every unit recorded before the kill, generation 1 copied the rest.
  const generations = result.status.copyGenerations!;
  expect(generations.map((g) => g.generation)).toEqual([0, 1]);
  expect([...generations[0]!.units].sort()).toEqual([...kept.keys()].sort());
  expect([...atKill.keys()].every((unit) => kept.has(unit))).toBe(true);
  expect(generations[1]!.units.length).toBeGreaterThan(0);
  expect(renderStatusMarkdown(result.status)).toMatch(/copy resumed\*\*: kept \d+ unit\(s\).* copied again \d+ unit\(s\)/);
  console.log(`copy generations: ${copyGenerationsSummary(generations)}`);

  // The kill hit the copy (the activity that copies the plan stored on the target at a slot): it ran a
  // second attempt, at a new slot.
  const history = await handle.fetchHistory();
  const copyEvents = history.events!.filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'copyStoredPlanAtSlot').map((e) => e.eventId!.toString());
  const attempts = history.events!.filter((e) => e.activityTaskStartedEventAttributes && copyEvents.includes(e.activityTaskStartedEventAttributes.scheduledEventId!.toString())).map((e) => e.activityTaskStartedEventAttributes!.attempt);
  expect(attempts).toEqual([2]);
});

test('killed while syncing: the stream lives in PostgreSQL, the new worker re-attaches', async () => {
  const handle = await start('crash-syncing');
  await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true);
  await crashWorker();
  await cutoverWhenSynced(handle);
  await expectEqualAndClean(handle, 'crash_syncing');
});

test('killed during the cutover: the retry finishes it, the source is unfrozen, equal data', async () => {
  const go = join(stack.dir, 'crash-go');
  const frozen = join(stack.dir, 'crash-frozen');
  const hook = ['sh', '-c', `touch ${frozen}; for i in $(seq 1200); do [ -f ${go} ] && exit 0; sleep 0.05; done; exit 4`];
  const handle = await start('crash-cutover', { cutover: { switchHook: hook } });
  await cutoverWhenSynced(handle);
  await waitFor('the switch hook to run', async () => existsSync(frozen), 120_000, 20);
  rmSync(frozen);
  await crashWorker();
  // The retried attempt freezes (already frozen: recorded on the source) and runs the hook again.
  await waitFor('the retried switch hook to run', async () => existsSync(frozen), 120_000, 20);
  writeFileSync(go, '');
  const result = await expectEqualAndClean(handle, 'crash_cutover');
  expect(result.status.cutovers?.map((c) => c.outcome)).toEqual(['switched']);
});
