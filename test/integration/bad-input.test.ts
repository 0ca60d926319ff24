/**
 * Bad input never writes anything: each case ends the migration in pre-flight with a non-retryable
 * error that says how to fix it, and the target and the source are exactly as before.
 */
import { STATEMENT_LOGGING_SETTINGS } from '../helpers/online';
import { TestStack, createDatabase, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { databaseAccessState, migrationFailure, pgmoveCli, startMigration, userObjects, writeSpec } from '../helpers/migration';
import type { MigrationSpecInput } from '../../src/spec';
import { freePort } from '../../src/dev/ports';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
let sourceDb: { uri: string; password: string };
let targetDb: { uri: string; password: string };
let sourceStateBefore: Awaited<ReturnType<typeof databaseAccessState>>;
let caseNumber = 0;

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await stack.startWorker();
  sourceDb = await createDatabase(source, 'app');
  // The freeze ends other roles' sessions: the migration role needs pg_signal_backend (pre-flight checks it).
  await adminQuery(source, 'postgres', 'GRANT pg_signal_backend TO migrator');
  await adminQuery(source, 'app', `SET ROLE migrator; CREATE TABLE accounts (id int PRIMARY KEY, name text); INSERT INTO accounts VALUES (1, 'a'), (2, 'b')`);
  targetDb = await createDatabase(target, 'app', 'migrator', 'target-secret-pw');
  sourceStateBefore = await databaseAccessState(source, 'app');
});

afterAll(() => stack.stop());

function spec(overrides: Partial<MigrationSpecInput> = {}): MigrationSpecInput {
  caseNumber += 1;
  return {
    id: `bad-input-${caseNumber}`,
    source: { uri: sourceDb.uri, password: stack.secretFile('source', sourceDb.password) },
    target: { uri: targetDb.uri, password: stack.secretFile('target', targetDb.password) },
    ...overrides,
  };
}

async function expectRefused(input: MigrationSpecInput, type: string, ...fragments: string[]): Promise<string> {
  const failure = await migrationFailure(await startMigration(stack, input));
  expect(failure.type).toBe(type);
  expect(failure.nonRetryable).toBe(true);
  for (const fragment of fragments) expect(failure.message).toContain(fragment);
  expect(failure.message).not.toContain(sourceDb.password);
  expect(failure.message).not.toContain(targetDb.password);
  // Nothing was written anywhere.
  expect(await userObjects(target, 'app')).toEqual([]);
  expect(await databaseAccessState(source, 'app')).toEqual(sourceStateBefore);
  return failure.message;
}

test('wrong password', async () => {
  await expectRefused(
    spec({ source: { uri: sourceDb.uri, password: stack.secretFile('wrong', 'not-the-password') } }),
    'BadInput',
    'authentication failed',
    'source.password',
  );
});

test('unreachable host', async () => {
  const closedPort = await freePort();
  await expectRefused(
    spec({ target: { uri: `postgresql://migrator@127.0.0.1:${closedPort}/app`, password: stack.secretFile('t2', targetDb.password) } }),
    'Unreachable',
    `127.0.0.1:${closedPort}`,
    'target.uri',
  );
});

test('missing database', async () => {
  await expectRefused(
    spec({ source: { uri: sourceDb.uri.replace(/\/app$/, '/no_such_db'), password: stack.secretFile('s3', sourceDb.password) } }),
    'BadInput',
    'database does not exist',
  );
});

test('missing password variable', async () => {
  await expectRefused(spec({ source: { uri: sourceDb.uri, password: 'env:PGMOVE_TEST_UNSET_VARIABLE' } }), 'SecretNotFound', 'PGMOVE_TEST_UNSET_VARIABLE');
});

test('non-empty target', async () => {
  await createDatabase(target, 'busy', 'migrator', 'target-secret-pw');
  await adminQuery(target, 'busy', `CREATE TABLE existing_data (id int)`);
  const message = await expectRefused(
    spec({ target: { uri: targetDb.uri.replace(/\/app$/, '/busy'), password: stack.secretFile('t5', targetDb.password) } }),
    'PreflightFailed',
    'target is empty',
    'public.existing_data',
    'never merges',
  );
  expect(message).toContain('CREATE DATABASE');
  expect(await adminQuery(target, 'busy', 'SELECT count(*)::int AS n FROM existing_data')).toEqual([{ n: 0 }]);
});

