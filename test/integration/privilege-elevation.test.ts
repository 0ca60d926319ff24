/**
 * Whole migrations from a source whose migration role is a plain login role and whose pg_hba.conf
 * demands passwords everywhere: the `local` backend elevates (least privilege for the method), the
 * migration succeeds, and afterwards pg_hba.conf is byte-identical and the role has its old attributes
 * — also when the worker is SIGKILLed between the elevation and its revert.
 */
import { join } from 'node:path';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { ALLOWED_SECRETS_VARIABLE } from '../../src/secret-policy';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { createBigDatabase, databaseAccessState, pgmoveCliAsync, startMigration, tableFingerprint } from '../helpers/migration';
import { createPlainRole, elevationLeftovers, kubectlStandIn, requirePasswordsEverywhere, roleState, sha256 } from '../helpers/elevation';
import { statusQuery } from '../../workflows/messages';
import { waitFor } from '../../src/dev/ports';
import { stopWorkerProcess } from '../../src/dev/worker-process';
import type { MigrationResult } from '../../workflows/migrate-database';
import type { MigrationSpecInput } from '../../src/spec';
import { migrationFailure } from '../helpers/migration';
import { replicationLeftovers, waitForStatus } from '../helpers/online';
import { OWED } from '../../src/model';

const stack = new TestStack();
let source: ClusterHandle;
let target: ClusterHandle;
let hba: string;

beforeAll(async () => {
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  hba = join(source.dataDir, 'pg_hba.conf');
  await requirePasswordsEverywhere(source);
  await createPlainRole(source, 'dumper', 'dumper-pw');
  for (const db of ['elevdb', 'crashdb', 'logicdb', 'faildb', 'kubedb', 'keepdb', 'hbadb', 'wipedb']) {
    await createBigDatabase(source, db, db === 'crashdb' ? 400_000 : 20_000);
    await adminQuery(target, 'postgres', `CREATE DATABASE ${db}`);
  }
  // logicdb belongs to its migration role (as an application's database does), which lacks REPLICATION.
  await createPlainRole(source, 'owner', 'owner-pw');
  for (const db of ['logicdb', 'hbadb', 'wipedb']) {
    await adminQuery(source, db, `ALTER DATABASE ${db} OWNER TO owner; ALTER TABLE big OWNER TO owner; ALTER TABLE small_a OWNER TO owner; ALTER TABLE small_b OWNER TO owner`);
  }
  // A role that already reads everything through pg_read_all_data and has REPLICATION — but is NOINHERIT,
  // so it would use the membership's privileges only after SET ROLE.
  await createPlainRole(source, 'keeper', 'keeper-pw');
  await adminQuery(source, 'postgres', 'ALTER ROLE keeper NOINHERIT REPLICATION; GRANT pg_read_all_data TO keeper');
  await adminQuery(target, 'faildb', 'CREATE TABLE already_here (id int)');
});

afterAll(() => stack.stop());

