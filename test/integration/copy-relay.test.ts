/**
 * The COPY relay (src/pg/copy-relay.ts), PostgreSQL 15 → 18 on real servers: rows in text format (a
 * type whose binary form the target may not take) and in binary format, a row of several megabytes
 * (one message over many socket chunks), a key range, an empty table: every row arrives once and
 * equal. An error from the source ends the copy with the server's message, rolls the target back, and
 * leaves both connections usable. Small tables copied in one transaction: one an earlier attempt filled
 * is truncated, not doubled; a failure rolls back the whole group.
 */
import { Client } from 'pg';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { copySmallTables, copyTable, type CopyCounters } from '../../src/pg/table-copy';
import type { CopyTable } from '../../src/model';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
let sourceClient: Client;
let targetClient: Client;

jest.setTimeout(300_000);

const SCHEMA = `
  CREATE TYPE public.mood AS ENUM ('calm', 'busy');
  CREATE TABLE public.notes (id int PRIMARY KEY, body text, mood public.mood, at timestamptz, price numeric(12, 2), raw bytea);
  CREATE TABLE public.big (id bigint PRIMARY KEY, payload text, n double precision);
  CREATE TABLE public.wide (id int PRIMARY KEY, doc text);
  CREATE TABLE public.empty (id int PRIMARY KEY);
  CREATE TABLE public.secret (id int);
  CREATE TABLE public.small_a (id int PRIMARY KEY, v text);
  CREATE TABLE public.small_b (id int PRIMARY KEY, v text);
  CREATE TABLE public.small_c (id int PRIMARY KEY, v text);`;

const SOURCE_ROWS = `
  INSERT INTO public.notes SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE E'tab\\there, line\\nbreak, back\\\\slash, ünïcödé ' || g END,
    (ARRAY['calm', 'busy']::public.mood[])[1 + g % 2], TIMESTAMPTZ '2026-01-01' + g * interval '1 second', g / 7.0, decode(md5(g::text), 'hex')
    FROM generate_series(1, 20000) g;
  INSERT INTO public.big SELECT g, repeat(md5(g::text), 3), g / 3.0 FROM generate_series(1, 200000) g;
  INSERT INTO public.wide VALUES (1, repeat('x', 3 * 1024 * 1024)), (2, 'small'), (3, repeat('y', 70000));
  INSERT INTO public.secret VALUES (1);
  INSERT INTO public.small_a SELECT g, 'a' || g FROM generate_series(1, 20) g;
  INSERT INTO public.small_b SELECT g, 'b' || g FROM generate_series(1, 30) g;
  INSERT INTO public.small_c SELECT g, 'c' || g FROM generate_series(1, 40) g;
  CREATE ROLE relay_reader LOGIN PASSWORD 'relay-reader-pw';
  GRANT SELECT ON public.notes TO relay_reader;`;

const table = (name: string, columns: string[], binary: boolean, bytes = 1 << 30): CopyTable => ({ schema: 'public', name, columns, binary, bytes });

beforeAll(async () => {
  source = await stack.startCluster('relay-source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('relay-target18', PROJECT_PG18_BIN);
  for (const cluster of [source, target]) {
    await adminQuery(cluster, 'postgres', 'CREATE DATABASE relay');
    await adminQuery(cluster, 'relay', SCHEMA);
  }
  await adminQuery(source, 'relay', SOURCE_ROWS);
  const connectTo = async (cluster: ClusterHandle, user = 'postgres', password = cluster.superuserPassword) => {
    const client = new Client({ host: '127.0.0.1', port: cluster.port, user, password, database: 'relay' });
    client.on('error', () => undefined); // the servers stop before the clients end
    await client.connect();
    return client;
  };
  sourceClient = await connectTo(source);
  targetClient = await connectTo(target);
});

afterAll(async () => {
  // Servers first: a client left inside a broken COPY by a failed test could wait forever on end().
  await stack.stop();
  await sourceClient?.end().catch(() => undefined);
  await targetClient?.end().catch(() => undefined);
});

/** Copies inside a read-only source transaction, as the copy does. */
async function relay(copyTableOf: CopyTable, range?: { key: string; lo: string | null; hi: string | null }, from = sourceClient): Promise<CopyCounters> {
  await from.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    return await copyTable(from, targetClient, copyTableOf, range, { rows: 0, bytes: 0 });
  } finally {
    await from.query('COMMIT').catch(() => undefined);
  }
}

/** Each row's md5 on one side, by id. */
async function rowDigests(cluster: ClusterHandle, name: string): Promise<Map<string, string>> {
  const rows = await adminQuery<{ id: string; digest: string }>(cluster, 'relay', `SELECT id::text AS id, md5(t::text) AS digest FROM public.${name} t`);
  return new Map(rows.map((r) => [r.id, r.digest]));
}

test('text format (an enum, tabs, newlines, backslashes, NULLs): every row once and equal', async () => {
  const counters = await relay(table('notes', ['id', 'body', 'mood', 'at', 'price', 'raw'], false));
  expect(counters.rows).toBe(20000);
  expect(counters.bytes).toBeGreaterThan(20000 * 40);
  expect(await rowDigests(target, 'notes')).toEqual(await rowDigests(source, 'notes'));
});