test('a target holding only what the reset would also drop (type, domain, collation, aggregate, large object) is not empty', async () => {
  const cases: [string, string, string][] = [
    ['only_type', `CREATE TYPE public.mood AS ENUM ('ok', 'sad')`, 'type public.mood'],
    ['only_domain', `CREATE DOMAIN public.positive AS int CHECK (VALUE > 0)`, 'domain public.positive'],
    ['only_collation', `CREATE COLLATION public.bytewise (provider = libc, locale = 'C')`, 'collation public.bytewise'],
    ['only_aggregate', `CREATE AGGREGATE public.total (int) (sfunc = int4pl, stype = int)`, 'aggregate public.total(integer)'],
    ['only_large_object', `SELECT lo_from_bytea(0, 'kept'::bytea)`, '1 large object(s)'],
  ];
  for (const [database, create, named] of cases) {
    await createDatabase(target, database, 'migrator', 'target-secret-pw');
    await adminQuery(target, database, create);
    await expectRefused(spec({ target: { uri: targetDb.uri.replace(/\/app$/, `/${database}`), password: stack.secretFile(`t-${database}`, targetDb.password) } }), 'PreflightFailed', 'target is empty', named);
  }
  // Refused before anything was written: the large object is still there.
  expect(await adminQuery(target, 'only_large_object', 'SELECT count(*)::int AS n FROM pg_largeobject_metadata')).toEqual([{ n: 1 }]);
});

test('missing privilege on a source table names the GRANT that fixes it', async () => {
  await adminQuery(source, 'app', `CREATE TABLE secrets_table (id int PRIMARY KEY)`); // owned by postgres, not readable by migrator
  try {
    await expectRefused(spec(), 'PreflightFailed', 'cannot read 1 table(s)', 'public.secrets_table', 'GRANT SELECT ON ALL TABLES IN SCHEMA "public" TO "migrator";');
  } finally {
    await adminQuery(source, 'app', `DROP TABLE secrets_table`);
  }
});

test('a grant to a role the target lacks names the CREATE ROLE that fixes it', async () => {
  await adminQuery(source, 'postgres', 'CREATE ROLE reporting NOLOGIN');
  await adminQuery(source, 'app', 'GRANT SELECT ON accounts TO reporting');
  try {
    await expectRefused(spec(), 'PreflightFailed', 'missing on the target: reporting', 'CREATE ROLE "reporting" NOLOGIN;', 'dump.noPrivileges: true');
  } finally {
    await adminQuery(source, 'app', 'REVOKE SELECT ON accounts FROM reporting');
  }
});

/** A PostgreSQL 18 source (newer than both the PG15 tools and the PG15 cluster), started once for the tests that need it. */
let newerSource: Promise<{ uri: string; password: string }> | undefined;
function pg18Source(): Promise<{ uri: string; password: string }> {
  newerSource ??= stack.startCluster('source18', PROJECT_PG18_BIN).then((newer) => createDatabase(newer, 'app18'));
  return newerSource;
}

test('pg_dump older than the source', async () => {
  const db = await pg18Source();
  await expectRefused(
    spec({ source: { uri: db.uri, password: stack.secretFile('s7', db.password) }, tools: { pgBinDir: DEBIAN_PG15_BIN } }),
    'PreflightFailed',
    'older than the source',
    'tools.pgBinDir',
  );
});

test('a target of an older major than the source names the major to use', async () => {
  const db = await pg18Source();
  // The PostgreSQL 15 cluster of the source is the older target here.
  const older = await createDatabase(source, 'older_target');
  await expectRefused(
    spec({ source: { uri: db.uri, password: stack.secretFile('s-newer', db.password) }, target: { uri: older.uri, password: stack.secretFile('t-older', sourceDb.password) } }),
    'PreflightFailed',
    'versions: source 18',
    'use a target of major 18 or newer: PostgreSQL cannot load into an older major',
  );
});

test('missing CREATE privileges on the target name the GRANTs that fix them', async () => {
  // A database the migration role does not own: neither CREATE on it nor (PostgreSQL 15+) on its public schema.
  await createDatabase(target, 'not_mine', 'postgres');
  await expectRefused(
    spec({ target: { uri: targetDb.uri.replace(/\/app$/, '/not_mine'), password: stack.secretFile('t-not-mine', targetDb.password) } }),
    'PreflightFailed',
    'target write privileges: migrator lacks CREATE privileges on the target',
    'GRANT CREATE ON DATABASE "not_mine" TO "migrator"; GRANT CREATE ON SCHEMA public TO "migrator";',
  );
});