function spec(id: string, db: string, extra: Partial<MigrationSpecInput> = {}): MigrationSpecInput {
  return {
    id,
    source: {
      uri: `postgresql://dumper@127.0.0.1:${source.port}/${db}`,
      password: stack.secretFile('dumper', 'dumper-pw'),
      privilegeElevation: { backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') },
    },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/${db}`, password: stack.secretFile('t', target.superuserPassword) },
    method: 'dump',
    timeouts: { heartbeat: '5s' },
    ...extra,
  };
}

test('a plain role: pg_read_all_data for the copy at a snapshot, reverted; pg_hba.conf byte-identical', async () => {
  await stack.startWorker();
  const hbaBefore = sha256(hba);
  const roleBefore = await roleState(source, 'dumper');
  expect(roleBefore).toEqual({ superuser: false, replication: false, memberOf: [] });
  const handle = await startMigration(stack, spec('elev-snapshot', 'elevdb', { freezeSource: false }));
  const result = (await handle.result()) as MigrationResult;
  expect(result.outcome).toBe('completed');
  expect(result.status.validation?.ok).toBe(true);
  expect(await tableFingerprint(target, 'elevdb', 'public.big')).toEqual(await tableFingerprint(source, 'elevdb', 'public.big'));
  // Least privilege for this method, recorded without secrets, reverted.
  const record = result.status.privilegeElevation!;
  expect(record).toMatchObject({ elevated: true, role: 'dumper', membershipsGranted: ['pg_read_all_data'], attributesSet: [], hbaFile: hba, osUser: 'postgres' });
  expect(record.revertedAt).toBeDefined();
  expect(JSON.stringify(result.status)).not.toContain('dumper-pw');
  expect(result.status.cleanupOwed).toEqual([]);
  expect(sha256(hba)).toBe(hbaBefore);
  expect(await roleState(source, 'dumper')).toEqual(roleBefore);
  expect(elevationLeftovers(source)).toEqual([]);
});

test('SIGKILL between elevation and revert: a new worker finishes, everything restored', async () => {
  const first = await stack.startWorker();
  const hbaBefore = sha256(hba);
  const roleBefore = await roleState(source, 'dumper');
  // The offline freeze needs database ownership, which no predefined role gives: SUPERUSER.
  const handle = await startMigration(stack, spec('elev-crash', 'crashdb', { freezeSource: true, copy: { splitTablesLargerThanMB: 5, batchSmallTablesUpToMB: 1 } }));
  await waitFor('the elevation to be recorded', async () => (await handle.query(statusQuery)).privilegeElevation?.elevated, 120_000, 20);
  await stopWorkerProcess(first, 'SIGKILL');
  // What the killed worker left: an elevated role (the revert is owed) — but no trust line: it was taken
  // out again right after the grant.
  expect((await roleState(source, 'dumper')).superuser).toBe(true);
  expect(readFileSync(hba, 'utf8')).not.toContain('# pgmove elev-crash:');
  expect(sha256(hba)).toBe(hbaBefore);
  const owed = await handle.query(statusQuery);
  expect(owed.cleanupOwed).toContain(OWED.elevation);

  await stack.startWorker();
  const result = (await handle.result()) as MigrationResult;
  expect(result.status.validation?.ok).toBe(true);
  expect(result.status.privilegeElevation).toMatchObject({ elevated: true, attributesSet: ['SUPERUSER'], attributesBefore: { superuser: false, replication: false } });
  expect(result.status.privilegeElevation?.revertedAt).toBeDefined();
  expect(sha256(hba)).toBe(hbaBefore);
  expect(await roleState(source, 'dumper')).toEqual(roleBefore);
  expect(elevationLeftovers(source)).toEqual([]);
  expect(await tableFingerprint(target, 'crashdb', 'public.big')).toEqual(await tableFingerprint(source, 'crashdb', 'public.big'));
});

test('logical, aborted while syncing: REPLICATION granted for the slot, the slot dropped, then everything reverted', async () => {
  await stack.startWorker();
  const hbaBefore = sha256(hba);
  const roleBefore = await roleState(source, 'owner');
  const input = spec('elev-logical', 'logicdb', { method: 'logical' });
  input.source.uri = `postgresql://owner@127.0.0.1:${source.port}/logicdb`;
  input.source.password = stack.secretFile('owner', 'owner-pw');
  const handle = await startMigration(stack, input);
  const syncing = await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true, 180_000);
  expect(syncing.privilegeElevation).toMatchObject({ elevated: true, attributesSet: ['REPLICATION'], membershipsGranted: ['pg_signal_backend'] });
  expect(await roleState(source, 'owner')).toEqual({ superuser: false, replication: true, memberOf: ['pg_signal_backend'] });
  // Syncing with the grants in effect, and pg_hba.conf as before: no trust line while the migration runs.
  expect(readFileSync(hba, 'utf8')).not.toContain('# pgmove elev-logical');
  expect(sha256(hba)).toBe(hbaBefore);
  await handle.signal('abort', { reason: 'test' });
  expect((await migrationFailure(handle)).type).toBe('Aborted');
  const status = await handle.query(statusQuery);
  expect(status.privilegeElevation?.revertedAt).toBeDefined();
  expect(status.cleanupOwed).toEqual([]);
  expect(await replicationLeftovers(source, 'logicdb')).toEqual([]);
  expect(sha256(hba)).toBe(hbaBefore);
  expect(await roleState(source, 'owner')).toEqual(roleBefore);
  expect(elevationLeftovers(source)).toEqual([]);
});

/** A logical migration as the owner role (it lacks REPLICATION and pg_signal_backend), held in syncing. */
async function syncingAsOwner(id: string, db: string) {
  const input = spec(id, db, { method: 'logical' });
  input.source.uri = `postgresql://owner@127.0.0.1:${source.port}/${db}`;
  input.source.password = stack.secretFile('owner', 'owner-pw');
  const handle = await startMigration(stack, input);
  const syncing = await waitForStatus(handle, 'syncing', (s) => s.phase === 'syncing' && s.replication?.streaming === true, 180_000);
  expect(syncing.privilegeElevation).toMatchObject({ elevated: true, attributesSet: ['REPLICATION'], membershipsGranted: ['pg_signal_backend'] });
  return handle;
}