test('binary format in two key ranges: every row once and equal, bytes counted without message headers', async () => {
  const big = table('big', ['id', 'payload', 'n'], true);
  const first = await relay(big, { key: 'id', lo: null, hi: '100001' });
  const second = await relay(big, { key: 'id', lo: '100001', hi: null });
  expect([first.rows, second.rows]).toEqual([100000, 100000]);
  // Each binary row: 2 bytes field count, 3 × 4 bytes lengths, 8 + 96 + 8 bytes of values.
  expect(first.bytes + second.bytes).toBe(2 * (19 + 2) + 200000 * (2 + 12 + 8 + 96 + 8));
  expect(await rowDigests(target, 'big')).toEqual(await rowDigests(source, 'big'));
  // A retried range replaces its rows: still every row once.
  await relay(big, { key: 'id', lo: '100001', hi: null });
  expect((await adminQuery<{ n: string }>(target, 'relay', 'SELECT count(*) AS n FROM public.big'))[0]!.n).toBe('200000');
});

test('a row of 3 MB (one message over many socket chunks) and an empty table', async () => {
  expect((await relay(table('wide', ['id', 'doc'], true))).rows).toBe(3);
  expect(await rowDigests(target, 'wide')).toEqual(await rowDigests(source, 'wide'));
  expect((await relay(table('empty', ['id'], true))).rows).toBe(0);
});

test("a source error ends the copy with the server's message; the target rolls back and both connections stay usable", async () => {
  const reader = new Client({ host: '127.0.0.1', port: source.port, user: 'relay_reader', password: 'relay-reader-pw', database: 'relay' });
  reader.on('error', () => undefined);
  await reader.connect();
  try {
    await expect(relay(table('secret', ['id'], true), undefined, reader)).rejects.toThrow(/permission denied for table secret/);
    expect((await reader.query<{ ok: number }>('SELECT 1 AS ok')).rows[0]!.ok).toBe(1);
    // The copy's transaction on the target is still open after the error (the caller ends it).
    await targetClient.query('ROLLBACK');
    expect((await targetClient.query<{ n: string }>('SELECT count(*) AS n FROM public.secret')).rows[0]!.n).toBe('0');
    // The same reader copies a table it may read.
    expect((await relay(table('notes', ['id', 'body', 'mood', 'at', 'price', 'raw'], false), undefined, reader)).rows).toBe(20000);
  } finally {
    await reader.end();
  }
});

test('an abort in the middle of the rows ends the copy at once; the target rolls back and takes the next statement', async () => {
  const from = new Client({ host: '127.0.0.1', port: source.port, user: 'postgres', password: source.superuserPassword, database: 'relay' });
  from.on('error', () => undefined);
  await from.connect();
  const counters = { rows: 0, bytes: 0 };
  const abort = new AbortController();
  const watch = setInterval(() => {
    if (counters.bytes > 1 << 20) abort.abort();
  }, 2);
  try {
    await from.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    // The target is read back after a ROLLBACK: it must have taken the CopyFail as a message, not as row bytes.
    await expect(copyTable(from, targetClient, table('big', ['id', 'payload', 'n'], true), undefined, counters, abort.signal)).rejects.toThrow(/abort/i);
    expect(counters.rows).toBe(0);
    await targetClient.query('ROLLBACK');
    expect((await targetClient.query<{ n: string }>('SELECT count(*) AS n FROM public.big')).rows[0]!.n).toBe('200000');
  } finally {
    clearInterval(watch);
    await from.end().catch(() => undefined);
  }
});

test('small tables in one transaction: each once, the one an earlier attempt filled truncated first, a failure rolls back the group', async () => {
  const small = (name: string) => table(name, ['id', 'v'], true, 8192);
  // An earlier attempt committed small_b (and a stray row): the group's copy must replace, not add.
  await adminQuery(target, 'relay', `INSERT INTO public.small_b SELECT g, 'b' || g FROM generate_series(1, 31) g`);
  const counters = { rows: 0, bytes: 0 };
  await sourceClient.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  const copied = await copySmallTables(sourceClient, targetClient, ['small_a', 'small_b', 'small_c'].map(small), counters);
  await sourceClient.query('COMMIT');
  expect(copied.map((c) => c.rows)).toEqual([20, 30, 40]);
  expect(copied.every((c) => c.bytes > 0)).toBe(true);
  expect(counters).toEqual({ rows: 90, bytes: copied.reduce((n, c) => n + c.bytes, 0) });
  for (const name of ['small_a', 'small_b', 'small_c']) expect(await rowDigests(target, name)).toEqual(await rowDigests(source, name));

  // A group with a table the reader may not read: nothing of the group stays on the target.
  await adminQuery(target, 'relay', 'TRUNCATE public.small_a, public.small_b');
  const reader = new Client({ host: '127.0.0.1', port: source.port, user: 'relay_reader', password: 'relay-reader-pw', database: 'relay' });
  reader.on('error', () => undefined);
  await reader.connect();
  try {
    await adminQuery(source, 'relay', 'GRANT SELECT ON public.small_a, public.small_b TO relay_reader');
    await reader.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const failing = { rows: 0, bytes: 0 };
    await expect(copySmallTables(reader, targetClient, [small('small_a'), table('secret', ['id'], true, 8192), small('small_b')], failing)).rejects.toThrow(/permission denied for table secret/);
    expect(failing).toEqual({ rows: 0, bytes: 0 });
    await reader.query('ROLLBACK');
    await targetClient.query('ROLLBACK');
    expect((await targetClient.query<{ n: string }>('SELECT (SELECT count(*) FROM public.small_a) + (SELECT count(*) FROM public.small_b) AS n')).rows[0]!.n).toBe('0');
  } finally {
    await reader.end();
  }
});
