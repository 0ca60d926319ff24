/**
 * Indexes built as each table finishes copying (src/pg/table-indexes.ts), PostgreSQL 15 → 18 offline:
 * the plain ones (primary key, unique and exclusion constraints, partial, expression and INCLUDE
 * indexes) are built during the copy; those pg_dump restores together with something else (CLUSTER ON,
 * replica identity, a statistics target, a tablespace, partitions) are left to post-data. Either way
 * the target ends with every index and constraint defined exactly as on the source, each once — also
 * when the worker is killed while the copy builds a large table's indexes.
 */
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { runMigration, startMigration } from '../helpers/migration';
import { compareDatabases } from '../helpers/compare';
import { statusQuery } from '../../workflows/messages';
import { waitFor } from '../../src/dev/ports';
import { stopWorkerProcess } from '../../src/dev/worker-process';
import type { MigrationResult } from '../../workflows/migrate-database';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;

jest.setTimeout(600_000);

const SCHEMA = `
  CREATE TABLE public.accounts (id int PRIMARY KEY, email text NOT NULL, region text, balance numeric, created date,
    CONSTRAINT accounts_email_key UNIQUE (email) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT accounts_no_twin EXCLUDE USING btree (region WITH =, created WITH =) WHERE (balance < 0));
  CREATE INDEX accounts_lower_email ON public.accounts (lower(email));
  CREATE INDEX accounts_rich ON public.accounts (balance) INCLUDE (region) WHERE balance > 1000;
  COMMENT ON INDEX public.accounts_lower_email IS 'case-insensitive lookups';
  INSERT INTO public.accounts SELECT g, 'user' || g || '@example.com', 'r' || (g % 7), g * 3, DATE '2026-01-01' + g FROM generate_series(1, 5000) g;
  CREATE TABLE public.orders (id bigint PRIMARY KEY, account_id int NOT NULL REFERENCES public.accounts (id), placed timestamptz);
  CREATE INDEX orders_account ON public.orders (account_id);
  INSERT INTO public.orders SELECT g, 1 + g % 5000, TIMESTAMPTZ '2026-01-01' + g * interval '1 minute' FROM generate_series(1, 20000) g;
  CREATE TABLE public.clustered (id int PRIMARY KEY, v text);
  CREATE INDEX clustered_v ON public.clustered (v);
  ALTER TABLE public.clustered CLUSTER ON clustered_v;
  INSERT INTO public.clustered SELECT g, md5(g::text) FROM generate_series(1, 100) g;
  CREATE TABLE public.identified (k int NOT NULL, v text);
  CREATE UNIQUE INDEX identified_k ON public.identified (k);
  ALTER TABLE public.identified REPLICA IDENTITY USING INDEX identified_k;
  INSERT INTO public.identified SELECT g, g::text FROM generate_series(1, 100) g;
  CREATE TABLE public.tuned (id int PRIMARY KEY, v text);
  CREATE INDEX tuned_expr ON public.tuned ((length(v)));
  ALTER INDEX public.tuned_expr ALTER COLUMN 1 SET STATISTICS 500;
  INSERT INTO public.tuned SELECT g, repeat('x', g % 40) FROM generate_series(1, 100) g;
  CREATE TABLE public.measures (id int, at date, v int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
  CREATE TABLE public.measures_2026 PARTITION OF public.measures FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
  CREATE INDEX measures_v ON public.measures (v);
  INSERT INTO public.measures SELECT g, DATE '2026-01-01' + g % 300, g FROM generate_series(1, 1000) g;`;

/** Every index and constraint, with its definition and the flags pg_dump restores with it. */
async function definitions(cluster: ClusterHandle, database = 'shop'): Promise<string[]> {
  const rows = await adminQuery<{ d: string }>(
    cluster,
    database,
    `SET search_path = '';
     SELECT format('index %s: %s clustered=%s replident=%s stats=%s comment=%s', c.relname, pg_get_indexdef(i.indexrelid), i.indisclustered, i.indisreplident,
                   (SELECT string_agg(a.attstattarget::text, ',') FROM pg_attribute a WHERE a.attrelid = i.indexrelid AND a.attstattarget > 0),
                   obj_description(i.indexrelid, 'pg_class')) AS d
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
     UNION ALL
     SELECT format('constraint %s on %s: %s', k.conname, k.conrelid::regclass, pg_get_constraintdef(k.oid))
       FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace WHERE n.nspname = 'public' AND k.contype IN ('p', 'u', 'x', 'f')
     ORDER BY 1`,
  );
  return rows.map((r) => r.d);
}

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await adminQuery(source, 'postgres', 'CREATE DATABASE shop');
  await adminQuery(source, 'shop', SCHEMA);
  await adminQuery(target, 'postgres', 'CREATE DATABASE shop');
  await adminQuery(source, 'postgres', 'CREATE DATABASE crash');
  await adminQuery(source, 'crash', BIG_SCHEMA);
  await adminQuery(target, 'postgres', 'CREATE DATABASE crash');
});