test('an extension the target server does not have names the package to install', async () => {
  // adminpack ships with PostgreSQL 15 and was removed in 17: the PostgreSQL 18 target cannot have it.
  await adminQuery(source, 'app', 'CREATE EXTENSION adminpack');
  try {
    await expectRefused(spec(), 'PreflightFailed', 'extensions: missing on the target: adminpack', 'install the packages that provide adminpack on the target server');
  } finally {
    await adminQuery(source, 'app', 'DROP EXTENSION adminpack');
  }
});

test('a large object the migration role cannot read names the GRANT that fixes it', async () => {
  await adminQuery(source, 'app', `SELECT lo_from_bytea(0, 'owned by postgres'::bytea)`);
  try {
    await expectRefused(spec(), 'PreflightFailed', 'source large objects: migrator cannot read every large object', 'GRANT SELECT ON LARGE OBJECT <oid> TO "migrator"');
  } finally {
    await adminQuery(source, 'app', 'SELECT lo_unlink(oid) FROM pg_largeobject_metadata');
  }
});

test('method logical: every blocker of the source and the target, each with its fix', async () => {
  // A table without a primary key, a table the migration role may read but does not own, every
  // replication slot and WAL sender taken, no REPLICATION attribute, no right to subscribe on the target.
  await adminQuery(source, 'app', `SET ROLE migrator; CREATE TABLE events_nopk (id int)`);
  await adminQuery(source, 'app', `CREATE TABLE audit (id int PRIMARY KEY); GRANT SELECT ON audit TO migrator`);
  const [free] = await adminQuery<{ slots: number; senders: number }>(
    source,
    'postgres',
    `SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int AS slots,
            current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int AS senders`,
  );
  await adminQuery(source, 'postgres', `SELECT pg_create_physical_replication_slot('bad_input_fill_' || g) FROM generate_series(1, ${free!.slots}) g`);
  // The WAL senders are counted in pg_stat_activity, where a role sees other roles' backend types only
  // with pg_read_all_stats (or as a superuser): without it, the senders below (postgres's) go uncounted.
  await adminQuery(source, 'postgres', 'GRANT pg_read_all_stats TO migrator');
  const walSenders: Client[] = [];
  try {
    for (let i = 0; i < free!.senders; i++) {
      const client = new Client(Object.assign({ host: source.host, port: source.port, user: 'postgres', password: source.superuserPassword, database: 'postgres' }, { replication: 'database' }));
      await client.connect();
      walSenders.push(client);
    }
    const message = await expectRefused(
      spec({ method: 'logical' }),
      'PreflightFailed',
      'no free replication slot (max_replication_slots = 10, 10 in use)',
      'fix: ALTER SYSTEM SET max_replication_slots = 12; then restart the source (or drop an unused slot)',
      'no free WAL sender (max_wal_senders = 10, 10 in use)',
      'fix: ALTER SYSTEM SET max_wal_senders = 12; then restart the source',
      'migrator may not create a replication slot',
      'fix: on the source: ALTER ROLE "migrator" REPLICATION; (on RDS: GRANT rds_replication TO "migrator";)',
      'migrator does not own 1 table(s) (a publication needs ownership): public.audit',
      'fix: GRANT <owner role> TO "migrator"; for each owner, or run as the owner',
      '1 table(s) without a primary key or replica identity (UPDATE/DELETE could not be replicated): public.events_nopk',
      'or set logical.replicaIdentityFull: true',
      'migrator may not create a subscription on the target (PostgreSQL 18)',
      'fix: on the target: GRANT pg_create_subscription TO "migrator"; GRANT CREATE ON DATABASE "app" TO "migrator";',
      '— or set method: dump (offline copy)',
    );
    // With other blockers the target is not asked to connect to the source.
    expect(message).not.toContain('the target cannot connect to the source');
  } finally {
    await Promise.all(walSenders.map((client) => client.end().catch(() => undefined)));
    await adminQuery(source, 'postgres', 'REVOKE pg_read_all_stats FROM migrator');
    await adminQuery(source, 'postgres', `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'bad\\_input\\_fill\\_%'`);
    await adminQuery(source, 'app', 'DROP TABLE events_nopk, audit');
  }
});

