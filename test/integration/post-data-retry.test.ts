/**
 * SIGKILL the worker twice during post-data of a schema with every kind of post-data object — while
 * indexes build, and again once the event trigger exists and a materialized view refreshes (the last
 * pass): each retry completes what is missing, re-creates nothing, and the target ends with every
 * post-data object of the source exactly once.
 */
import { Client } from 'pg';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { startMigration } from '../helpers/migration';
import { statusQuery } from '../../workflows/messages';
import { waitFor } from '../../src/dev/ports';
import { stopWorkerProcess } from '../../src/dev/worker-process';
import type { MigrationResult } from '../../workflows/migrate-database';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
const INDEXED_COLUMNS = 12;

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await adminQuery(source, 'postgres', 'CREATE DATABASE postdb');
  const columns = Array.from({ length: INDEXED_COLUMNS }, (_, i) => `c${i}`);
  await adminQuery(
    source,
    'postdb',
    `CREATE SCHEMA app;
     CREATE TABLE app.big (id bigint PRIMARY KEY, ${columns.map((c) => `${c} text`).join(', ')}, owner text, amount int);
     INSERT INTO app.big SELECT g, ${columns.map((_, i) => `md5((g * ${i + 3})::text)`).join(', ')}, 'user' || g % 10, g % 1000 FROM generate_series(1, 600000) g;
     ${columns.map((c) => `CREATE INDEX big_${c} ON app.big (${c});`).join('\n')}
     COMMENT ON INDEX app.big_c0 IS 'index comment';
     CREATE TABLE app.child (id int PRIMARY KEY, big_id bigint);
     INSERT INTO app.child SELECT g, g FROM generate_series(1, 1000) g;
     ALTER TABLE app.child ADD CONSTRAINT child_big_fk FOREIGN KEY (big_id) REFERENCES app.big (id);
     ALTER TABLE app.child ADD CONSTRAINT child_positive CHECK (big_id > 0) NOT VALID;
     COMMENT ON CONSTRAINT child_big_fk ON app.child IS 'constraint comment';
     CREATE DOMAIN app.small_int AS int;
     ALTER DOMAIN app.small_int ADD CONSTRAINT small_int_range CHECK (VALUE < 1000) NOT VALID;
     CREATE TABLE app.parted (id int, k int) PARTITION BY RANGE (id);
     CREATE TABLE app.parted_1 PARTITION OF app.parted FOR VALUES FROM (0) TO (1000);
     INSERT INTO app.parted SELECT g, g FROM generate_series(0, 999) g;
     CREATE INDEX parted_k ON app.parted (k);
     CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
     CREATE TRIGGER child_touch BEFORE UPDATE ON app.child FOR EACH ROW EXECUTE FUNCTION app.touch();
     COMMENT ON TRIGGER child_touch ON app.child IS 'trigger comment';
     CREATE FUNCTION app.note_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN RAISE NOTICE 'ddl %', tg_tag; END$$;
     CREATE EVENT TRIGGER note_ddl ON ddl_command_end EXECUTE FUNCTION app.note_ddl();
     ALTER EVENT TRIGGER note_ddl ENABLE ALWAYS;
     COMMENT ON EVENT TRIGGER note_ddl IS 'event trigger comment';
     CREATE PUBLICATION orders_pub FOR TABLE app.big WHERE (amount > 10), app.child;
     CREATE PUBLICATION app_pub FOR TABLES IN SCHEMA app;
     COMMENT ON PUBLICATION orders_pub IS 'publication comment';
     ALTER TABLE app.child ENABLE ROW LEVEL SECURITY;
     CREATE POLICY child_mine ON app.child USING (big_id > 0);
     COMMENT ON POLICY child_mine ON app.child IS 'policy comment';
     CREATE RULE child_no_delete AS ON DELETE TO app.child DO INSTEAD NOTHING;
     COMMENT ON RULE child_no_delete ON app.child IS 'rule comment';
     CREATE STATISTICS app.big_owner_amount ON owner, amount FROM app.big;
     COMMENT ON STATISTICS app.big_owner_amount IS 'statistics comment';
     ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO PUBLIC;
     -- Refreshed in the last pass, after the event trigger: a window of seconds to kill in.
     CREATE MATERIALIZED VIEW app.slow_view AS SELECT 1 AS x FROM pg_sleep(6);
     ANALYZE;`,
  );
  // The source subscribes elsewhere (not connected): that wiring is the source server's, never copied.
  await adminQuery(source, 'postdb', `CREATE SUBSCRIPTION upstream_sub CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere password=upstream-secret' PUBLICATION upstream WITH (connect = false)`);
  await adminQuery(target, 'postgres', 'CREATE DATABASE postdb');
});

