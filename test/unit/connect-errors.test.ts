/**
 * Connection errors in pre-flight: bad input (wrong password, pg_hba.conf, missing database, unknown or
 * unreachable host) is non-retryable and names the spec field that fixes it; anything else is retried.
 */
import { ApplicationFailure } from '@temporalio/common';
import { classifyConnectError, type ConnectionInfo } from '../../src/pg/connect';

const info: ConnectionInfo = { host: 'db.example', port: 5433, database: 'app', user: 'mig', password: 'pw-never-shown', sslmode: 'disable' };
const pgError = (code: string, message: string) => Object.assign(new Error(message), { code });

test.each([
  ['28P01', 'password authentication failed for user "mig"', 'BadInput', 'cannot connect to source mig@db.example:5433/app: authentication failed: check the secret referenced by source.password'],
  ['28000', 'no pg_hba.conf entry for host "10.0.0.9", user "mig", database "app"', 'BadInput', 'the server rejected the connection (pg_hba.conf or role): allow mig from this worker in pg_hba.conf, or fix source.uri'],
  ['3D000', 'database "app" does not exist', 'BadInput', 'database does not exist: create it first or fix the database name in source.uri'],
  ['42501', 'permission denied for database "app"', 'BadInput', 'permission denied: grant the privilege named in the error to mig'],
  ['ENOTFOUND', 'getaddrinfo ENOTFOUND db.example', 'Unreachable', 'host "db.example" does not resolve; fix the host in source.uri'],
  ['ECONNREFUSED', 'connect ECONNREFUSED 10.0.0.9:5433', 'Unreachable', 'ECONNREFUSED; check that PostgreSQL listens on db.example:5433 and that the worker can reach it (firewall, security group, port), or fix the address in source.uri'],
])('%s: non-retryable %s naming the fix', (code, message, type, text) => {
  const failure = classifyConnectError(pgError(code, message), info, 'source') as ApplicationFailure;
  expect(failure).toBeInstanceOf(ApplicationFailure);
  expect([failure.type, failure.nonRetryable]).toEqual([type, true]);
  expect(failure.message).toContain(text);
  expect(failure.message).not.toContain('pw-never-shown');
});

test('a connection timeout is Unreachable; other errors stay retryable', () => {
  const timeout = classifyConnectError(new Error('Connection terminated due to connection timeout'), info, 'target') as ApplicationFailure;
  expect([timeout.type, timeout.nonRetryable]).toEqual(['Unreachable', true]);
  expect(timeout.message).toContain('connection timed out; check that PostgreSQL listens on db.example:5433');
  expect(timeout.message).toContain('target.uri');
  const other = pgError('57P03', 'the database system is starting up');
  expect(classifyConnectError(other, info, 'source')).toBe(other);
});
