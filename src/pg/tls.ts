/**
 * TLS of every connection pgmove and its child tools open, as libpq's `sslmode` and `sslrootcert`
 * define it (https://www.postgresql.org/docs/current/libpq-ssl.html):
 *
 * - disable: plain. allow: plain, TLS if the plain attempt is refused. prefer (libpq's default, also
 *   pgmove's when the URI names no sslmode): TLS, plain if the TLS attempt fails. require: TLS, no
 *   verification — unless a CA file is available (sslrootcert, or ~/.postgresql/root.crt), then the
 *   chain is verified as verify-ca does (libpq's documented compatibility rule).
 * - verify-ca: the server's chain must lead to the CA in sslrootcert. verify-full: that, and the host
 *   name (or IP) the URI connects to must be in the certificate (SAN, else CN).
 * - sslrootcert is a file on the worker, read when a connection opens; `system` means the trusted
 *   roots (node: Node's bundle; libpq ≥ 16: OpenSSL's).
 *
 * node-postgres has no `prefer`/`allow`: pgmove makes the second attempt on a new connection where libpq
 * goes on on the same socket; the result is the same (one extra TCP connect when TLS is refused).
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import { SSL_MODES, type SslMode } from '../spec';
import { errorMessage } from '../error-text';

export { SSL_MODES, type SslMode };
export const DEFAULT_SSLMODE: SslMode = 'prefer';

/** The part of a ConnectionInfo that TLS depends on. */
export interface TlsEndpoint {
  host: string;
  sslmode?: string;
  sslrootcert?: string;
}

/** node-postgres' `ssl` option of one connection attempt. */
export type SslOption = false | ConnectionOptions;

/** A TLS configuration pgmove cannot use (a bad sslmode, a CA file it cannot read): bad input, never retried by pre-flight. */
export class TlsConfigError extends Error {
  readonly code = 'PGMOVE_TLS_CONFIG';
}

export function effectiveSslmode(info: TlsEndpoint): SslMode {
  const mode = info.sslmode ?? DEFAULT_SSLMODE;
  if (!(SSL_MODES as readonly string[]).includes(mode)) {
    throw new TlsConfigError(`sslmode=${mode} is not one of ${SSL_MODES.join(', ')}`);
  }
  return mode as SslMode;
}

/** The CA file libpq would use: sslrootcert, else ~/.postgresql/root.crt of the worker's user when it exists. */
export function rootCertPath(info: TlsEndpoint): string | undefined {
  if (info.sslrootcert) return info.sslrootcert;
  const fallback = join(process.env.HOME || homedir(), '.postgresql', 'root.crt');
  return existsSync(fallback) ? fallback : undefined;
}

function readCa(path: string): string | undefined {
  if (path === 'system') return undefined; // Node's bundled trusted roots
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new TlsConfigError(
      `sslrootcert ${path} cannot be read on the worker (${(error as { code?: string }).code ?? errorMessage(error)}): the CA file must exist on every worker, readable by its user; fix the path in the URI`,
    );
  }
}

/** Verifying options: the chain against the CA file; the host name too when `checkHost`. */
function verifying(info: TlsEndpoint, mode: SslMode, checkHost: boolean): ConnectionOptions {
  const path = rootCertPath(info);
  if (!path) {
    throw new TlsConfigError(
      `sslmode=${mode} needs the CA that signed the server's certificate: add sslrootcert=/path/to/ca.pem to the URI (a file on the worker; sslrootcert=system for the trusted roots), or put it in ~/.postgresql/root.crt`,
    );
  }
  // verify-ca: chain only. Node checks the name by default; libpq's verify-ca does not.
  return { rejectUnauthorized: true, ca: readCa(path), ...(checkHost ? {} : { checkServerIdentity: () => undefined }) };
}

/** TLS that verifies nothing, unless the CA file exists (libpq: require with a root CA file = verify-ca; a missing one is ignored). */
function encrypting(info: TlsEndpoint, mode: SslMode): ConnectionOptions {
  const path = rootCertPath(info);
  return path && existsSync(path) ? verifying(info, mode, false) : { rejectUnauthorized: false };
}

