/**
 * Bad input never writes anything: each case ends the migration in pre-flight with a non-retryable
 * error that says how to fix it, and the target and the source are exactly as before.
 */
import { TestStack, createDatabase, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { databaseAccessState, migrationFailure, pgmoveCli, startMigration, userObjects, writeSpec } from '../helpers/migration';
import type { MigrationSpecInput } from '../../src/spec';
import { freePort } from '../../scripts/lib/ports';
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

test('pg_dump older than the source', async () => {
  const newer = await stack.startCluster('source18', PROJECT_PG18_BIN);
  const db = await createDatabase(newer, 'app18');
  await expectRefused(
    spec({ source: { uri: db.uri, password: stack.secretFile('s7', db.password) }, tools: { pgBinDir: DEBIAN_PG15_BIN } }),
    'PreflightFailed',
    'older than the source',
    'tools.pgBinDir',
  );
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