test('method logical: a target that cannot reach the source (tried in a rolled-back CREATE SUBSCRIPTION) names the address to allow', async () => {
  await adminQuery(source, 'postgres', 'ALTER ROLE migrator REPLICATION');
  await adminQuery(target, 'postgres', 'GRANT pg_create_subscription TO migrator');
  // So that the logging of CREATE SUBSCRIPTION is not what refuses it (the probe must run).
  await adminQuery(target, 'postgres', `GRANT SET ON PARAMETER ${STATEMENT_LOGGING_SETTINGS.join(', ')} TO migrator`);
  const closedPort = await freePort();
  try {
    await expectRefused(
      spec({ method: 'logical', logical: { sourceUriFromTarget: `postgresql://migrator@127.0.0.1:${closedPort}/app` } }),
      'PreflightFailed',
      `the target cannot connect to the source at 127.0.0.1:${closedPort} as migrator`,
      "allow the target's address in the source's pg_hba.conf / security group, or set logical.sourceUriFromTarget",
    );
  } finally {
    await adminQuery(source, 'postgres', 'ALTER ROLE migrator NOREPLICATION');
    await adminQuery(target, 'postgres', 'REVOKE pg_create_subscription FROM migrator');
    await adminQuery(target, 'postgres', `REVOKE SET ON PARAMETER ${STATEMENT_LOGGING_SETTINGS.join(', ')} FROM migrator`);
  }
});

test('malformed spec reaching the workflow directly (temporal CLI path)', async () => {
  const input = { ...spec(), jobz: 4 } as unknown as MigrationSpecInput;
  await expectRefused(input, 'BadSpec', 'unknown field(s) "jobz"');
});

test('the CLI refuses a bad spec before starting anything', () => {
  const unknownField = writeSpec(stack, 'unknown', { ...spec(), copyMode: 'fast' });
  const result = pgmoveCli(stack, ['start', '-f', unknownField]);
  expect(result.code).toBe(2);
  expect(result.stderr).toContain('unknown field(s) "copyMode"');

  const withPassword = writeSpec(stack, 'pw-in-uri', { ...spec(), source: { uri: sourceDb.uri.replace('migrator@', 'migrator:hunter2@') } });
  const refused = pgmoveCli(stack, ['start', '-f', withPassword]);
  expect(refused.code).toBe(2);
  expect(refused.stderr).toContain('source.uri: contains a password');
  expect(refused.stderr).not.toContain('hunter2');

  const missing = pgmoveCli(stack, ['start', '-f', join(stack.dir, 'no-such-spec.yaml')]);
  expect(missing.code).toBe(2);
  expect(missing.stderr).toContain(`cannot read spec file ${join(stack.dir, 'no-such-spec.yaml')}: ENOENT`);

  const notYaml = join(stack.dir, 'not-yaml.yaml');
  writeFileSync(notYaml, 'source: [unclosed\n');
  const garbled = pgmoveCli(stack, ['start', '-f', notYaml]);
  expect(garbled.code).toBe(2);
  expect(garbled.stderr).toContain(`spec file ${notYaml} is not valid YAML/JSON`);
});

test('missing freeze privilege names the GRANT that fixes it', async () => {
  await adminQuery(source, 'postgres', 'REVOKE pg_signal_backend FROM migrator');
  try {
    await expectRefused(spec(), 'PreflightFailed', 'cannot end other sessions', 'GRANT pg_signal_backend TO "migrator";', 'freezeSource: false');
  } finally {
    await adminQuery(source, 'postgres', 'GRANT pg_signal_backend TO migrator');
  }
});

test('source and target are one database, reached under another host name', async () => {
  // localhost and 127.0.0.1 are different strings for the same server: the servers are compared.
  const sameDatabase = sourceDb.uri.replace('@127.0.0.1:', '@localhost:');
  expect(sameDatabase).not.toBe(sourceDb.uri);
  const message = await expectRefused(
    spec({ target: { uri: sameDatabase, password: stack.secretFile('same-db', sourceDb.password) } }),
    'PreflightFailed',
    'source and target are different databases',
    `target migrator@localhost:${source.port}/app are the same database`,
    'system identifier',
    'point target.uri at another database',
  );
  // Refused first and alone (the other checks would describe the source twice).
  expect(message).not.toContain('target is empty');
  expect(await adminQuery(source, 'app', 'SELECT count(*)::int AS n FROM accounts')).toEqual([{ n: 2 }]);
});

