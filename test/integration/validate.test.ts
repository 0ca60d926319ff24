/**
 * Validation catches what a copy can get wrong, in a large table on real servers (PostgreSQL 15 → 18):
 * one changed row, one missing row, one duplicated row (with another row gone, so the counts still
 * match), a changed row in one of 30 small tables (checked together in one statement: only that one
 * is named), and a sequence behind the source. Each tampering is undone before the next, and the
 * clean pair validates ok before and after.
 */
import { MockActivityEnvironment } from '@temporalio/testing';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { Client } from 'pg';
import { normalizeSession, validate } from '../../activities/validate';
import { parseSpec, type MigrationSpec } from '../../src/spec';
import { checkTables, checksumsWith, withRowHashes } from '../../src/pg/table-checksums';
import { storeTableChecks } from '../../src/pg/table-checks-store';
import type { ValidationReport } from '../../src/model';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
const ROWS = 200_000;

const SCHEMA = `
  CREATE TABLE public.big (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric(12, 2), seen timestamptz);
  INSERT INTO public.big SELECT g, md5(g::text), g * 1.25, '2026-01-01'::timestamptz + g * interval '1 second' FROM generate_series(1, ${ROWS}) g;
  CREATE TABLE public.events (kind text, at date);
  INSERT INTO public.events SELECT 'kind-' || (g % 50), '2026-01-01'::date + (g % 300) FROM generate_series(1, 20000) g;
  CREATE TABLE public.readings (id int PRIMARY KEY, x float8, tags int[], seen text[]);
  INSERT INTO public.readings SELECT g, (g % 3)::float8, CASE WHEN g % 2 = 0 THEN '{}' ELSE ARRAY[g] END, ARRAY['Ab', 'c']
    FROM generate_series(1, 300) g;
  CREATE SCHEMA dot; CREATE SCHEMA "dot.x";
  CREATE TABLE dot."x.y" (v int); INSERT INTO dot."x.y" VALUES (1);
  CREATE TABLE "dot.x".y (v int); INSERT INTO "dot.x".y VALUES (2);
  CREATE SEQUENCE public.ticket_seq;
  SELECT setval('public.ticket_seq', 4242);
  DO $$ BEGIN FOR i IN 1..30 LOOP
    EXECUTE format('CREATE TABLE public.%I (id int PRIMARY KEY, note text, tags jsonb)', 'small_' || lpad(i::text, 2, '0'));
    EXECUTE format('INSERT INTO public.%I SELECT g, md5(g::text), jsonb_build_object(''g'', g) FROM generate_series(1, 50) g', 'small_' || lpad(i::text, 2, '0'));
  END LOOP; END $$;`;

beforeAll(async () => {
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  for (const cluster of [source, target]) {
    await adminQuery(cluster, 'postgres', 'CREATE DATABASE shop');
    await adminQuery(cluster, 'shop', SCHEMA);
  }
});

afterAll(() => stack.stop());

function validationSpec(): MigrationSpec {
  return parseSpec({
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/shop`, password: stack.secretFile('s', source.superuserPassword) },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/shop`, password: stack.secretFile('t', target.superuserPassword) },
    method: 'dump',
    jobs: 2,
  });
}

async function validateNow(): Promise<ValidationReport> {
  return (await new MockActivityEnvironment().run(validate, { spec: validationSpec() })) as ValidationReport;
}

const clusterUri = (cluster: ClusterHandle) => ({ host: '127.0.0.1', port: cluster.port, user: 'postgres', password: cluster.superuserPassword, database: 'shop' });

const failing = (report: ValidationReport) => report.tables.filter((t) => !t.ok).map((t) => t.table);

/** Tampers with the target, validates, then undoes it on the target. */
async function caught(tamper: string, undo: string): Promise<ValidationReport> {
  await adminQuery(target, 'shop', tamper);
  try {
    return await validateNow();
  } finally {
    await adminQuery(target, 'shop', undo);
  }
}

test('the untouched copy validates ok', async () => {
  const report = await validateNow();
  expect(report.ok).toBe(true);
  expect(report.rowsChecked ?? report.tables.reduce((n, t) => n + t.sourceRows, 0)).toBe(ROWS + 20000 + 30 * 50 + 300 + 2);
});

test('one changed row in a large table: same count, different checksum', async () => {
  const report = await caught(`UPDATE public.big SET amount = amount + 0.01 WHERE id = 123457`, `UPDATE public.big SET amount = amount - 0.01 WHERE id = 123457`);
  expect(report.ok).toBe(false);
  expect(failing(report)).toEqual(['public.big']);
  const big = report.tables.find((t) => t.table === 'public.big')!;
  expect(big.targetRows).toBe(big.sourceRows);
  expect(big.targetChecksum).not.toBe(big.sourceChecksum);
});

