/**
 * Foreign keys added by pgmove's own sessions in post-data (src/pg/foreign-keys.ts), PostgreSQL 15 → 18
 * offline: every shape of key of an ordinary table (composite, MATCH FULL, deferrable, NOT VALID,
 * self-referencing, two tables referencing each other, a quoted schema, a key to a partitioned table,
 * a key to a table partitioned on two levels, a key whose referenced index pg_restore builds) ends
 * defined exactly as on the source, with its comment; a key of a partitioned table stays with
 * pg_restore; an event trigger that refuses ALTER TABLE is created only after the keys. A key the
 * target's rows violate fails with its name.
 */
import { readFileSync } from 'node:fs';
import { Client } from 'pg';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { runMigration } from '../helpers/migration';
import { compareDatabases } from '../helpers/compare';
import { addForeignKeys, splitAroundForeignKeys, type ForeignKey } from '../../src/pg/foreign-keys';
import type { TocEntry } from '../../src/pg/dump';
import { classifyActivityError } from '../../worker/classify-errors';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;

jest.setTimeout(600_000);

const SCHEMA = `
  CREATE SCHEMA "Odd Schema";
  CREATE TABLE public.parents (id int PRIMARY KEY, code text UNIQUE);
  INSERT INTO public.parents SELECT g, 'p' || g FROM generate_series(1, 500) g;
  CREATE TABLE public.children (id int PRIMARY KEY, parent_id int REFERENCES public.parents (id) ON DELETE CASCADE, parent_code text,
    CONSTRAINT children_code_fk FOREIGN KEY (parent_code) REFERENCES public.parents (code) DEFERRABLE INITIALLY DEFERRED);
  COMMENT ON CONSTRAINT children_code_fk ON public.children IS 'by code';
  INSERT INTO public.children SELECT g, 1 + g % 500, 'p' || (1 + g % 500) FROM generate_series(1, 2000) g;
  CREATE TABLE public.tree (id int PRIMARY KEY, up int REFERENCES public.tree (id));
  INSERT INTO public.tree VALUES (1, NULL), (2, 1), (3, 2);
  CREATE TABLE public.ping (id int PRIMARY KEY, pong_id int);
  CREATE TABLE public.pong (id int PRIMARY KEY, ping_id int REFERENCES public.ping (id));
  ALTER TABLE public.ping ADD CONSTRAINT ping_pong FOREIGN KEY (pong_id) REFERENCES public.pong (id);
  CREATE TABLE "Odd Schema"."T.1" (a int, b int, PRIMARY KEY (a, b));
  INSERT INTO "Odd Schema"."T.1" VALUES (1, 1), (1, 2);
  CREATE TABLE public.pairs (id int PRIMARY KEY, a int, b int, FOREIGN KEY (a, b) REFERENCES "Odd Schema"."T.1" (a, b) MATCH FULL);
  INSERT INTO public.pairs VALUES (1, 1, 1), (2, NULL, NULL);
  CREATE TABLE public.loose (id int PRIMARY KEY, parent_id int);
  INSERT INTO public.loose VALUES (1, 999999);
  ALTER TABLE public.loose ADD CONSTRAINT loose_parent FOREIGN KEY (parent_id) REFERENCES public.parents (id) NOT VALID;
  CREATE TABLE public.clustered (id int PRIMARY KEY, v text);
  ALTER TABLE public.clustered CLUSTER ON clustered_pkey;
  INSERT INTO public.clustered SELECT g, md5(g::text) FROM generate_series(1, 100) g;
  CREATE TABLE public.clustered_ref (id int PRIMARY KEY, c int REFERENCES public.clustered (id));
  INSERT INTO public.clustered_ref SELECT g, g FROM generate_series(1, 100) g;
  CREATE TABLE public.measures (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
  CREATE TABLE public.measures_2026 PARTITION OF public.measures FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
  INSERT INTO public.measures SELECT g, DATE '2026-01-01' + g % 300 FROM generate_series(1, 300) g;
  CREATE TABLE public.measure_notes (id int PRIMARY KEY, m_id int, m_at date, FOREIGN KEY (m_id, m_at) REFERENCES public.measures (id, at));
  INSERT INTO public.measure_notes SELECT g, g, DATE '2026-01-01' + g % 300 FROM generate_series(1, 300) g;
  CREATE TABLE public.levels (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
  CREATE TABLE public.levels_2026 PARTITION OF public.levels FOR VALUES FROM ('2026-01-01') TO ('2027-01-01') PARTITION BY RANGE (at);
  CREATE TABLE public.levels_2026_h1 PARTITION OF public.levels_2026 FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
  CREATE TABLE public.levels_2026_h2 PARTITION OF public.levels_2026 FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
  INSERT INTO public.levels SELECT g, DATE '2026-01-01' + g FROM generate_series(1, 300) g;
  CREATE TABLE public.level_notes (id int PRIMARY KEY, l_id int, l_at date, FOREIGN KEY (l_id, l_at) REFERENCES public.levels (id, at));
  INSERT INTO public.level_notes SELECT g, g, DATE '2026-01-01' + g FROM generate_series(1, 300) g;
  CREATE TABLE public.parted_refs (id int, parent_id int REFERENCES public.parents (id), PRIMARY KEY (id)) PARTITION BY RANGE (id);
  CREATE TABLE public.parted_refs_1 PARTITION OF public.parted_refs FOR VALUES FROM (0) TO (1000);
  INSERT INTO public.parted_refs SELECT g, g FROM generate_series(1, 100) g;
  CREATE FUNCTION public.no_alter_table() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'ALTER TABLE is not allowed here'; END$$;
  CREATE EVENT TRIGGER no_alter_table ON ddl_command_start WHEN TAG IN ('ALTER TABLE') EXECUTE FUNCTION public.no_alter_table();`;

