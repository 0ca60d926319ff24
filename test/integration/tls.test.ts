/**
 * TLS against a real server (issue 15): a test CA and a server certificate for IP 127.0.0.1 only, a
 * PostgreSQL 15 source with ssl = on, a plain PostgreSQL 18 target. verify-full with the right CA
 * migrates (node-pg and pg_dump both verify); another CA and a host name the certificate does not
 * list fail with what failed and how to fix it; require encrypts without a CA; prefer falls back to
 * plain on a server without TLS.
 */
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { TestStack, adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, type ClusterHandle } from '../helpers/stack';
import { migrationFailure, runMigration, startMigration } from '../helpers/migration';
import { connect, connectionInfo, libpqConninfo, libpqEnv } from '../../src/pg/connect';
import { run } from '../../src/exec';

const stack = new TestStack();
const tlsDir = join(stack.dir, 'tls');
const file = (name: string) => join(tlsDir, name);
let source: ClusterHandle;
let target: ClusterHandle;

function openssl(args: string[]): void {
  const result = spawnSync('openssl', args, { encoding: 'utf8', cwd: tlsDir });
  if (result.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${result.stderr}`);
}

/** Two CAs; a server certificate signed by the first, naming only IP 127.0.0.1. */
function makeCertificates(): void {
  mkdirSync(tlsDir, { recursive: true, mode: 0o755 });
  writeFileSync(file('san.ext'), 'subjectAltName = IP:127.0.0.1\n');
  for (const ca of ['ca', 'other-ca']) {
    openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=pgmove test ${ca}`, '-keyout', `${ca}.key`, '-out', `${ca}.pem`]);
  }
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr']);
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', 'server.crt', '-extfile', 'san.ext']);
  chmodSync(file('server.key'), 0o600);
  if (process.getuid?.() === 0) {
    // The server (run as the postgres OS user) must own its key.
    const id = (flag: string) => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
    chownSync(file('server.key'), id('-u'), id('-g'));
  }
}

beforeAll(async () => {
  makeCertificates();
  await stack.startTemporal();
  source = await stack.startCluster('source15', DEBIAN_PG15_BIN, { ssl: 'on', ssl_cert_file: `'${file('server.crt')}'`, ssl_key_file: `'${file('server.key')}'` });
  target = await stack.startCluster('target18', PROJECT_PG18_BIN);
  await stack.startWorker({ PGMOVE_TEST_SOURCE_PASSWORD: source.superuserPassword });
  await adminQuery(source, 'postgres', 'CREATE DATABASE app');
  await adminQuery(source, 'app', 'CREATE TABLE public.items (id int PRIMARY KEY, name text); INSERT INTO public.items SELECT g, md5(g::text) FROM generate_series(1, 1000) g');
  for (const db of ['app', 'app_wrong_ca']) await adminQuery(target, 'postgres', `CREATE DATABASE ${db}`);
});

afterAll(() => stack.stop());

const sourceUri = (params: string, host = '127.0.0.1') => `postgresql://postgres@${host}:${source.port}/app?${params}`;
const withCa = (ca: string, mode = 'verify-full') => `sslmode=${mode}&sslrootcert=${encodeURIComponent(file(ca))}`;