test('one missing row', async () => {
  const report = await caught(
    `CREATE TABLE public.kept AS SELECT * FROM public.big WHERE id = 99999; DELETE FROM public.big WHERE id = 99999`,
    `INSERT INTO public.big SELECT * FROM public.kept; DROP TABLE public.kept`,
  );
  expect(report.ok).toBe(false);
  expect(failing(report)).toContain('public.big');
  const big = report.tables.find((t) => t.table === 'public.big')!;
  expect(big.targetRows).toBe(ROWS - 1);
});

test('one duplicated row with another gone: equal counts, caught by the checksum', async () => {
  const report = await caught(
    `CREATE TABLE public.kept AS SELECT * FROM public.events WHERE ctid = '(0,2)';
     DELETE FROM public.events WHERE ctid = '(0,2)';
     INSERT INTO public.events SELECT * FROM public.events WHERE ctid = '(0,1)'`,
    `DELETE FROM public.events WHERE ctid = (SELECT max(ctid) FROM public.events);
     INSERT INTO public.events SELECT * FROM public.kept; DROP TABLE public.kept`,
  );
  expect(report.ok).toBe(false);
  const events = report.tables.find((t) => t.table === 'public.events')!;
  expect(events.ok).toBe(false);
  expect(events.targetRows).toBe(events.sourceRows);
  expect(events.targetChecksum).not.toBe(events.sourceChecksum);
});

test('a changed row in one of many small tables checked together: only that table is named', async () => {
  const report = await caught(`UPDATE public.small_17 SET tags = '{"g": 0}' WHERE id = 7`, `UPDATE public.small_17 SET tags = '{"g": 7}' WHERE id = 7`);
  expect(report.ok).toBe(false);
  expect(failing(report)).toEqual(['public.small_17']);
  expect(report.tables.filter((t) => t.table.startsWith('public.small_') && t.ok)).toHaveLength(29);
});

// Several hash functions return their seed for 0, NaN or an empty array: a NULL must still differ from those.
test('a 0.0 turned NULL, an empty array turned {NULL} and a text array whose case changed: each caught', async () => {
  for (const [tamper, undo] of [
    [`UPDATE public.readings SET x = NULL WHERE id = 3`, `UPDATE public.readings SET x = 0 WHERE id = 3`],
    [`UPDATE public.readings SET tags = '{NULL}' WHERE id = 4`, `UPDATE public.readings SET tags = '{}' WHERE id = 4`],
    [`UPDATE public.readings SET seen = ARRAY['ab', 'c'] WHERE id = 5`, `UPDATE public.readings SET seen = ARRAY['Ab', 'c'] WHERE id = 5`],
  ]) {
    const report = await caught(tamper!, undo!);
    expect(failing(report)).toEqual(['public.readings']);
  }
});

test('a sequence behind the source', async () => {
  const report = await caught(`SELECT setval('public.ticket_seq', 4000)`, `SELECT setval('public.ticket_seq', 4242)`);
  expect(report.ok).toBe(false);
  expect(report.sequences.filter((s) => !s.ok).map((s) => s.sequence)).toEqual(['public.ticket_seq']);
  expect(failing(report)).toEqual([]);
});

/** Comparisons as the offline copy records them right after each unit (activities/copy-plan.ts). */
async function compareAsTheCopyDoes(migrationId: string, tables = ['big', 'events', 'readings', 'small_01', 'small_17'].map((name) => ({ schema: 'public', name }))): Promise<void> {
  const [sourceClient, targetClient] = [new Client(clusterUri(source)), new Client(clusterUri(target))];
  await sourceClient.connect();
  await targetClient.connect();
  try {
    for (const client of [sourceClient, targetClient]) {
      await normalizeSession(client);
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    }
    const checks = await checkTables(sourceClient, targetClient, tables, true);
    await Promise.all([sourceClient.query('COMMIT'), targetClient.query('COMMIT')]);
    await targetClient.query('CREATE SCHEMA IF NOT EXISTS pgmove_scratch');
    await storeTableChecks(targetClient, migrationId, checks);
  } finally {
    await sourceClient.end();
    await targetClient.end();
  }
}