afterAll(() => stack.stop());

jest.setTimeout(900_000);

/** Post-data objects of postdb, as comparable lines (names and definitions that read the same on 15 and 18). */
async function postDataCatalog(cluster: ClusterHandle): Promise<Record<string, string[]>> {
  const lists: Record<string, string> = {
    indexes: `SELECT concat_ws(' ', schemaname, indexname, indexdef) FROM pg_indexes WHERE schemaname = 'app'`,
    constraints: `SELECT concat_ws(' ', conname, contype, convalidated, pg_get_constraintdef(oid)) FROM pg_constraint WHERE connamespace = 'app'::regnamespace AND contype <> 'n'`,
    triggers: `SELECT concat_ws(' ', tgrelid::regclass, tgname, tgenabled) FROM pg_trigger WHERE NOT tgisinternal`,
    eventTriggers: `SELECT concat_ws(' ', evtname, evtevent, evtenabled, evtfoid::regproc) FROM pg_event_trigger`,
    publications: `SELECT concat_ws(' ', pubname, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate) FROM pg_publication`,
    publicationTables: `SELECT concat_ws(' ', pubname, schemaname, tablename, rowfilter) FROM pg_publication_tables`,
    publicationSchemas: `SELECT concat_ws(' ', p.pubname, pn.pnnspid::regnamespace) FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid`,
    policies: `SELECT concat_ws(' ', polrelid::regclass, polname, polcmd, pg_get_expr(polqual, polrelid)) FROM pg_policy`,
    rowSecurity: `SELECT oid::regclass::text FROM pg_class WHERE relrowsecurity`,
    rules: `SELECT concat_ws(' ', ev_class::regclass, rulename) FROM pg_rewrite WHERE rulename <> '_RETURN'`,
    statistics: `SELECT concat_ws(' ', stxname, stxkeys) FROM pg_statistic_ext`,
    partitionIndexes: `SELECT concat_ws(' of ', indexrelid::regclass, inhparent::regclass) FROM pg_index JOIN pg_inherits ON inhrelid = indexrelid`,
    comments: `SELECT concat_ws(': ', pg_describe_object(classoid, objoid, objsubid), description) FROM pg_description WHERE objoid >= 16384`,
    defaultAcls: `SELECT concat_ws(' ', defaclnamespace::regnamespace, defaclobjtype, array_length(defaclacl, 1)) FROM pg_default_acl`,
    populatedViews: `SELECT concat_ws(' ', oid::regclass, relispopulated) FROM pg_class WHERE relkind = 'm'`,
  };

  const catalog: Record<string, string[]> = {};
  for (const [name, sql] of Object.entries(lists)) {
    catalog[name] = (await adminQuery<{ line: string }>(cluster, 'postdb', `SELECT line FROM (${sql}) AS l(line) ORDER BY 1`)).map((r) => r.line);
  }
  return catalog;
}

/** Polls the target's catalog over one connection until `ready` says so. */
async function waitOnTarget<T>(what: string, ready: (target: Client) => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const client = new Client({ host: target.host, port: target.port, user: target.superuser, password: target.superuserPassword, database: 'postdb' });
  await client.connect();
  try {
    return await waitFor(what, () => ready(client), timeoutMs, 100);
  } finally {
    await client.end();
  }
}

