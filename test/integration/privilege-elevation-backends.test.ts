/**
 * The privilege elevation's activities against a real PostgreSQL 15 whose pg_hba.conf demands passwords
 * everywhere and whose migration role is a plain login role: through the `local` backend (the worker is
 * root on the server's host) and through `kubectl exec` (a stand-in on PATH that records argv and runs
 * the command locally). The revert works from what the server records alone (the activity's own result
 * is thrown away, as after a crash), restores pg_hba.conf byte for byte, and a second revert is a no-op.
 */
import { join } from 'node:path';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { createPlainRole, elevationLeftovers, kubectlStandIn, requirePasswordsEverywhere, roleState, sha256 } from '../helpers/elevation';
import { elevatePrivileges, revertPrivileges } from '../../activities/elevate-privileges';
import type { MigrationSpecInput } from '../../src/spec';
import { resolveSecret } from '../../src/secrets';

const stack = new TestStack();
// The operator allows the Secrets of namespace db (the kubectl stand-in's) on this worker.
process.env.PGMOVE_ALLOWED_SECRETS += ',k8s-secret:db/**';
let source: ClusterHandle;
let hba: string;

beforeAll(async () => {
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN);
  hba = join(source.dataDir, 'pg_hba.conf');
  await requirePasswordsEverywhere(source);
  await adminQuery(source, 'postgres', `CREATE DATABASE "o'db name"`);
  await adminQuery(source, "o'db name", 'CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 100) g');
  await createPlainRole(source, 'dump user', 'dump-pw-1');
});

afterAll(() => stack.stop());

function spec(elevation: Record<string, unknown>, password: string): MigrationSpecInput {
  return {
    id: 'elev',
    source: { uri: `postgresql://dump%20user@127.0.0.1:${source.port}/${encodeURIComponent("o'db name")}`, password, privilegeElevation: elevation as never },
    target: { uri: 'postgresql://postgres@127.0.0.1:1/unused' },
    method: 'dump',
    freezeSource: false,
  };
}

/** psql over the unix socket as postgres without a password: succeeds only while a trust line is loaded. */
function socketLogin(cluster: ClusterHandle, bin: string, database: string): { status: number | null; stderr: string } {
  return spawnSync('runuser', ['-u', 'postgres', '--', join(bin, 'psql'), '-X', '-w', '-h', cluster.dataDir, '-p', String(cluster.port), '-U', 'postgres', '-d', database, '-c', 'SELECT 1'], { encoding: 'utf8', cwd: '/' });
}

const run = <A extends unknown[], R>(fn: (...args: A) => Promise<R>, ...args: A): Promise<R> => new MockActivityEnvironment().run(fn, ...args) as Promise<R>;

test('not allowed: fails with the statements to run by hand, writes nothing', async () => {
  const before = sha256(hba);
  const failure = await run(elevatePrivileges, { spec: spec({ backend: 'local', allow: false }, stack.secretFile('dump', 'dump-pw-1')), migrationId: 'elev-denied' }).catch((e: unknown) => e);
  expect(failure).toBeInstanceOf(ApplicationFailure);
  expect((failure as ApplicationFailure).type).toBe('PreflightFailed');
  expect((failure as ApplicationFailure).nonRetryable).toBe(true);
  expect((failure as Error).message).toContain('GRANT "pg_read_all_data" TO "dump user";');
  expect(sha256(hba)).toBe(before);
  expect(elevationLeftovers(source)).toEqual([]);
});

