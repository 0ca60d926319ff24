/**
 * A source with many small tables (issue 13): t00001…tNNNNN, each with a primary key, an index, a
 * foreign key to its predecessor and `rows` rows. Created `chunk` tables per transaction, so the
 * source's own lock table never fills while generating.
 */
import { adminQuery, type ClusterHandle } from '../../src/dev/pg-cluster';

export const manyTableName = (i: number): string => `t${String(i).padStart(5, '0')}`;

export async function createManyTables(cluster: ClusterHandle, database: string, tables: number, rows = 20, chunk = 250): Promise<void> {
  for (let first = 1; first <= tables; first += chunk) {
    const last = Math.min(tables, first + chunk - 1);
    await adminQuery(
      cluster,
      database,
      `DO $$
       DECLARE name text; neighbour text;
       BEGIN
         FOR i IN ${first}..${last} LOOP
           name := 't' || lpad(i::text, 5, '0');
           neighbour := 't' || lpad((i - 1)::text, 5, '0');
           EXECUTE format('CREATE TABLE public.%I (id integer PRIMARY KEY, neighbour_id integer %s, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())',
                          name, CASE WHEN i > 1 THEN format('REFERENCES public.%I (id)', neighbour) ELSE '' END);
           EXECUTE format('CREATE INDEX %I ON public.%I (name)', name || '_name', name);
           EXECUTE format('INSERT INTO public.%I (id, neighbour_id, name) SELECT g, %s, md5(%L || g) FROM generate_series(1, ${rows}) g',
                          name, CASE WHEN i > 1 THEN 'g' ELSE 'NULL' END, name);
         END LOOP;
       END $$`,
    );
  }
  await adminQuery(cluster, database, 'ANALYZE');
}

/**
 * Tables, rows, primary keys, foreign keys and indexes in `public`: one line to compare both sides by.
 * Rows are counted 200 tables per statement (each statement locks what it reads until it ends).
 */
export async function manyTablesCensus(cluster: ClusterHandle, database: string): Promise<Record<string, number>> {
  const [row] = await adminQuery<Record<string, string>>(
    cluster,
    database,
    `SELECT (SELECT count(*) FROM pg_tables WHERE schemaname = 'public') AS tables,
            (SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND connamespace = 'public'::regnamespace) AS primary_keys,
            (SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace AND convalidated) AS foreign_keys,
            (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public') AS indexes`,
  );
  const names = (await adminQuery<{ tablename: string }>(cluster, database, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)).map((r) => r.tablename);
  let rows = 0;
  for (let i = 0; i < names.length; i += 200) {
    const [counted] = await adminQuery<{ rows: string }>(
      cluster,
      database,
      `SELECT sum((xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM public.%I', name), false, true, '')))[1]::text::bigint) AS rows
         FROM unnest($1::text[]) AS name`,
      [names.slice(i, i + 200)],
    );
    rows += Number(counted?.rows ?? 0);
  }
  return { ...Object.fromEntries(Object.entries(row ?? {}).map(([k, v]) => [k, Number(v)])), rows };
}