const BIG_INDEXES = 8;
const BIG_SCHEMA = `
  CREATE TABLE public.big (id bigint PRIMARY KEY, ${Array.from({ length: BIG_INDEXES }, (_, i) => `c${i} text`).join(', ')});
  INSERT INTO public.big SELECT g, ${Array.from({ length: BIG_INDEXES }, (_, i) => `md5((g * ${i + 3})::text)`).join(', ')} FROM generate_series(1, 400000) g;
  ${Array.from({ length: BIG_INDEXES }, (_, i) => `CREATE INDEX big_c${i} ON public.big (c${i});`).join('\n')}
  CREATE TABLE public.small (id int PRIMARY KEY, big_id bigint REFERENCES public.big (id));
  INSERT INTO public.small SELECT g, g FROM generate_series(1, 1000) g;`;

afterAll(() => stack.stop());

test('plain indexes are built as their tables finish; the rest in post-data; the target matches the source', async () => {
  const worker = await stack.startWorker();
  const result = await runMigration(stack, {
    id: 'early-indexes',
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/shop`, password: stack.secretFile('s', source.superuserPassword) },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/shop`, password: stack.secretFile('t', target.superuserPassword) },
    method: 'dump',
    jobs: 2,
  });
  expect(result.status.validation?.ok).toBe(true);
  // accounts: pkey, email key, exclusion, lower(email), rich; orders: pkey, account; clustered: pkey;
  // tuned: pkey. Not early: clustered_v (CLUSTER ON), identified_k (replica identity), tuned_expr
  // (statistics target), and the partitioned measures' indexes.
  expect(result.status.copyUnits?.indexesBuilt).toBe(9);
  const wanted = await definitions(source);
  expect(wanted.length).toBeGreaterThan(12);
  expect(await definitions(target)).toEqual(wanted);
  const ref = (c: ClusterHandle) => ({ host: c.host, port: c.port, user: c.superuser, password: c.superuserPassword, database: 'shop' });
  expect(await compareDatabases(ref(source), ref(target))).toEqual([]);
  await stopWorkerProcess(worker, 'SIGTERM');
});

test('a worker killed while the copy builds a large table\'s indexes: the retry builds the rest, each index once', async () => {
  const first = await stack.startWorker();
  const handle = await startMigration(stack, {
    id: 'early-indexes-crash',
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/crash`, password: stack.secretFile('s', source.superuserPassword) },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/crash`, password: stack.secretFile('t', target.superuserPassword) },
    method: 'dump',
    jobs: 2,
    copy: { indexesDuringCopyUpToMB: 10_000 }, // big (about 120 MB) is built during the copy too
    timeouts: { heartbeat: '5s' },
  });
  const builtAtKill = await waitFor(
    'some of public.big\'s indexes built during the copy',
    async () => {
      const phase = (await handle.query(statusQuery)).phase;
      if (['postData', 'sequences', 'validate', 'cleanup', 'completed', 'failed'].includes(phase)) return -1; // too late to kill in the copy
      const rows = await adminQuery<{ n: string }>(target, 'crash', `SELECT count(*) AS n FROM pg_indexes WHERE tablename = 'big' AND indexname LIKE 'big\\_c%'`);
      const built = Number(rows[0]?.n);
      return built >= 1 ? built : undefined;
    },
    300_000,
    50,
  );
  await stopWorkerProcess(first, 'SIGKILL');
  expect(builtAtKill).toBeGreaterThanOrEqual(1);
  expect(builtAtKill).toBeLessThan(BIG_INDEXES);
  await stack.startWorker();
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.validation?.ok).toBe(true);
  expect(await definitions(target, 'crash')).toEqual(await definitions(source, 'crash'));
});