test('tables compared right after their copy are not compared again; a difference found then is compared again', async () => {
  // Recorded while one row of small_17 differed (as if the copy had got it wrong), then repaired.
  await adminQuery(target, 'shop', `UPDATE public.small_17 SET note = 'x' WHERE id = 7`);
  try {
    await compareAsTheCopyDoes('early-compare');
  } finally {
    await adminQuery(target, 'shop', `UPDATE public.small_17 SET note = md5('7') WHERE id = 7`);
  }
  const environment = new MockActivityEnvironment({ workflowExecution: { workflowId: 'early-compare', runId: 'run-1' } });
  const report = (await environment.run(validate, { spec: validationSpec() })) as ValidationReport;
  // big, events, readings and small_01 came from the record; small_17 (different then) was compared again: equal now.
  expect(report.ok).toBe(true);
  expect(report.tablesComparedDuringCopy).toBe(4);
  expect(report.tablesChecked).toBe(3 + 30 + 2);
  expect(report.summary).toContain('(4 compared right after their copy)');
  // Validation removes the record, and with it the scratch schema.
  expect(await adminQuery(target, 'shop', `SELECT nspname FROM pg_namespace WHERE nspname = 'pgmove_scratch'`)).toEqual([]);

  // Recorded again with small_17 still different: validation compares it again and names it.
  await adminQuery(target, 'shop', `UPDATE public.small_17 SET note = 'x' WHERE id = 7`);
  try {
    await compareAsTheCopyDoes('early-compare-2');
    const again = (await new MockActivityEnvironment({ workflowExecution: { workflowId: 'early-compare-2', runId: 'run-1' } }).run(validate, { spec: validationSpec() })) as ValidationReport;
    expect(again.ok).toBe(false);
    expect(failing(again)).toEqual(['public.small_17']);
    expect(again.tablesComparedDuringCopy).toBe(4);
  } finally {
    await adminQuery(target, 'shop', `UPDATE public.small_17 SET note = md5('7') WHERE id = 7`);
  }
});

test('two tables whose display names collide (dot."x.y", "dot.x".y) keep their own comparisons', async () => {
  await adminQuery(target, 'shop', `UPDATE "dot.x".y SET v = 3`);
  try {
    await compareAsTheCopyDoes('collide', [{ schema: 'dot', name: 'x.y' }, { schema: 'dot.x', name: 'y' }]);
    const report = (await new MockActivityEnvironment({ workflowExecution: { workflowId: 'collide', runId: 'run-1' } }).run(validate, { spec: validationSpec() })) as ValidationReport;
    // The equal one came from the record, the different one was compared again and is named.
    expect(report.tablesComparedDuringCopy).toBe(1);
    expect(report.ok).toBe(false);
    expect(failing(report)).toEqual(['dot.x.y']);
  } finally {
    await adminQuery(target, 'shop', `UPDATE "dot.x".y SET v = 2`);
  }
});

test('a checksum statement that fails with an expression error is retried with probed row hashes in the same transaction; other errors are not', async () => {
  const client = new Client({ host: '127.0.0.1', port: source.port, user: source.superuser, password: source.superuserPassword, database: 'shop' });
  await client.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const tables = [{ schema: 'public', name: 'small_01' }, { schema: 'public', name: 'small_02' }];
    const calls: (string | null)[][] = [];
    // The first statement really fails on the server (undefined function, 42883); its savepoint keeps the transaction usable.
    const { rowHashes, result } = await withRowHashes(client, tables, true, (hashes) => {
      calls.push(hashes);
      return checksumsWith(client, tables, calls.length === 1 ? hashes.map(() => 'pg_catalog.no_such_row_hash(r)') : hashes);
    });
    expect(calls).toHaveLength(2);
    expect(rowHashes).toEqual(calls[0]);
    expect(result.map((r) => r.rows)).toEqual([50, 50]);
    expect(result.every((r) => r.checksum !== null)).toBe(true);
    const serialization = Object.assign(new Error('could not serialize access'), { code: '40001' });
    await expect(withRowHashes(client, tables, true, () => Promise.reject(serialization))).rejects.toBe(serialization);
    expect((await client.query<{ n: string }>('SELECT count(*) AS n FROM public.small_01')).rows[0]!.n).toBe('50');
    await client.query('COMMIT');
  } finally {
    await client.end();
  }
});

test('with a table filter, only the named tables and what hangs on them are compared', async () => {
  await adminQuery(target, 'shop', `UPDATE public.small_17 SET note = 'changed' WHERE id = 7; CREATE INDEX small_17_extra ON public.small_17 (note)`);
  try {
    const filtered = { ...validationSpec(), include: { schemas: [], tables: ['public.big'] } };
    const report = (await new MockActivityEnvironment().run(validate, { spec: filtered })) as ValidationReport;
    expect(report.ok).toBe(true);
    expect(report.tablesChecked).toBe(1);
    const all = await validateNow();
    expect(failing(all)).toEqual(['public.small_17']);
    expect(all.schemaDifferences).toEqual(['only on target: index public.small_17.small_17_extra']);
  } finally {
    await adminQuery(target, 'shop', `DROP INDEX public.small_17_extra; UPDATE public.small_17 SET note = md5(id::text) WHERE id = 7`);
  }
});

test('undone, the copy validates ok again', async () => {
  expect((await validateNow()).ok).toBe(true);
});
