/**
 * Issue 13: many tables in one migration, offline and online. 1,500 tables (primary key, index, foreign key to a
 * neighbour, 20 rows each) into a target whose lock table is far too small for one pre-data
 * transaction (shown first with a plain single-transaction pg_restore), with a short history per run
 * so the copy continues as new. The migration completes, validates, and compares equal; no payload
 * passes 256 KB, and the status stays small. Online, the same tables sync and cut over with the plan on
 * the target and the list of tables in the publication's record on the source, not in payloads.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { startMigration } from '../helpers/migration';
import { createManyTables, manyTableName, manyTablesCensus } from '../../scripts/lib/many-tables';
import { workflowRunStats } from '../../scripts/lib/history-stats';
import { waitFor } from '../../src/dev/ports';
import { statusQuery } from '../../workflows/messages';
import { renderStatusMarkdown } from '../../workflows/status-markdown';
import { requestCutoverUpdate } from '../../workflows/messages';
import { replicationLeftovers, waitForStatus } from '../helpers/online';
import type { MigrationResult } from '../../workflows/migrate-database';

const TABLES = 1500;
const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;

jest.setTimeout(1_500_000);

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  // 10 × (100 + 0) = 1,000 lock slots: one transaction creating 1,500 tables cannot fit.
  target = await stack.startCluster('target18', PROJECT_PG18_BIN, { max_locks_per_transaction: '10' });
  await stack.startWorker();
  await adminQuery(source, 'postgres', 'CREATE DATABASE many');
  await createManyTables(source, 'many', TABLES);
  await adminQuery(target, 'postgres', 'CREATE DATABASE many');
  await adminQuery(target, 'postgres', 'CREATE DATABASE control');
  await adminQuery(target, 'postgres', 'CREATE DATABASE many_online');
});

afterAll(() => stack.stop());

const conninfo = (c: ClusterHandle, db: string) => `host=127.0.0.1 port=${c.port} user=postgres dbname=${db}`;

test('control: this target cannot take the pre-data of 1,500 tables in one transaction', () => {
  const archive = join(stack.dir, 'control-pre-data.dump');
  const dump = spawnSync(join(DEBIAN_PG15_BIN, 'pg_dump'), ['--format=custom', '--section=pre-data', `--file=${archive}`, `--dbname=${conninfo(source, 'many')}`], {
    env: { ...process.env, PGPASSWORD: source.superuserPassword },
    encoding: 'utf8',
  });
  expect(dump.status).toBe(0);
  const restore = spawnSync(join(PROJECT_PG18_BIN, 'pg_restore'), ['--single-transaction', '--exit-on-error', `--dbname=${conninfo(target, 'control')}`, archive], {
    env: { ...process.env, PGPASSWORD: target.superuserPassword },
    encoding: 'utf8',
  });
  expect(restore.status).not.toBe(0);
  expect(restore.stderr).toContain('max_locks_per_transaction');
});

test(`${TABLES} tables offline: completes in several runs, validated, equal, small payloads and status`, async () => {
  const id = 'many-tables';
  const handle = await startMigration(stack, {
    id,
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/many`, password: stack.secretFile('s', source.superuserPassword) },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/many`, password: stack.secretFile('t', target.superuserPassword) },
    method: 'dump',
    jobs: 2,
    // Small batches (many units) and a short history per run: the copy must continue as new.
    copy: { batchSmallTablesUpToMB: 1, historyEventsPerRun: 150 },
  });
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.phase).toBe('completed');
  expect(result.status.validation?.ok).toBe(true);
  expect(result.status.validation?.tablesChecked).toBe(TABLES);
  expect(result.status.validation?.tables.length).toBeLessThanOrEqual(10);
  expect(result.status.totals).toMatchObject({ tables: TABLES, tablesDone: TABLES, rows: TABLES * 20 });
  expect(result.status.copyUnits?.done).toBe(result.status.copyUnits?.units);
  expect(result.status.copyUnits?.units).toBeGreaterThan(20);

  // Equal: every table, row, primary key, foreign key (validated) and index; and a sample row for row.
  const census = await manyTablesCensus(source, 'many');
  expect(census).toMatchObject({ tables: TABLES, rows: TABLES * 20, primary_keys: TABLES, foreign_keys: TABLES - 1, indexes: 2 * TABLES });
  expect(await manyTablesCensus(target, 'many')).toEqual(census);
  for (const i of [1, 2, 777, TABLES - 1, TABLES]) {
    const rows = `SELECT json_agg(t ORDER BY id)::text AS rows FROM public.${manyTableName(i)} t`;
    expect((await adminQuery(target, 'many', rows))[0]).toEqual((await adminQuery(source, 'many', rows))[0]);
  }
  // The scratch schema holding the plan is gone.
  expect(await adminQuery(target, 'many', `SELECT nspname FROM pg_namespace WHERE nspname = 'pgmove_scratch'`)).toEqual([]);

  // More than one run, each under its event budget (plus the units in flight and the run's end); no payload above 256 KB.
  const runs = await waitFor('every run listed', async () => {
    const stats = await workflowRunStats(stack.client!, id);
    return stats.length === result.status.copyUnits?.runs ? stats : undefined;
  }, 60_000, 500);
  expect(runs.length).toBeGreaterThan(1);
  for (const run of runs) {
    expect(run.events).toBeLessThan(150 + 60);
    expect(run.largestPayloadBytes).toBeLessThan(256 * 1024);
  }
  // The status (queried, and carried into every run) and the Web UI's details stay small.
  const status = await handle.query(statusQuery);
  expect(JSON.stringify(status).length).toBeLessThan(32 * 1024);
  expect(Object.keys(status.tables).length).toBeLessThanOrEqual(25);
  expect(renderStatusMarkdown(status).split('\n').length).toBeLessThan(30);
  console.log(JSON.stringify({ runs, units: status.copyUnits, timings: status.timings }, null, 1));
});

test(`${TABLES} tables online: syncs and cuts over with writes, equal, small payloads; a table created later is named`, async () => {
  const id = 'many-tables-online';
  const handle = await startMigration(stack, {
    id,
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/many`, password: stack.secretFile('s', source.superuserPassword) },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/many_online`, password: stack.secretFile('t', target.superuserPassword) },
    method: 'logical',
    jobs: 2,
    copy: { batchSmallTablesUpToMB: 1 },
    cutover: { autoCutover: false },
  });
  const syncing = await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication !== undefined, 900_000);
  // The tables the migration started with come from the publication's record: none of them is new.
  expect(syncing.replication?.newTables).toEqual([]);
  expect(syncing.totals).toMatchObject({ tables: TABLES, tablesDone: TABLES, rows: TABLES * 20 });
  expect(await adminQuery(target, 'many_online', `SELECT nspname FROM pg_namespace WHERE nspname = 'pgmove_scratch'`)).toEqual([]);

  // A table created on the source now is not replicated (DDL): the status names it, and only it.
  await adminQuery(source, 'many', 'CREATE TABLE public.added_later (id integer PRIMARY KEY)');
  await waitForStatus(handle, 'the new table named', (s) => JSON.stringify(s.replication?.newTables) === JSON.stringify(['public.added_later']));
  await adminQuery(source, 'many', 'DROP TABLE public.added_later');

  // Writes while syncing reach the target through the stream.
  await adminQuery(source, 'many', `UPDATE public.${manyTableName(3)} SET name = 'changed while syncing' WHERE id <= 5`);
  await adminQuery(source, 'many', `INSERT INTO public.${manyTableName(TABLES)} (id, neighbour_id, name) VALUES (21, NULL, 'added while syncing')`);
  await adminQuery(source, 'many', `DELETE FROM public.${manyTableName(TABLES)} WHERE id = 20`); // no table references the last one
  await waitForStatus(handle, 'caught up', (s) => s.replication?.newTables.length === 0 && (s.replication?.lagBytes ?? Infinity) < 1024 * 1024);
  const answer = await waitFor('the cutover accepted', async () => {
    const reply = await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'many-tables test' }] });
    return reply.accepted ? reply : undefined;
  }, 120_000, 1000);
  expect(answer.accepted).toBe(true);
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.phase).toBe('completed');
  expect(result.status.validation?.ok).toBe(true);

  const census = await manyTablesCensus(source, 'many');
  expect(census).toMatchObject({ tables: TABLES, rows: TABLES * 20, primary_keys: TABLES });
  expect(await manyTablesCensus(target, 'many_online')).toEqual(census);
  for (const i of [2, 3, 777, TABLES]) {
    const rows = `SELECT json_agg(t ORDER BY id)::text AS rows FROM public.${manyTableName(i)} t`;
    expect((await adminQuery(target, 'many_online', rows))[0]).toEqual((await adminQuery(source, 'many', rows))[0]);
  }
  expect(await adminQuery(target, 'many_online', `SELECT count(*)::int AS n FROM public.${manyTableName(3)} WHERE name = 'changed while syncing'`)).toEqual([{ n: 5 }]);
  expect(await replicationLeftovers(source, 'many')).toEqual([]);
  expect(await replicationLeftovers(target, 'many_online')).toEqual([]);

  const runs = await workflowRunStats(stack.client!, id);
  for (const run of runs) expect(run.largestPayloadBytes).toBeLessThan(256 * 1024);
  expect(JSON.stringify(result.status).length).toBeLessThan(32 * 1024);
  console.log(JSON.stringify({ runs, copyUnits: result.status.copyUnits, timings: result.status.timings }, null, 1));
});