test('pg_hba.conf rendered anew while syncing (an unrelated line added): kept exactly as rendered after the revert', async () => {
  await stack.startWorker();
  const original = readFileSync(hba, 'utf8');
  const roleBefore = await roleState(source, 'owner');
  const handle = await syncingAsOwner('elev-hba', 'hbadb');
  // Config management writes pg_hba.conf from its template, with a new line (pgmove's own line is not
  // in the file while it syncs, so the template is the whole file).
  const rendered = `${original}host    all   all   10.99.0.0/16   scram-sha-256   # added by config management\n`;
  writeFileSync(hba, rendered);
  await adminQuery(source, 'postgres', 'SELECT pg_reload_conf()');
  await handle.signal('abort', { reason: 'test' });
  expect((await migrationFailure(handle)).type).toBe('Aborted');
  const status = await handle.query(statusQuery);
  expect(status.privilegeElevation?.revertedAt).toBeDefined();
  expect(status.cleanupOwed).toEqual([]);
  expect(readFileSync(hba, 'utf8')).toBe(rendered);
  expect(await roleState(source, 'owner')).toEqual(roleBefore);
  expect(elevationLeftovers(source)).toEqual([]);
  writeFileSync(hba, original);
  await adminQuery(source, 'postgres', 'SELECT pg_reload_conf()');
});

test('the state file next to pg_hba.conf is wiped while syncing (pod restart): the revert works from the workflow\'s record', async () => {
  await stack.startWorker();
  const hbaBefore = sha256(hba);
  const roleBefore = await roleState(source, 'owner');
  const handle = await syncingAsOwner('elev-wiped', 'wipedb');
  rmSync(join(source.dataDir, 'pg_hba.conf.pgmove-elev-wiped.json'));
  expect(elevationLeftovers(source)).toEqual([]);
  await handle.signal('abort', { reason: 'test' });
  expect((await migrationFailure(handle)).type).toBe('Aborted');
  const status = await handle.query(statusQuery);
  expect(status.privilegeElevation?.revertedAt).toBeDefined();
  expect(status.cleanupOwed).toEqual([]);
  expect(await replicationLeftovers(source, 'wipedb')).toEqual([]);
  // REPLICATION and pg_signal_backend taken back although the server had no record of granting them.
  expect(await roleState(source, 'owner')).toEqual(roleBefore);
  expect(sha256(hba)).toBe(hbaBefore);
  expect(elevationLeftovers(source)).toEqual([]);
});

test('a NOINHERIT role that already was a member of pg_read_all_data and had REPLICATION: INHERIT for the migration, everything else kept', async () => {
  await stack.startWorker();
  const hbaBefore = sha256(hba);
  const inherit = async () => (await adminQuery<{ rolinherit: boolean }>(source, 'postgres', "SELECT rolinherit FROM pg_roles WHERE rolname = 'keeper'"))[0]!.rolinherit;
  expect(await roleState(source, 'keeper')).toEqual({ superuser: false, replication: true, memberOf: ['pg_read_all_data'] });
  expect(await inherit()).toBe(false);
  const input = spec('elev-keep', 'keepdb', { freezeSource: false, retries: { maximumAttempts: 2 } });
  input.source.uri = `postgresql://keeper@127.0.0.1:${source.port}/keepdb`;
  input.source.password = stack.secretFile('keeper', 'keeper-pw');
  const result = (await (await startMigration(stack, input)).result()) as MigrationResult;
  expect(result.outcome).toBe('completed');
  expect(await tableFingerprint(target, 'keepdb', 'public.big')).toEqual(await tableFingerprint(source, 'keepdb', 'public.big'));
  expect(result.status.privilegeElevation).toMatchObject({
    elevated: true,
    attributesSet: ['INHERIT'],
    membershipsGranted: ['pg_read_all_data'],
    attributesBefore: { superuser: false, replication: true, inherit: false },
    membershipsBefore: { pg_read_all_data: { member: true } },
  });
  expect(result.status.privilegeElevation?.revertedAt).toBeDefined();
  expect(await roleState(source, 'keeper')).toEqual({ superuser: false, replication: true, memberOf: ['pg_read_all_data'] });
  expect(await inherit()).toBe(false);
  expect(sha256(hba)).toBe(hbaBefore);
  expect(elevationLeftovers(source)).toEqual([]);
});

