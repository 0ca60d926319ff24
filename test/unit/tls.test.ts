import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import { classifyConnectError, connectionInfo, libpqConninfo, libpqEnv, type ConnectionInfo } from '../../src/pg/connect';
import { explainLibpqTlsError, explainTlsError, sslAttempts, TlsConfigError } from '../../src/pg/tls';
import { subscriptionConninfo } from '../../src/pg/replication';
import { parseSpec } from '../../src/spec';

const dir = mkdtempSync(join(tmpdir(), 'pgmove-tls-unit-'));
const caFile = join(dir, 'ca.pem');
writeFileSync(caFile, '-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n');
const home = process.env.HOME;
beforeEach(() => {
  process.env.HOME = join(dir, 'home-without-root-crt'); // os.homedir(): no ~/.postgresql/root.crt
});
afterAll(() => {
  process.env.HOME = home;
});

// Distinctive: a temporary directory's random name in the message must not look like a leak.
const PASSWORD = 'tls-unit-Secret-7Qx';
const info = (sslmode?: string, sslrootcert?: string): ConnectionInfo => ({ host: 'db.example', port: 5432, database: 'app', user: 'mig', password: PASSWORD, sslmode, sslrootcert });
const opts = (option: unknown) => option as ConnectionOptions;

test('disable: plain only; absent sslmode = prefer (libpq default): TLS without verification, then plain', () => {
  expect(sslAttempts(info('disable'))).toEqual([false]);
  expect(sslAttempts(info())).toEqual([{ rejectUnauthorized: false }, false]);
  expect(sslAttempts(info('prefer'))).toEqual([{ rejectUnauthorized: false }, false]);
  expect(sslAttempts(info('allow'))).toEqual([false, { rejectUnauthorized: false }]);
});

test('require: encrypts without verifying; with a CA file it verifies the chain (libpq compatibility rule), never the name', () => {
  expect(sslAttempts(info('require'))).toEqual([{ rejectUnauthorized: false }]);
  const [withCa] = sslAttempts(info('require', caFile));
  expect(opts(withCa)).toMatchObject({ rejectUnauthorized: true, ca: expect.stringContaining('TEST') });
  expect(opts(withCa).checkServerIdentity?.('other.example', {} as never)).toBeUndefined();
  // A missing CA file is ignored below verify-ca, as libpq does.
  expect(sslAttempts(info('require', join(dir, 'missing.pem')))).toEqual([{ rejectUnauthorized: false }]);
});

test('~/.postgresql/root.crt is the CA file when sslrootcert is absent, as in libpq', () => {
  process.env.HOME = join(dir, 'home');
  mkdirSync(join(dir, 'home', '.postgresql'), { recursive: true });
  writeFileSync(join(dir, 'home', '.postgresql', 'root.crt'), 'HOME-CA');
  expect(opts(sslAttempts(info('verify-full'))[0]).ca).toBe('HOME-CA');
});

test('verify-ca: chain against the CA file, host name not checked; verify-full: chain and host name', () => {
  const [ca] = sslAttempts(info('verify-ca', caFile));
  expect(opts(ca)).toMatchObject({ rejectUnauthorized: true, ca: expect.stringContaining('TEST') });
  expect(opts(ca).checkServerIdentity).toBeDefined();
  const [full] = sslAttempts(info('verify-full', caFile));
  expect(opts(full)).toEqual({ rejectUnauthorized: true, ca: expect.stringContaining('TEST') });
  expect(opts(full).checkServerIdentity).toBeUndefined(); // Node's default: SAN / CN against the host
  expect(opts(sslAttempts(info('verify-full', 'system'))[0]).ca).toBeUndefined(); // Node's trusted roots
});

test('verify-* without a CA file, an unreadable one, sslrootcert=system with a weak mode or an unknown sslmode: TlsConfigError that says what to do', () => {
  expect(() => sslAttempts(info('verify-full'))).toThrow(/sslmode=verify-full needs the CA .* add sslrootcert=/);
  expect(() => sslAttempts(info('verify-ca', join(dir, 'missing.pem')))).toThrow(/sslrootcert .*missing\.pem cannot be read on the worker \(ENOENT\)/);
  expect(() => sslAttempts(info('require', 'system'))).toThrow(/use sslmode=verify-full/);
  expect(() => sslAttempts(info('bogus'))).toThrow(TlsConfigError);
  const failure = classifyConnectError(new TlsConfigError('sslmode=verify-full needs the CA'), info('verify-full'), 'source');
  expect(failure).toMatchObject({ type: 'TlsVerification', nonRetryable: true, message: expect.stringContaining('(source.uri)') });
});