test('another database of the source server is a valid target (dry run)', async () => {
  const sibling = await createDatabase(source, 'app_sibling');
  const handle = await startMigration(stack, spec({ dryRun: true, target: { uri: sibling.uri.replace('@127.0.0.1:', '@localhost:'), password: stack.secretFile('sibling', sibling.password) } }));
  const result = (await handle.result()) as { outcome: string; status: { preflight?: { notes: string[] } } };
  expect(result.outcome).toBe('dryRun');
  expect(result.status.preflight?.notes.join('\n')).toContain('source and target are databases of one server');
  expect(await userObjects(source, 'app_sibling')).toEqual([]);
});

test('a physical copy of the target server (same system identifier, same database oid) is another server', async () => {
  // What a restored snapshot of a server is: its own running server with the same identity on disk.
  const cloneDir = join(stack.dir, 'clone18');
  const backup = spawnSync(join(PROJECT_PG18_BIN, 'pg_basebackup'), ['-h', target.host, '-p', String(target.port), '-U', 'postgres', '-D', cloneDir, '-c', 'fast'], {
    encoding: 'utf8',
    env: { ...process.env, PGPASSWORD: target.superuserPassword },
  });
  expect({ status: backup.status, stderr: backup.stderr.replace(/WARNING: {2}skipping special file .*\n/g, '') }).toEqual({ status: 0, stderr: '' });
  // The clone answers the test's own superuser login (its password is the copied one).
  const hba = join(cloneDir, 'pg_hba.conf');
  writeFileSync(hba, 'host all postgres 127.0.0.1/32 trust\n' + readFileSync(hba, 'utf8'));
  if (process.getuid?.() === 0) spawnSync('chown', ['-R', 'postgres:postgres', cloneDir]);
  const clone = await stack.startCluster('clone18', PROJECT_PG18_BIN);
  const identity = async (cluster: ClusterHandle) => {
    const client = new Client({ host: cluster.host, port: cluster.port, user: 'migrator', password: targetDb.password, database: 'app' });
    await client.connect();
    try {
      return (await client.query(`SELECT system_identifier::text AS id, (SELECT oid::text FROM pg_database WHERE datname = 'app') AS oid FROM pg_control_system()`)).rows[0] as { id: string; oid: string };
    } finally {
      await client.end();
    }
  };
  expect(await identity(clone)).toEqual(await identity(target));
  const handle = await startMigration(stack, {
    ...spec({ dryRun: true, freezeSource: false }),
    source: { uri: targetDb.uri, password: stack.secretFile('clone-source', targetDb.password) },
    target: { uri: `postgresql://migrator@127.0.0.1:${clone.port}/app`, password: stack.secretFile('clone-target', targetDb.password) },
  });
  const result = (await handle.result()) as { outcome: string; status: { preflight?: { notes: string[] } } };
  expect(result.outcome).toBe('dryRun');
  expect(result.status.preflight?.notes.join('\n')).not.toContain('one server');
});

test('include/exclude entries that match nothing on the source are each named, with a near miss', async () => {
  const message = await expectRefused(
    spec({ include: { schemas: [], tables: ['public.accounts', 'public.Accounts'] }, exclude: { schemas: ['scratch'], tables: ['public.audit_tmp'] } }),
    'PreflightFailed',
    'include/exclude filters',
    'include.tables "public.Accounts" matches no table on the source (did you mean "public.accounts"?)',
    'exclude.schemas "scratch" matches no schema on the source',
    'exclude.tables "public.audit_tmp" matches no table on the source',
    'names are exact and case-sensitive',
  );
  expect(message).not.toContain('"public.accounts" matches');
  // The schema filter too, in a spec of its own (include lists schemas or tables, not both).
  await expectRefused(spec({ include: { schemas: ['public', 'pubic'], tables: [] } }), 'PreflightFailed', 'include.schemas "pubic" matches no schema on the source');
});

test('dry run reports the plan and writes nothing', async () => {
  const handle = await startMigration(stack, spec({ dryRun: true }));
  const result = (await handle.result()) as { outcome: string; status: { preflight?: { plan: string[]; tables: number } } };
  expect(result.outcome).toBe('dryRun');
  expect(result.status.preflight?.tables).toBe(1);
  expect(result.status.preflight?.plan.join('\n')).toContain('copy 1 table(s)');
  expect(await userObjects(target, 'app')).toEqual([]);
  expect(await databaseAccessState(source, 'app')).toEqual(sourceStateBefore);
});