test('a migration id that could write into pg_hba.conf or elsewhere is refused before anything is written', async () => {
  const before = sha256(hba);
  for (const migrationId of ['evil\nhost all all 0.0.0.0/0 trust', '../../etc/x', "it's"]) {
    const input = { spec: spec({ backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') }, stack.secretFile('dump', 'dump-pw-1')), migrationId };
    const failure = (await run(elevatePrivileges, input).catch((e: unknown) => e)) as ApplicationFailure;
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure.type).toBe('BadMigrationId');
    expect(failure.nonRetryable).toBe(true);
    const revert = (await run(revertPrivileges, input).catch((e: unknown) => e)) as ApplicationFailure;
    expect(revert.type).toBe('BadMigrationId');
  }
  expect(sha256(hba)).toBe(before);
  expect(elevationLeftovers(source)).toEqual([]);
  expect((await roleState(source, 'dump user')).memberOf).toEqual([]);
});

test('a spec the revert cannot parse fails it for good, with the recover command, instead of retrying forever', async () => {
  const input = { spec: spec({ backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') }, stack.secretFile('dump', 'dump-pw-1')), migrationId: 'elev-bad-spec' };
  const broken = { ...input, spec: { ...input.spec, jobz: 3 } as typeof input.spec };
  const failure = (await run(revertPrivileges, broken).catch((e: unknown) => e)) as ApplicationFailure;
  expect(failure).toBeInstanceOf(ApplicationFailure);
  expect(failure.type).toBe('BadSpec');
  expect(failure.nonRetryable).toBe(true);
  expect(failure.message).toContain('jobz');
  expect(failure.message).toContain('pgmove recover elev-bad-spec -f SPEC');
});

test('local backend: elevate, then a revert from the server-side record alone, twice', async () => {
  const before = sha256(hba);
  const roleBefore = await roleState(source, 'dump user');
  expect(roleBefore).toEqual({ superuser: false, replication: false, memberOf: [] });
  const input = { spec: spec({ backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') }, stack.secretFile('dump', 'dump-pw-1')), migrationId: 'elev-local' };

  const record = await run(elevatePrivileges, input);
  expect(record).toMatchObject({ elevated: true, role: 'dump user', hbaFile: hba, osUser: 'postgres', superuser: 'postgres', membershipsGranted: ['pg_read_all_data'], attributesSet: [] });
  expect(record.attributesBefore).toEqual({ superuser: false, replication: false, inherit: true });
  expect(record.membershipsBefore).toEqual({ pg_read_all_data: { member: false } });
  expect((await roleState(source, 'dump user')).memberOf).toEqual(['pg_read_all_data']);
  // The trust line was there only while the grant ran: pg_hba.conf is as before (and reloaded: the
  // socket wants a password again), only the record stays.
  expect(sha256(hba)).toBe(before);
  expect(elevationLeftovers(source)).toEqual(['pg_hba.conf.pgmove-elev-local.json']);
  const afterGrant = socketLogin(source, DEBIAN_PG15_BIN, "o'db name");
  expect(afterGrant.status).not.toBe(0);
  expect(afterGrant.stderr).toMatch(/password/);
  // Retried (e.g. the worker died before reporting): same record, the line out again.
  await run(elevatePrivileges, input);
  expect(sha256(hba)).toBe(before);
  const stateFile = readFileSync(join(source.dataDir, 'pg_hba.conf.pgmove-elev-local.json'), 'utf8');
  expect(stateFile).not.toContain('dump-pw-1');

  const reverted = await run(revertPrivileges, input);
  expect(reverted?.revertedAt).toBeDefined();
  expect(sha256(hba)).toBe(before);
  expect(await roleState(source, 'dump user')).toEqual(roleBefore);
  expect(elevationLeftovers(source)).toEqual([]);
  expect(await run(revertPrivileges, input)).toBeUndefined();
  expect(sha256(hba)).toBe(before);
  // The reload really happened: the trust line no longer lets anyone in over the socket.
  const viaSocket = socketLogin(source, DEBIAN_PG15_BIN, "o'db name");
  expect(viaSocket.status).not.toBe(0);
  expect(viaSocket.stderr).toMatch(/password/);
});

test('pg_hba.conf changed while elevated, and a window left open by a crash: only pgmove\'s lines go, no backup is written back', async () => {
  const original = readFileSync(hba, 'utf8');
  const input = { spec: spec({ backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') }, stack.secretFile('dump', 'dump-pw-1')), migrationId: 'elev-changed' };
  await run(elevatePrivileges, input);
  // An operator adds a line; then a worker dies inside the revert's trust window: pgmove's two lines on
  // top of the changed file, and its copy of the file from before that window — older than the change.
  const changed = `${original}host    all   all   10.99.0.0/16   scram-sha-256   # added by an operator\n`;
  writeFileSync(join(source.dataDir, 'pg_hba.conf.pgmove-elev-changed.bak'), original);
  writeFileSync(hba, `# pgmove elev-changed: temporary trust while pgmove grants or revokes the migration role's privileges, removed right after\nlocal "o'db name" "postgres" trust\n${changed}`);
  await run(revertPrivileges, input);
  expect(readFileSync(hba, 'utf8')).toBe(changed);
  expect((await roleState(source, 'dump user')).memberOf).toEqual([]);
  expect(elevationLeftovers(source)).toEqual([]);
  expect(socketLogin(source, DEBIAN_PG15_BIN, "o'db name").status).not.toBe(0);
  writeFileSync(hba, original);
  await adminQuery(source, 'postgres', 'SELECT pg_reload_conf()');
});

test('the state file is gone before the revert: the workflow\'s record reverts the grants', async () => {
  const before = sha256(hba);
  const roleBefore = await roleState(source, 'dump user');
  const input = { spec: spec({ backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') }, stack.secretFile('dump', 'dump-pw-1')), migrationId: 'elev-wiped' };
  const record = await run(elevatePrivileges, input);
  expect(record).toMatchObject({ elevated: true, database: "o'db name", membershipsGranted: ['pg_read_all_data'] });
  rmSync(join(source.dataDir, 'pg_hba.conf.pgmove-elev-wiped.json'));
  // Without a record (an older workflow) there is nothing to go by.
  expect(await run(revertPrivileges, input)).toBeUndefined();
  expect((await roleState(source, 'dump user')).memberOf).toEqual(['pg_read_all_data']);
  const reverted = await run(revertPrivileges, { ...input, record });
  expect(reverted?.reason).toContain("from the workflow's record");
  expect(await roleState(source, 'dump user')).toEqual(roleBefore);
  expect(sha256(hba)).toBe(before);
  expect(elevationLeftovers(source)).toEqual([]);
});

test('PostgreSQL 18, a role already granted pg_read_all_data WITHOUT INHERIT and REPLICATION: both kept as they were', async () => {
  const pg18 = await stack.startCluster('source18', PROJECT_PG18_BIN);
  const hba18 = join(pg18.dataDir, 'pg_hba.conf');
  await requirePasswordsEverywhere(pg18);
  await adminQuery(pg18, 'postgres', 'CREATE DATABASE shop');
  await adminQuery(pg18, 'shop', 'CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 10)');
  await createPlainRole(pg18, 'keeper', 'keeper-pw');
  await adminQuery(pg18, 'postgres', 'ALTER ROLE keeper REPLICATION; GRANT pg_read_all_data TO keeper WITH INHERIT FALSE');
  const grants = () =>
    adminQuery<{ role: string; inherit: boolean; grantor: string }>(
      pg18,
      'postgres',
      `SELECT g.rolname AS role, m.inherit_option AS inherit, gr.rolname AS grantor FROM pg_auth_members m
         JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles gr ON gr.oid = m.grantor WHERE m.member = 'keeper'::regrole ORDER BY 1, 3`,
    );
  const grantsBefore = await grants();
  expect(grantsBefore).toEqual([{ role: 'pg_read_all_data', inherit: false, grantor: 'postgres' }]);
  const before = sha256(hba18);
  const input = {
    spec: {
      id: 'elev18',
      source: { uri: `postgresql://keeper@127.0.0.1:${pg18.port}/shop`, password: stack.secretFile('keeper', 'keeper-pw'), privilegeElevation: { backend: 'local', allow: true, psql: join(PROJECT_PG18_BIN, 'psql') } },
      target: { uri: 'postgresql://postgres@127.0.0.1:1/unused' },
      method: 'dump',
      freezeSource: false,
    } as MigrationSpecInput,
    migrationId: 'elev18',
  };
  const record = await run(elevatePrivileges, input);
  expect(record).toMatchObject({ elevated: true, attributesSet: [], membershipsGranted: ['pg_read_all_data'], statements: ['GRANT "pg_read_all_data" TO "keeper" WITH INHERIT TRUE;'] });
  expect(record.membershipsBefore).toEqual({ pg_read_all_data: { member: true, superuserGrantInherit: false } });
  expect(await grants()).toEqual([{ role: 'pg_read_all_data', inherit: true, grantor: 'postgres' }]);
  await run(revertPrivileges, input);
  expect(await grants()).toEqual(grantsBefore);
  expect(await roleState(pg18, 'keeper')).toEqual({ superuser: false, replication: true, memberOf: ['pg_read_all_data'] });
  expect(sha256(hba18)).toBe(before);
  expect(elevationLeftovers(pg18)).toEqual([]);
});

test('kubectl backend: argv, quoting, k8s-secret reference, revert path', async () => {
  const before = sha256(hba);
  const standIn = kubectlStandIn(stack.dir, { 'db/pg-secrets': { 'dump.password': Buffer.from('dump-pw-1').toString('base64') } });
  const savedPath = process.env.PATH;
  process.env.PATH = `${standIn.binDir}:${savedPath}`;
  try {
    const input = {
      spec: spec(
        { backend: 'kubectl', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql'), kubectl: { context: 'prod', namespace: 'db', pod: 'pg-0', container: 'postgresql', runAs: 'runuser' } },
        'k8s-secret:db/pg-secrets/dump.password',
      ),
      migrationId: 'elev-kube',
    };
    const record = await run(elevatePrivileges, input);
    expect(record).toMatchObject({ elevated: true, membershipsGranted: ['pg_read_all_data'], osUser: 'postgres' });
    const elevateCalls = standIn.calls();
    await run(revertPrivileges, input);
    const allCalls = standIn.calls();
    const revertCalls = allCalls.slice(elevateCalls.length);

    expect(sha256(hba)).toBe(before);
    expect((await roleState(source, 'dump user')).memberOf).toEqual([]);
    expect(elevationLeftovers(source)).toEqual([]);

    // The secret: read by reference, its value never in any argv.
    expect(allCalls).toContainEqual(['get', 'secret', '-n', 'db', 'pg-secrets', '-o', 'jsonpath={.data.dump\\.password}']);
    for (const call of allCalls) expect(call.join(' ')).not.toContain('dump-pw-1');
    // Every exec goes to the named pod and container of the named context; as the server user through runuser.
    const execs = allCalls.filter((c) => c.includes('exec'));
    expect(execs.length).toBeGreaterThan(5);
    for (const call of execs) {
      const sep = call.indexOf('--');
      expect(call.slice(0, sep).filter((a) => a !== '-i')).toEqual(['--context', 'prod', 'exec', '-n', 'db', 'pg-0', '-c', 'postgresql']);
    }
    const asServer = execs.filter((c) => c[c.indexOf('--') + 1] === 'runuser');
    for (const call of asServer) expect(call.slice(call.indexOf('--') + 1, call.indexOf('--') + 5)).toEqual(['runuser', '-u', 'postgres', '--']);
    // Names with a quote and a space travel as single argv elements, quoted for SQL, libpq and pg_hba.conf.
    const psql = (calls: string[][]) => calls.filter((c) => c.includes('-c') && c.some((a) => a.endsWith('/psql')));
    const [grant] = psql(elevateCalls);
    expect(grant).toBeDefined();
    expect(grant![grant!.indexOf('-d') + 1]).toBe(`host='${source.dataDir}' port='${source.port}' user='postgres' dbname='o\\'db name' options='-c default_transaction_read_only=off -c search_path=pg_catalog,pg_temp'`);
    expect(grant![grant!.length - 1]).toBe('GRANT "pg_read_all_data" TO "dump user";');
    // The trust line travels on stdin (never argv): pg_hba.conf written twice, line in and line out.
    expect(elevateCalls.filter((c) => c.join(' ').endsWith(`sh -c cat > "$1" sh ${hba}`)).length).toBe(2);
    const [revoke] = psql(revertCalls);
    expect(revoke![revoke!.length - 1]).toBe('REVOKE "pg_read_all_data" FROM "dump user";');
    // Each trust window: line in, reload, SQL, line out, reload. The revert never writes a backup back.
    const tail = revertCalls.map((c) => c.slice(c.indexOf('--') + 5).join(' '));
    const revokeAt = tail.findIndex((t) => t.includes('REVOKE'));
    const lineIn = tail.findIndex((t) => t.startsWith('sh -c cat > "$1"'));
    const lineOut = tail.findIndex((t, i) => i > revokeAt && t.startsWith('sh -c cat > "$1"'));
    expect(lineIn).toBeGreaterThanOrEqual(0);
    expect(lineIn).toBeLessThan(revokeAt);
    expect(tail.findIndex((t, i) => i > lineIn && t.startsWith('sh -c kill -HUP'))).toBeLessThan(revokeAt);
    expect(tail.findIndex((t, i) => i > lineOut && t.startsWith('sh -c kill -HUP'))).toBeGreaterThan(lineOut);
    expect(tail.some((t) => t.includes('cat "$2" > "$1"'))).toBe(false);
    expect(tail[tail.length - 1]).toBe(`rm -f ${hba}.pgmove-elev-kube.json`);
  } finally {
    process.env.PATH = savedPath;
  }
});

test('two migrations elevate on one server and revert in either order: pg_hba.conf ends byte-identical', async () => {
  const before = sha256(hba);
  const original = readFileSync(hba, 'utf8');
  const input = (migrationId: string) => ({ spec: spec({ backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') }, stack.secretFile('dump', 'dump-pw-1')), migrationId });
  await run(elevatePrivileges, input('elev-a'));
  // B finds the role already able (through A's grant) and holds that grant too.
  expect(await run(elevatePrivileges, input('elev-b'))).toMatchObject({ elevated: true, membershipsGranted: ['pg_read_all_data'] });
  // Neither trust line stayed after its grant.
  expect(sha256(hba)).toBe(before);
  await run(revertPrivileges, input('elev-a'));
  // A's revert leaves what B still needs.
  expect((await roleState(source, 'dump user')).memberOf).toEqual(['pg_read_all_data']);
  expect(readFileSync(hba, 'utf8')).toBe(original);
  await run(revertPrivileges, input('elev-b'));
  expect(sha256(hba)).toBe(before);
  expect(elevationLeftovers(source)).toEqual([]);
  expect((await roleState(source, 'dump user')).memberOf).toEqual([]);
});

test('k8s-secret references that do not resolve: non-retryable, naming the Secret and the fix; the revert keeps retrying', async () => {
  const standIn = kubectlStandIn(stack.dir, { 'db/pg-secrets': { password: Buffer.from('s3cret-value').toString('base64') } });
  const savedPath = process.env.PATH;
  process.env.PATH = `${standIn.binDir}:${savedPath}`;
  try {
    expect(await resolveSecret('k8s-secret:db/pg-secrets/password', 'source.password')).toBe('s3cret-value');
    const missing = (await resolveSecret('k8s-secret:db/nope/password', 'source.password').catch((e: unknown) => e)) as ApplicationFailure;
    expect(missing).toBeInstanceOf(ApplicationFailure);
    expect(missing.type).toBe('SecretNotFound');
    expect(missing.nonRetryable).toBe(true);
    expect(missing.message).toBe(
      'source.password references Secret db/nope key password, which the worker cannot read (Error from server (NotFound): secrets "nope" not found): ' +
        "check the name, and that the worker's service account may get secrets in namespace db (deploy/rbac-source.yaml)",
    );
    const noKey = (await resolveSecret('k8s-secret:db/pg-secrets/pasword', 'target.password').catch((e: unknown) => e)) as ApplicationFailure;
    expect(noKey.message).toBe('target.password references Secret db/pg-secrets key pasword, which has no such key: check the key name (kubectl describe secret -n db pg-secrets)');
    // The revert never gives up on such a failure: it stays retryable until the operator fixes it.
    const revert = (await run(revertPrivileges, { spec: spec({ backend: 'local', allow: true }, 'k8s-secret:db/nope/password'), migrationId: 'elev-x' }).catch((e: unknown) => e)) as ApplicationFailure;
    expect(revert).toBeInstanceOf(ApplicationFailure);
    expect(revert.type).toBe('RevertPending');
    expect(revert.nonRetryable).toBe(false);
    expect(revert.message).toContain('secrets "nope" not found');
  } finally {
    process.env.PATH = savedPath;
  }
});