test('logical, switched: the source stays frozen, the revert still runs in it, pgmove unfreeze releases it', async () => {
  await stack.startWorker();
  const hbaBefore = sha256(hba);
  const roleBefore = await roleState(source, 'owner');
  const accessBefore = await databaseAccessState(source, 'logicdb');
  await adminQuery(target, 'postgres', 'CREATE DATABASE logicdb_switched');
  const input = spec('elev-switched', 'logicdb', { method: 'logical', cutover: { autoCutover: true } });
  input.source.uri = `postgresql://owner@127.0.0.1:${source.port}/logicdb`;
  input.source.password = stack.secretFile('owner', 'owner-pw');
  input.target.uri = `postgresql://postgres@127.0.0.1:${target.port}/logicdb_switched`;
  const result = (await (await startMigration(stack, input)).result()) as MigrationResult;
  expect(result.status.cutovers?.map((c) => c.outcome)).toEqual(['switched']);
  expect(await tableFingerprint(target, 'logicdb_switched', 'public.big')).toEqual(await tableFingerprint(source, 'logicdb', 'public.big'));
  // The revert ran inside the frozen (read-only by default) database: everything is back but the fence.
  expect(result.status.privilegeElevation?.revertedAt).toBeDefined();
  expect(sha256(hba)).toBe(hbaBefore);
  expect(await roleState(source, 'owner')).toEqual(roleBefore);
  expect(elevationLeftovers(source)).toEqual([]);
  expect((await databaseAccessState(source, 'logicdb')).settings).toContain('default_transaction_read_only=on');
  // The owner, without its granted extras, releases the fence.
  const released = await pgmoveCliAsync(stack, ['unfreeze', 'elev-switched']);
  expect(released.stdout).toContain('elev-switched: source writable again');
  expect(released.code).toBe(0);
  expect(await databaseAccessState(source, 'logicdb')).toEqual(accessBefore);
});

test('pre-flight fails after the elevation (target not empty): reverted all the same', async () => {
  await stack.startWorker();
  const hbaBefore = sha256(hba);
  const roleBefore = await roleState(source, 'dumper');
  const handle = await startMigration(stack, spec('elev-fail', 'faildb', { freezeSource: false }));
  const failure = await migrationFailure(handle);
  expect(failure.type).toBe('PreflightFailed');
  expect(failure.message).toContain('already holds table public.already_here');
  const status = await handle.query(statusQuery);
  expect(status.privilegeElevation).toMatchObject({ elevated: true, membershipsGranted: ['pg_read_all_data'] });
  expect(status.privilegeElevation?.revertedAt).toBeDefined();
  expect(sha256(hba)).toBe(hbaBefore);
  expect(await roleState(source, 'dumper')).toEqual(roleBefore);
  expect(elevationLeftovers(source)).toEqual([]);
});

test('kubectl backend in a worker (stand-in on its PATH), password from a k8s-secret: migrated, reverted', async () => {
  const standIn = kubectlStandIn(stack.dir, { 'metastore/metastore-postgresql': { password: Buffer.from('dumper-pw').toString('base64') } });
  // Only workers that see the stand-in may run this migration's activities.
  for (const earlier of stack.workers) await stopWorkerProcess(earlier, 'SIGTERM');
  // The worker's operator allows this one Secret's keys (k8s-secret references are never allowed by default).
  const allowed = `${process.env[ALLOWED_SECRETS_VARIABLE] ?? ''},k8s-secret:metastore/metastore-postgresql/*`;
  await stack.startWorker({ PATH: `${standIn.binDir}:${process.env.PATH}`, [ALLOWED_SECRETS_VARIABLE]: allowed });
  const hbaBefore = sha256(hba);
  const roleBefore = await roleState(source, 'dumper');
  const input = spec('elev-kubectl', 'kubedb', { freezeSource: false });
  input.source.password = 'k8s-secret:metastore/metastore-postgresql/password';
  input.source.privilegeElevation = {
    backend: 'kubectl',
    allow: true,
    psql: join(DEBIAN_PG15_BIN, 'psql'),
    kubectl: { namespace: 'metastore', pod: 'metastore-postgresql-0', container: 'postgresql', runAs: 'runuser' },
  };
  const result = (await (await startMigration(stack, input)).result()) as MigrationResult;
  expect(result.status.validation?.ok).toBe(true);
  expect(result.status.privilegeElevation).toMatchObject({ elevated: true, membershipsGranted: ['pg_read_all_data'] });
  expect(result.status.privilegeElevation?.revertedAt).toBeDefined();
  expect(sha256(hba)).toBe(hbaBefore);
  expect(await roleState(source, 'dumper')).toEqual(roleBefore);
  expect(elevationLeftovers(source)).toEqual([]);
  const calls = standIn.calls();
  // Every call went to the named pod (or read the named Secret), and the revert ran through it.
  for (const call of calls) {
    expect(call[0] === 'get' ? call.slice(0, 5) : call.slice(0, call.indexOf('--')).filter((a) => a !== '-i')).toEqual(
      call[0] === 'get' ? ['get', 'secret', '-n', 'metastore', 'metastore-postgresql'] : ['exec', '-n', 'metastore', 'metastore-postgresql-0', '-c', 'postgresql'],
    );
    expect(call.join(' ')).not.toContain('dumper-pw');
  }
  expect(calls.some((c) => c[c.length - 1] === 'REVOKE "pg_read_all_data" FROM "dumper";')).toBe(true);
  expect(calls.some((c) => c.join(' ').includes(`rm -f ${hba}.pgmove-elev-kubectl.json`))).toBe(true);
});