/** postData's current attempt; a migration that ended meanwhile fails the wait at once. */
async function postDataAttempt(handle: Awaited<ReturnType<typeof startMigration>>): Promise<number> {
  const description = await handle.describe();
  if (description.status.name !== 'RUNNING') throw new Error(`the migration ended (${description.status.name}) during post-data: see the worker logs`);
  const pending = description.raw.pendingActivities ?? [];
  return pending.find((a) => a.activityType?.name === 'postData')?.attempt ?? 0;
}

test('a worker killed twice during post-data: every post-data object on the target exactly once', async () => {
  const expected = await postDataCatalog(source);
  // The fixture has what the test is about (a typo here would make the comparison vacuous).
  expect(expected.eventTriggers).toEqual(['note_ddl ddl_command_end A app.note_ddl']);
  expect(expected.publicationTables).toContain('orders_pub app big (amount > 10)');
  expect(expected.publicationSchemas).toEqual(['app_pub app']);
  expect(expected.comments?.length).toBeGreaterThanOrEqual(8);

  const first = await stack.startWorker();
  const handle = await startMigration(stack, {
    id: 'post-data-retry',
    source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/postdb`, password: stack.secretFile('s', source.superuserPassword) },
    method: 'dump',
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/postdb`, password: stack.secretFile('t', target.superuserPassword) },
    jobs: 2,
    // Every index in post-data (none built during the copy): the kills land among its index builds.
    copy: { indexesDuringCopy: false },
    timeouts: { heartbeat: '5s' },
  });
  await waitFor('phase postData', async () => ((await handle.query(statusQuery)).phase === 'postData' ? true : undefined), 300_000, 50);

  // Kill 1: some of app.big's indexes built, others still to build (some building right now).
  const builtAtKill = await waitOnTarget('some of app.big\'s indexes on the target', async (client) => {
    const built = Number((await client.query(`SELECT count(*) AS n FROM pg_indexes WHERE schemaname = 'app' AND indexname LIKE 'big\\_c%'`)).rows[0].n);
    return built >= 2 ? built : undefined;
  }, 300_000);
  await stopWorkerProcess(first, 'SIGKILL');
  expect(builtAtKill).toBeLessThan(INDEXED_COLUMNS);
  const second = await stack.startWorker();

  // Kill 2: the retry got to the last pass (the event trigger exists), the view is still refreshing.
  await waitOnTarget('the event trigger on the target, created by a retry', async (client) => {
    const attempt = await postDataAttempt(handle);
    const exists = (await client.query(`SELECT 1 FROM pg_event_trigger WHERE evtname = 'note_ddl'`)).rowCount;
    return exists && attempt >= 2 ? true : undefined;
  }, 300_000);
  const refreshing = await adminQuery<{ populated: boolean }>(target, 'postdb', `SELECT relispopulated AS populated FROM pg_class WHERE oid = 'app.slow_view'::regclass`);
  await stopWorkerProcess(second, 'SIGKILL');
  expect(refreshing[0]?.populated).toBe(false);
  await stack.startWorker();

  const result = (await handle.result()) as MigrationResult;
  expect(result.status.validation?.ok).toBe(true);
  expect(await postDataCatalog(target)).toEqual(expected);

  // The history shows the two retries of postData: its completed attempt is the third.
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'postData');
  const started = events.find((e) => String(e.activityTaskStartedEventAttributes?.scheduledEventId) === String(scheduled?.eventId));
  expect(started?.activityTaskStartedEventAttributes?.attempt).toBe(3);
  // Subscriptions are not dumped (see README): the source's stays there only.
  expect(await adminQuery(source, 'postdb', 'SELECT subname FROM pg_subscription')).toEqual([{ subname: 'upstream_sub' }]);
  expect(await adminQuery(target, 'postgres', 'SELECT subname FROM pg_subscription')).toEqual([]);
});