/** node-postgres' ssl option of each attempt, in order: prefer tries TLS then plain, allow the reverse. */
export function sslAttempts(info: TlsEndpoint): SslOption[] {
  const mode = effectiveSslmode(info);
  if (info.sslrootcert === 'system' && mode !== 'verify-full') {
    throw new TlsConfigError(`sslmode=${mode} may not be used with sslrootcert=system (as libpq): use sslmode=verify-full`);
  }
  switch (mode) {
    case 'disable':
      return [false];
    case 'allow':
      return [false, encrypting(info, mode)];
    case 'prefer':
      return [encrypting(info, mode), false];
    case 'require':
      return [encrypting(info, mode)];
    case 'verify-ca':
      return [verifying(info, mode, false)];
    case 'verify-full':
      return [verifying(info, mode, true)];
  }
}

/** A second attempt (prefer/allow) is worth making after this error: not when the server is unreachable. */
export function worthFallback(error: unknown): boolean {
  const err = error as { code?: string; message?: string };
  if (err.code === '28P01' || err.code === '3D000') return false; // would fail the same way
  if (['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT'].includes(err.code ?? '')) return false;
  return !/timeout/i.test(err.message ?? '');
}

const CHAIN_ERRORS = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
]);

/** What failed and how to fix it, for a TLS error of a node-postgres connection; undefined for other errors. */
export function explainTlsError(error: unknown, info: TlsEndpoint, uriField: string): string | undefined {
  const err = error as { code?: string; message?: string; reason?: string; cert?: { subjectaltname?: string; subject?: { CN?: string } } };
  const mode = info.sslmode ?? DEFAULT_SSLMODE;
  const ca = rootCertPath(info);
  if (error instanceof TlsConfigError) return `${err.message} (${uriField})`;
  if (/server does not support SSL/i.test(err.message ?? '')) {
    return `the server does not accept TLS (ssl = off) but sslmode=${mode} requires it: turn ssl on on the server, or use sslmode=prefer or disable in ${uriField}`;
  }
  if (err.code && CHAIN_ERRORS.has(err.code)) {
    return `TLS verification failed: the server's certificate is not signed by the CA in sslrootcert=${ca ?? '(none)'} (${err.code}): set sslrootcert in ${uriField} to the CA that signed the server's certificate (for RDS: the region's certificate bundle), or sslmode=require to encrypt without verifying`;
  }
  if (err.code === 'CERT_HAS_EXPIRED' || err.code === 'CERT_NOT_YET_VALID') {
    return `TLS verification failed: the server's certificate is not valid now (${err.code}): renew the server's certificate`;
  }
  if (err.code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    const names = err.cert?.subjectaltname ?? (err.cert?.subject?.CN ? `CN=${err.cert.subject.CN}` : 'none');
    return `TLS verification failed: host name mismatch: the server's certificate does not name "${info.host}" (it names ${names}): connect by a name the certificate lists in ${uriField}, or use sslmode=verify-ca to verify the CA only`;
  }
  return undefined;
}

/** What failed and how to fix it, for a libpq child tool's (pg_dump, pg_restore, psql) TLS error message. */
export function explainLibpqTlsError(stderr: string): string | undefined {
  if (/server certificate for "[^"]*"(?: \(and \d+ other names?\))? does not match host name/i.test(stderr)) {
    return 'TLS verification failed: host name mismatch: connect by a name the server certificate lists, or use sslmode=verify-ca to verify the CA only';
  }
  if (/certificate verify failed/i.test(stderr)) {
    return "TLS verification failed: the server's certificate is not signed by the CA in sslrootcert: set sslrootcert to the CA that signed it, or sslmode=require to encrypt without verifying";
  }
  if (/root certificate file .* does not exist/i.test(stderr)) {
    return 'sslrootcert names no readable file on the worker: fix the path in the URI';
  }
  if (/server does not support SSL/i.test(stderr)) {
    return 'the server does not accept TLS: turn ssl on on the server, or use sslmode=prefer or disable';
  }
  return undefined;
}