/** Connects as pgmove does (pre-flight: classified errors) and says whether the session is encrypted. */
async function sessionTls(uri: string, cluster: ClusterHandle = source): Promise<boolean> {
  const info = await connectionInfo({ uri }, 'source');
  info.password = cluster.superuserPassword;
  const client = await connect(info, 'source', { classify: true });
  try {
    return (await client.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')).rows[0]!.ssl;
  } finally {
    await client.end();
  }
}

test('node-pg: verify-full with the right CA; another CA and a name not in the certificate fail saying what and how', async () => {
  expect(await sessionTls(sourceUri(withCa('ca.pem')))).toBe(true);
  await expect(sessionTls(sourceUri(withCa('other-ca.pem')))).rejects.toMatchObject({
    type: 'TlsVerification',
    nonRetryable: true,
    message: expect.stringMatching(/TLS verification failed: the server's certificate is not signed by the CA in sslrootcert=.*other-ca\.pem .*set sslrootcert in source\.uri/),
  });
  // The certificate names IP 127.0.0.1 only: "localhost" reaches the same server but is not in it.
  await expect(sessionTls(sourceUri(withCa('ca.pem'), 'localhost'))).rejects.toMatchObject({
    type: 'TlsVerification',
    message: expect.stringMatching(/host name mismatch: the server's certificate does not name "localhost" \(it names IP Address:127\.0\.0\.1\)/),
  });
  // verify-ca checks the chain, not the name.
  expect(await sessionTls(sourceUri(withCa('ca.pem', 'verify-ca'), 'localhost'))).toBe(true);
  await expect(sessionTls(sourceUri(withCa('other-ca.pem', 'verify-ca'), 'localhost'))).rejects.toMatchObject({ type: 'TlsVerification' });
});

test('node-pg: require encrypts without a CA; prefer encrypts when offered and falls back to plain; require on a plain server says so', async () => {
  expect(await sessionTls(sourceUri('sslmode=require'))).toBe(true);
  expect(await sessionTls(sourceUri('sslmode=prefer'))).toBe(true);
  expect(await sessionTls(sourceUri('sslmode=disable'))).toBe(false);
  const plain = (params: string) => `postgresql://postgres@127.0.0.1:${target.port}/postgres?${params}`;
  expect(await sessionTls(plain('sslmode=prefer'), target)).toBe(false);
  expect(await sessionTls(plain('application_name=x'), target)).toBe(false); // absent = prefer
  await expect(sessionTls(plain('sslmode=require'), target)).rejects.toMatchObject({ message: expect.stringMatching(/does not accept TLS .*sslmode=require/) });
});

test('pg_dump (child tool) verifies with the environment pgmove gives it: right CA passes, another CA and a wrong name fail', async () => {
  const dump = async (uri: string) => {
    const info = { ...(await connectionInfo({ uri }, 'source')), password: source.superuserPassword };
    const argv = [`--dbname=${libpqConninfo(info.database)}`, '--schema-only'];
    expect(argv.join(' ')).not.toMatch(/ssl|password/);
    return run(join(DEBIAN_PG15_BIN, 'pg_dump'), argv, { env: libpqEnv(info) });
  };
  expect((await dump(sourceUri(withCa('ca.pem')))).stdout).toContain('CREATE TABLE public.items');
  await expect(dump(sourceUri(withCa('other-ca.pem')))).rejects.toThrow(/certificate verify failed/);
  await expect(dump(sourceUri(withCa('ca.pem'), 'localhost'))).rejects.toThrow(/does not match host name "localhost"/);
});

test('an offline migration under verify-full passes; under another CA it fails in pre-flight with the fix', async () => {
  const spec = (id: string, params: string, database: string) => ({
    id,
    method: 'dump' as const,
    source: { uri: sourceUri(params), password: 'env:PGMOVE_TEST_SOURCE_PASSWORD' },
    target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/${database}`, password: stack.secretFile(`${id}-target`, target.superuserPassword) },
  });
  const result = await runMigration(stack, spec('tls-verify-full', withCa('ca.pem'), 'app'));
  expect(result).toMatchObject({ outcome: 'completed', status: { validation: { ok: true } } });
  expect(await adminQuery(target, 'app', 'SELECT count(*)::int AS n FROM public.items')).toEqual([{ n: 1000 }]);

  const failure = await migrationFailure(await startMigration(stack, spec('tls-wrong-ca', withCa('other-ca.pem'), 'app_wrong_ca')));
  expect(failure.message).toMatch(/not signed by the CA in sslrootcert=.*other-ca\.pem/);
  expect(failure.message).not.toContain(source.superuserPassword);
  expect(await adminQuery(target, 'app_wrong_ca', "SELECT count(*)::int AS n FROM pg_class WHERE relname = 'items'")).toEqual([{ n: 0 }]);
});