/** Keys pgmove adds itself: children ×2, tree, ping, pong, pairs, loose, clustered_ref, measure_notes, level_notes (not parted_refs'). */
const OWN_KEYS = 10;

/**
 * Every foreign key with its definition, validity and comment; those the server derives (for partitions)
 * by their origin, as the server names them differently across versions.
 */
async function foreignKeys(cluster: ClusterHandle, database: string): Promise<string[]> {
  const rows = await adminQuery<{ d: string }>(
    cluster,
    database,
    `SET search_path = '';
     SELECT format('%s on %s: %s valid=%s comment=%s', coalesce('derived from ' || root.conname || ' to ' || k.confrelid::regclass, k.conname), k.conrelid::regclass,
                   pg_get_constraintdef(k.oid), k.convalidated, obj_description(k.oid, 'pg_constraint')) AS d
       FROM pg_constraint k
       LEFT JOIN LATERAL (WITH RECURSIVE up(oid, parent) AS (SELECT p.oid, p.conparentid FROM pg_constraint p WHERE p.oid = k.conparentid
                                                             UNION ALL SELECT p.oid, p.conparentid FROM pg_constraint p JOIN up ON p.oid = up.parent)
                          SELECT r.conname FROM up JOIN pg_constraint r ON r.oid = up.oid WHERE up.parent = 0) root ON true
      WHERE k.contype = 'f' ORDER BY 1`,
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
  await adminQuery(target, 'postgres', 'CREATE DATABASE scratch');
});

afterAll(() => stack.stop());

test('pgmove adds the foreign keys of ordinary tables itself; the target ends with every key, comment and the event trigger', async () => {
  const worker = await stack.startWorker();
  const result = await runMigration(stack, {
    id: 'foreign-keys',
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/shop`, password: stack.secretFile('s', source.superuserPassword) },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/shop`, password: stack.secretFile('t', target.superuserPassword) },
    method: 'dump',
    jobs: 2,
  });
  expect(result.status.validation?.ok).toBe(true);
  const wanted = await foreignKeys(source, 'shop');
  expect(wanted.filter((d) => !d.startsWith('derived')).length).toBe(OWN_KEYS + 1);
  expect(await foreignKeys(target, 'shop')).toEqual(wanted);
  // The event trigger came after the keys (before them, it would have refused every ALTER TABLE).
  const triggers = await adminQuery<{ evtname: string; evtenabled: string }>(target, 'shop', 'SELECT evtname, evtenabled FROM pg_event_trigger');
  expect(triggers).toEqual([{ evtname: 'no_alter_table', evtenabled: 'O' }]);
  const applied = readFileSync(worker.logFile, 'utf8').split('\n').filter((l) => l.includes('"post-data applied"')).map((l) => JSON.parse(l) as { foreignKeysAdded?: number });
  expect(applied.map((l) => l.foreignKeysAdded)).toEqual([OWN_KEYS]);
  const ref = (c: ClusterHandle) => ({ host: c.host, port: c.port, user: c.superuser, password: c.superuserPassword, database: 'shop' });
  expect(await compareDatabases(ref(source), ref(target))).toEqual([]);
});

