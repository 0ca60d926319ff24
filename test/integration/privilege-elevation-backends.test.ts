/**
 * The privilege elevation's activities against a real PostgreSQL 15 whose pg_hba.conf demands passwords
 * everywhere and whose migration role is a plain login role: through the `local` backend (the worker is
 * root on the server's host) and through `kubectl exec` (a stand-in on PATH that records argv and runs
 * the command locally). The revert works from what the server records alone (the activity's own result
 * is thrown away, as after a crash), restores pg_hba.conf byte for byte, and a second revert is a no-op.
 */
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, type ClusterHandle } from '../helpers/stack';
import { createPlainRole, elevationLeftovers, kubectlStandIn, requirePasswordsEverywhere, roleState, sha256 } from '../helpers/elevation';
import { elevatePrivileges, revertPrivileges } from '../../activities/elevate-privileges';
import type { MigrationSpecInput } from '../../src/spec';
import { resolveSecret } from '../../src/secrets';

const stack = new TestStack();
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

test('local backend: elevate, then a revert from the server-side record alone, twice', async () => {
  const before = sha256(hba);
  const roleBefore = await roleState(source, 'dump user');
  expect(roleBefore).toEqual({ superuser: false, replication: false, memberOf: [] });
  const input = { spec: spec({ backend: 'local', allow: true, psql: join(DEBIAN_PG15_BIN, 'psql') }, stack.secretFile('dump', 'dump-pw-1')), migrationId: 'elev-local' };

  const record = await run(elevatePrivileges, input);
  expect(record).toMatchObject({ elevated: true, role: 'dump user', hbaFile: hba, osUser: 'postgres', superuser: 'postgres', membershipsGranted: ['pg_read_all_data'], attributesSet: [] });
  expect(record.attributesBefore).toEqual({ superuser: false, replication: false });
  expect((await roleState(source, 'dump user')).memberOf).toEqual(['pg_read_all_data']);
  const elevatedHba = readFileSync(hba, 'utf8');
  expect(elevatedHba.split('\n').slice(0, 2)).toEqual([`# pgmove elev-local: temporary trust for the privilege elevation, removed when the migration ends`, `local "o'db name" "postgres" trust`]);
  expect(elevationLeftovers(source).sort()).toEqual(['pg_hba.conf.pgmove-elev-local.bak', 'pg_hba.conf.pgmove-elev-local.json']);
  // Retried (e.g. the worker died before reporting): the backup stays the original.
  await run(elevatePrivileges, input);
  expect(readFileSync(hba, 'utf8')).toBe(elevatedHba);
  expect(sha256(join(source.dataDir, 'pg_hba.conf.pgmove-elev-local.bak'))).toBe(before);
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
  const viaSocket = await import('node:child_process').then(({ spawnSync }) =>
    spawnSync('runuser', ['-u', 'postgres', '--', join(DEBIAN_PG15_BIN, 'psql'), '-X', '-w', '-h', source.dataDir, '-p', String(source.port), '-U', 'postgres', '-d', "o'db name", '-c', 'SELECT 1'], { encoding: 'utf8', cwd: '/' }),
  );
  expect(viaSocket.status).not.toBe(0);
  expect(viaSocket.stderr).toMatch(/password/);
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
    expect(grant![grant!.indexOf('-d') + 1]).toBe(`host='${source.dataDir}' port='${source.port}' user='postgres' dbname='o\\'db name' options='-c default_transaction_read_only=off'`);
    expect(grant![grant!.length - 1]).toBe('GRANT "pg_read_all_data" TO "dump user";');
    expect(elevateCalls.some((c) => c.includes(`local "o'db name" "postgres" trust`))).toBe(true);
    const [revoke] = psql(revertCalls);
    expect(revoke![revoke!.length - 1]).toBe('REVOKE "pg_read_all_data" FROM "dump user";');
    // The revert restores from the backup, reloads, then removes backup and state.
    const tail = revertCalls.map((c) => c.slice(c.indexOf('--') + 5).join(' '));
    const restore = tail.findIndex((t) => t.startsWith('sh -c cat "$2" > "$1"'));
    const hup = tail.findIndex((t, i) => i > restore && t.startsWith('sh -c kill -HUP'));
    const removeBackup = tail.findIndex((t) => t === `rm -f ${hba}.pgmove-elev-kube.bak`);
    expect(restore).toBeGreaterThan(tail.findIndex((t) => t.includes('REVOKE')));
    expect(hup).toBeGreaterThan(restore);
    expect(removeBackup).toBeGreaterThan(hup);
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
  const reverted = await run(revertPrivileges, input('elev-a'));
  expect(reverted?.reason).toContain('only pgmove');
  // A's revert leaves what B still needs.
  expect((await roleState(source, 'dump user')).memberOf).toEqual(['pg_read_all_data']);
  // B's trust line is still in place and loaded: B can still revert over the socket.
  expect(readFileSync(hba, 'utf8')).toBe(`# pgmove elev-b: temporary trust for the privilege elevation, removed when the migration ends\nlocal "o'db name" "postgres" trust\n${original}`);
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
