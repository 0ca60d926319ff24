/**
 * What a target reset drops, listed once for two readers: pre-flight refuses a target that holds any
 * of it (so a reset can only ever drop what the migration created), and the reset after an unfinished
 * run drops exactly it. Kept: extensions that were there before (and their members), plpgsql, the
 * `public` schema itself (its owner and grants are the server's).
 */
import type { Client } from 'pg';

export interface ResettableObject {
  /** For people: "table public.orders", "schema app", "3 large objects". */
  label: string;
  drop: string;
}

const notExtensionMember = (catalog: string, column: string) =>
  `NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = '${catalog}'::pg_catalog.regclass AND d.objid = ${column} AND d.deptype = 'e')`;

const RELATION_KIND = `CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END`;

/** Everything a reset of this database would drop, in dropping order (extensions, schemas, then public's objects, large objects). */
export async function resettableObjects(client: Client, keepExtensions: string[]): Promise<ResettableObject[]> {
  const rows = (
    await client.query<ResettableObject>(
      `SELECT format('extension %I', e.extname) AS label, format('DROP EXTENSION IF EXISTS %I CASCADE', e.extname) AS drop, 1 AS rank
         FROM pg_catalog.pg_extension e WHERE NOT e.extname = ANY ($1::text[])
       UNION ALL
       SELECT format('schema %I', n.nspname), format('DROP SCHEMA IF EXISTS %I CASCADE', n.nspname), 2
         FROM pg_catalog.pg_namespace n
        WHERE n.nspname NOT IN ('public', 'pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' AND ${notExtensionMember('pg_catalog.pg_namespace', 'n.oid')}
       UNION ALL
       -- An identity column's sequence goes with its table (it cannot be dropped on its own); a
       -- partitioned table's internal dependency on itself does not make it one of those.
       SELECT format('%s public.%I', lower(${RELATION_KIND}), c.relname), format('DROP %s IF EXISTS public.%I CASCADE', ${RELATION_KIND}, c.relname), 3
         FROM pg_catalog.pg_class c
        WHERE c.relnamespace = 'public'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND ${notExtensionMember('pg_catalog.pg_class', 'c.oid')}
          AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                                                  AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> c.oid AND d.deptype = 'i'))
       UNION ALL
       SELECT format('routine %s', p.oid::pg_catalog.regprocedure), format('DROP ROUTINE IF EXISTS %s CASCADE', p.oid::pg_catalog.regprocedure), 4
         FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'public'::pg_catalog.regnamespace AND p.prokind <> 'a' AND ${notExtensionMember('pg_catalog.pg_proc', 'p.oid')}
       UNION ALL
       SELECT format('aggregate %s', p.oid::pg_catalog.regprocedure), format('DROP AGGREGATE IF EXISTS %s CASCADE', p.oid::pg_catalog.regprocedure), 4
         FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'public'::pg_catalog.regnamespace AND p.prokind = 'a' AND ${notExtensionMember('pg_catalog.pg_proc', 'p.oid')}
       UNION ALL
       SELECT format('%s public.%I', CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END, t.typname),
              format('DROP %s IF EXISTS public.%I CASCADE', CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.typname), 5
         FROM pg_catalog.pg_type t
        WHERE t.typnamespace = 'public'::pg_catalog.regnamespace AND t.typtype IN ('e', 'd', 'c', 'r', 'b', 'm') AND t.typelem = 0
          AND (t.typrelid = 0 OR (SELECT relkind FROM pg_catalog.pg_class WHERE oid = t.typrelid) = 'c') AND ${notExtensionMember('pg_catalog.pg_type', 't.oid')}
          AND NOT (t.typtype = 'm' AND EXISTS (SELECT 1 FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid))
       UNION ALL
       SELECT format('collation public.%I', c.collname), format('DROP COLLATION IF EXISTS public.%I CASCADE', c.collname), 6
         FROM pg_catalog.pg_collation c WHERE c.collnamespace = 'public'::pg_catalog.regnamespace AND ${notExtensionMember('pg_catalog.pg_collation', 'c.oid')}
       UNION ALL
       SELECT format('%s large object(s)', count(*)), 'SELECT pg_catalog.lo_unlink(oid) FROM pg_catalog.pg_largeobject_metadata', 7
         FROM pg_catalog.pg_largeobject_metadata HAVING count(*) > 0
       ORDER BY rank, label`,
      [[...keepExtensions, 'plpgsql']],
    )
  ).rows;
  return rows.map(({ label, drop }) => ({ label, drop }));
}

/** Drops them all in one transaction; returns how many there were. */
export async function dropResettableObjects(client: Client, keepExtensions: string[]): Promise<number> {
  const objects = await resettableObjects(client, keepExtensions);
  await client.query('BEGIN');
  try {
    for (const object of objects) await client.query(object.drop);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
  return objects.length;
}