test('a key the target\'s rows violate fails with the key\'s name and the server\'s reason; the keys of its transaction before it stay', async () => {
  await adminQuery(
    target,
    'scratch',
    `CREATE TABLE public.a (id int PRIMARY KEY); CREATE TABLE public.b (id int PRIMARY KEY, a_id int); CREATE TABLE public.c (id int PRIMARY KEY, a_id int);
     INSERT INTO public.a VALUES (1); INSERT INTO public.b VALUES (1, 1); INSERT INTO public.c VALUES (1, 2);`,
  );
  const key = (table: string): ForeignKey => ({
    schema: 'public', table, name: `${table}_a`, objectOid: 0, qualifiedTable: `public.${table}`, referencedTable: 'public.a', referencedIndex: 'public.a_pkey', small: true,
    ddl: `ALTER TABLE ONLY public.${table} ADD CONSTRAINT ${table}_a FOREIGN KEY (a_id) REFERENCES public.a(id)`,
  });
  const session = new Client({ host: '127.0.0.1', port: target.port, user: target.superuser, password: target.superuserPassword, database: 'scratch' });
  await session.connect();
  try {
    const failure = (await addForeignKeys([session], [key('b'), key('c')]).catch((error: unknown) => error)) as Error & { code?: string; detail?: string };
    expect(failure.message).toMatch(/adding the foreign key c_a of public\.c on the target failed: insert or update on table "c" violates foreign key constraint "c_a"/);
    // Carried for the worker's classification: a violated key is not retried.
    expect(failure.code).toBe('23503');
    expect(failure.detail).toMatch(/Key \(a_id\)=\(2\) is not present in table "a"/);
    expect(classifyActivityError(failure)).toMatchObject({ nonRetryable: true });
  } finally {
    await session.end();
  }
  const present = await adminQuery<{ conname: string }>(target, 'scratch', `SELECT conname FROM pg_constraint WHERE contype = 'f' ORDER BY 1`);
  expect(present).toEqual([{ conname: 'b_a' }]);
});

test('the post-data list splits around the keys pgmove adds: their comments and the event triggers come after', () => {
  const entry = (dumpId: number, type: string, objectOid = 0, catalogOid = 0): TocEntry => ({ line: `${dumpId}; ${catalogOid} ${objectOid} ${type} x`, dumpId, catalogOid, objectOid, type });
  const entries = [
    entry(1, 'INDEX', 11, 1259),
    entry(2, 'FK CONSTRAINT', 21, 2606),
    entry(3, 'COMMENT'),
    entry(4, 'SECURITY LABEL'),
    entry(5, 'FK CONSTRAINT', 22, 2606), // not one of ours (a partitioned table's)
    entry(6, 'COMMENT'),
    entry(7, 'TRIGGER', 31, 2620),
    entry(8, 'COMMENT'),
    entry(9, 'EVENT TRIGGER', 41, 3466),
    entry(10, 'COMMENT'),
  ];
  const ours = new Map([[21, { objectOid: 21 } as ForeignKey]]);
  const parts = splitAroundForeignKeys(entries, ours);
  expect(parts.before.map((e) => e.dumpId)).toEqual([1, 5, 6, 7, 8]);
  expect(parts.keys.map((e) => e.dumpId)).toEqual([2]);
  expect(parts.after.map((e) => e.dumpId)).toEqual([3, 4, 9, 10]);
});