test('the URI carries sslmode and sslrootcert; the spec refuses an unknown sslmode', async () => {
  const parsed = await connectionInfo({ uri: `postgresql://mig@db.example/app?sslmode=verify-full&sslrootcert=${encodeURIComponent(caFile)}` }, 'source');
  expect(parsed).toMatchObject({ sslmode: 'verify-full', sslrootcert: caFile });
  const spec = { source: { uri: 'postgresql://a@h/db?sslmode=verify-full&sslrootcert=/ca.pem' }, target: { uri: 'postgresql://a@t/db' } };
  expect(() => parseSpec(spec)).not.toThrow();
  expect(() => parseSpec({ ...spec, target: { uri: 'postgresql://a@t/db?sslmode=verify_full' } })).toThrow(/sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full/);
});

test('child tools: PGSSLMODE/PGSSLROOTCERT in the environment, overriding the worker\'s own; nothing TLS or secret in argv', () => {
  const saved = { mode: process.env.PGSSLMODE, cert: process.env.PGSSLROOTCERT };
  process.env.PGSSLMODE = 'disable';
  process.env.PGSSLROOTCERT = '/elsewhere.pem';
  try {
    expect(libpqEnv(info('verify-full', caFile))).toMatchObject({ PGSSLMODE: 'verify-full', PGSSLROOTCERT: caFile, PGPASSWORD: PASSWORD });
    const plain = libpqEnv(info());
    expect(plain.PGSSLMODE).toBe('prefer');
    expect(plain.PGSSLROOTCERT).toBeUndefined();
    expect(libpqConninfo('app')).not.toMatch(/ssl|password/);
  } finally {
    for (const [key, value] of [['PGSSLMODE', saved.mode], ['PGSSLROOTCERT', saved.cert]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
});

test('subscription conninfo: sslmode and sslrootcert (the latter only as sourceAsTargetSeesIt leaves it)', () => {
  expect(subscriptionConninfo(info('verify-full', '/etc/ssl/source-ca.pem'))).toContain("sslmode='verify-full' sslrootcert='/etc/ssl/source-ca.pem'");
  expect(subscriptionConninfo(info('require'))).not.toContain('sslrootcert');
});

test('TLS errors say what failed and how to fix it', () => {
  const chain = Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' });
  expect(explainTlsError(chain, info('verify-full', caFile), 'source.uri')).toMatch(/not signed by the CA in sslrootcert=.*ca\.pem .*set sslrootcert in source\.uri/);
  const name = Object.assign(new Error("Hostname/IP does not match certificate's altnames"), { code: 'ERR_TLS_CERT_ALTNAME_INVALID', cert: { subjectaltname: 'IP Address:127.0.0.1' } });
  expect(explainTlsError(name, info('verify-full', caFile), 'target.uri')).toMatch(/host name mismatch: .* does not name "db\.example" \(it names IP Address:127\.0\.0\.1\).*verify-ca/);
  expect(explainTlsError(new Error('The server does not support SSL connections'), info('require'), 'source.uri')).toMatch(/does not accept TLS .*sslmode=require/);
  expect(explainTlsError(Object.assign(new Error('auth'), { code: '28P01' }), info('require'), 'source.uri')).toBeUndefined();
  const failure = classifyConnectError(chain, info('verify-full', caFile), 'target');
  expect(failure).toMatchObject({ type: 'TlsVerification', nonRetryable: true });
  expect(failure.message).not.toContain(PASSWORD);
  expect(explainLibpqTlsError('pg_dump: error: ... SSL error: certificate verify failed')).toMatch(/not signed by the CA/);
  expect(explainLibpqTlsError('server certificate for "localhost" does not match host name "127.0.0.1"')).toMatch(/host name mismatch/);
  expect(explainLibpqTlsError('pg_dump: error: relation does not exist')).toBeUndefined();
});
