/**
 * pgmove's sessions resolve names through pg_catalog, whatever the source's owner set up: a database
 * owner may put a schema of theirs before pg_catalog in the database's search_path (ALTER DATABASE …
 * SET search_path, no superuser needed) and create functions there that shadow the ones pgmove calls,
 * or give a function in public a closer argument type. The migration role runs them as itself — as
 * SUPERUSER after the privilege hack — so without a pinned search_path such a function can make its
 * owner a superuser. Here the source's owner does exactly that, the migration needs SUPERUSER (its role
 * does not own the database it freezes), and nothing of the owner's runs in any of pgmove's sessions,
 * on either server.
 */
import { join } from 'node:path';
import { Client } from 'pg';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { runMigration, tableFingerprint } from '../helpers/migration';
import { createPlainRole, elevationLeftovers, requirePasswordsEverywhere, roleState } from '../helpers/elevation';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;

/** What the database owner ("app") plants: every call is logged, and a superuser caller makes app one. */
const HOSTILE_SETUP = `
  SET ROLE app;
  CREATE TABLE public.orders (id bigint PRIMARY KEY, note text NOT NULL);
  INSERT INTO public.orders SELECT g, 'order ' || g FROM generate_series(1, 5000) g;
  CREATE SCHEMA evil;
  GRANT USAGE ON SCHEMA evil TO PUBLIC;
  CREATE TABLE evil.calls (fn text NOT NULL, caller text NOT NULL, caller_is_superuser boolean NOT NULL);
  GRANT INSERT ON evil.calls TO PUBLIC;
  CREATE FUNCTION evil.trap(fn text) RETURNS void LANGUAGE plpgsql AS $$
  DECLARE su boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
  BEGIN
    INSERT INTO evil.calls VALUES (fn, current_user, su);
    IF su THEN EXECUTE 'ALTER ROLE app SUPERUSER'; END IF;
  EXCEPTION WHEN OTHERS THEN NULL; -- a frozen (read-only) source: stay invisible
  END $$;
  -- Same signature as pg_catalog's, found first through the database's search_path.
  CREATE FUNCTION evil.current_setting(text) RETURNS text LANGUAGE plpgsql AS $$
  BEGIN PERFORM evil.trap('current_setting'); RETURN pg_catalog.current_setting($1); END $$;
  -- A closer argument type (oid, not regclass) wins over pg_catalog's wherever public is in the path.
  CREATE FUNCTION public.pg_table_size(oid) RETURNS bigint LANGUAGE plpgsql AS $$
  BEGIN PERFORM evil.trap('pg_table_size'); RETURN pg_catalog.pg_table_size($1::pg_catalog.regclass); END $$;
  ALTER DATABASE hostiledb SET search_path = evil, pg_catalog, public;
  RESET ROLE;`;

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await requirePasswordsEverywhere(source);
  await createPlainRole(source, 'app', 'app-pw');
  await createPlainRole(source, 'dumper', 'dumper-pw');
  await adminQuery(source, 'postgres', 'CREATE DATABASE hostiledb OWNER app');
  await adminQuery(source, 'hostiledb', HOSTILE_SETUP);
  // app's grants name it: it exists on the target too (where its functions arrive with the schema).
  await adminQuery(target, 'postgres', 'CREATE ROLE app NOLOGIN');
  await adminQuery(target, 'postgres', 'CREATE DATABASE hostiledb');
  await stack.startWorker();
});

afterAll(() => stack.stop());

async function calls(cluster: ClusterHandle): Promise<{ fn: string; caller: string; caller_is_superuser: boolean }[]> {
  return adminQuery(cluster, 'hostiledb', 'SELECT fn, caller, caller_is_superuser FROM evil.calls ORDER BY 1, 2');
}

test('the trap is live for a session that does not pin search_path', async () => {
  // The control: an ordinary session of the migration role, with the database's settings.
  const client = new Client({ host: source.host, port: source.port, user: 'dumper', password: 'dumper-pw', database: 'hostiledb' });
  await client.connect();
  try {
    await client.query(`SELECT current_setting('server_version_num'), pg_table_size(c.oid) FROM pg_class c WHERE c.relname = 'orders'`);
  } finally {
    await client.end();
  }
  expect(await calls(source)).toEqual([
    { fn: 'current_setting', caller: 'dumper', caller_is_superuser: false },
    { fn: 'pg_table_size', caller: 'dumper', caller_is_superuser: false },
  ]);
  await adminQuery(source, 'hostiledb', 'TRUNCATE evil.calls');
});

test('a migration as an elevated SUPERUSER runs none of the owner\'s functions, on either server', async () => {
  const result = await runMigration(stack, {
    id: 'search-path-pinned',
    source: {
      uri: `postgresql://dumper@127.0.0.1:${source.port}/hostiledb`,
      password: stack.secretFile('dumper', 'dumper-pw'),
      privilegeElevation: { backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') },
    },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/hostiledb`, password: stack.secretFile('t', target.superuserPassword) },
    method: 'dump',
    timeouts: { heartbeat: '5s' },
  });
  expect(result.outcome).toBe('completed');
  expect(result.status.validation?.ok).toBe(true);
  // The threat was real: the migration role ran as SUPERUSER (it does not own the database it froze).
  expect(result.status.privilegeElevation).toMatchObject({ elevated: true, role: 'dumper', attributesSet: ['SUPERUSER'] });
  expect(result.status.privilegeElevation?.revertedAt).toBeDefined();
  expect(await tableFingerprint(target, 'hostiledb', 'public.orders')).toEqual(await tableFingerprint(source, 'hostiledb', 'public.orders'));
  // The target got the owner's functions and the database's search_path too (pgmove migrates them).
  expect(await adminQuery(target, 'hostiledb', `SELECT pg_catalog.array_to_string(setconfig, ',') AS s FROM pg_catalog.pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_catalog.pg_database WHERE datname = 'hostiledb')`)).toEqual([
    { s: 'search_path=evil, pg_catalog, public' },
  ]);
  // Nothing of the owner's ran in pgmove's sessions: no call logged on either side, app no superuser.
  expect(await calls(source)).toEqual([]);
  expect(await calls(target)).toEqual([]);
  expect(await roleState(source, 'app')).toEqual({ superuser: false, replication: false, memberOf: [] });
  expect(await roleState(target, 'app')).toEqual({ superuser: false, replication: false, memberOf: [] });
  expect(await roleState(source, 'dumper')).toEqual({ superuser: false, replication: false, memberOf: [] });
  expect(elevationLeftovers(source)).toEqual([]);
});
