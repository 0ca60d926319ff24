/**
 * The operator's allow-list of secret references (PGMOVE_ALLOWED_SECRETS): a spec can only use what the
 * worker's operator allows, whatever host it names; a refused reference fails non-retryably before it
 * is read, naming its kind and the setting, never the value.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { assertSpecSecretsAllowed, defaultAllowedSecrets, isSecretAllowed } from '../../src/secret-policy';
import { resolveSecret } from '../../src/secrets';

const dir = mkdtempSync(join(tmpdir(), 'pgmove-policy-'));
const saved = process.env.PGMOVE_ALLOWED_SECRETS;

afterEach(() => {
  if (saved === undefined) delete process.env.PGMOVE_ALLOWED_SECRETS;
  else process.env.PGMOVE_ALLOWED_SECRETS = saved;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('default: PGMOVE_* variables and the dev stack password files only', () => {
  delete process.env.PGMOVE_ALLOWED_SECRETS;
  const stackSecrets = defaultAllowedSecrets()[1]!.replace(/^file:/, '').replace(/\/\*$/, '');
  expect(stackSecrets).toMatch(/\.pgmove\/secrets$/);
  expect(isSecretAllowed('env:PGMOVE_TEST_SOURCE_PASSWORD')).toBe(true);
  expect(isSecretAllowed(`file:${stackSecrets}/source.password`)).toBe(true);
  for (const refused of [
    'env:AWS_SECRET_ACCESS_KEY',
    'env:HOME',
    'file:/etc/shadow',
    'file:/var/run/secrets/kubernetes.io/serviceaccount/token',
    `file:${stackSecrets}/../stack.json`,
    `file:${stackSecrets}/nested/x`,
    `file:${join(tmpdir(), 'pgmove-hook-abc', 'target-password')}`,
    'file:relative/source.password',
    'k8s-secret:kube-system/admin/token',
    'aws-secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:prod-db-AbCdEf#password',
  ]) {
    expect([refused, isSecretAllowed(refused)]).toEqual([refused, false]);
  }
});

test('operator patterns: * within one segment, ** across, no escape with ..', () => {
  process.env.PGMOVE_ALLOWED_SECRETS = 'file:/run/secrets/pgmove/*, env:SOURCE_PASSWORD,k8s-secret:pgmove/**\naws-secretsmanager:arn:aws:secretsmanager:*:*:secret:rds!db-*';
  expect(isSecretAllowed('file:/run/secrets/pgmove/target-password')).toBe(true);
  expect(isSecretAllowed('file:/run/secrets/pgmove/sub/target-password')).toBe(false);
  expect(isSecretAllowed('file:/run/secrets/pgmove/../kubernetes.io/serviceaccount/token')).toBe(false);
  expect(isSecretAllowed('file:/run/secrets/pgmove/./target-password')).toBe(true);
  expect(isSecretAllowed('env:SOURCE_PASSWORD')).toBe(true);
  expect(isSecretAllowed('env:SOURCE_PASSWORD2')).toBe(false);
  expect(isSecretAllowed('env:PGMOVE_X')).toBe(false); // the setting replaces the default
  expect(isSecretAllowed('k8s-secret:pgmove/db/password')).toBe(true);
  expect(isSecretAllowed('k8s-secret:pgmovex/db/password')).toBe(false);
  expect(isSecretAllowed('aws-secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1234-abcd-AbCdEf#password')).toBe(true);
  expect(isSecretAllowed('aws-secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf#password')).toBe(false);
});

test('a refused reference: non-retryable SecretNotAllowed naming kind and setting, the value never read or shown', async () => {
  delete process.env.PGMOVE_ALLOWED_SECRETS;
  const file = join(dir, 'other-teams-password');
  writeFileSync(file, 'gooseberry\n');
  process.env.SOME_WORKER_SECRET = 'elderflower';
  try {
    for (const [reference, value, kind] of [
      [`file:${file}`, 'gooseberry', 'file:'],
      ['env:SOME_WORKER_SECRET', 'elderflower', 'env:'],
    ] as const) {
      const error = (await resolveSecret(reference, 'source.password').catch((e: unknown) => e)) as ApplicationFailure;
      expect(error).toBeInstanceOf(ApplicationFailure);
      expect(error.type).toBe('SecretNotAllowed');
      expect(error.nonRetryable).toBe(true);
      expect(error.message).toContain(`source.password: this worker does not allow the ${kind} secret reference ${reference}. `);
      expect(error.message).toContain('PGMOVE_ALLOWED_SECRETS');
      expect(error.message).not.toContain(value);
    }
    // Allowed by the operator: read as before.
    process.env.PGMOVE_ALLOWED_SECRETS = `file:${dir}/*,env:SOME_WORKER_SECRET`;
    expect(await resolveSecret(`file:${file}`, 'source.password')).toBe('gooseberry');
    expect(await resolveSecret('env:SOME_WORKER_SECRET', 'source.password')).toBe('elderflower');
  } finally {
    delete process.env.SOME_WORKER_SECRET;
  }
});

test('a spec is checked whole, role passwords included, before anything resolves', () => {
  process.env.PGMOVE_ALLOWED_SECRETS = 'env:PGMOVE_*';
  expect(() => assertSpecSecretsAllowed({ source: { password: 'env:PGMOVE_S' }, target: { password: 'env:PGMOVE_T' }, roles: { passwords: { app: 'env:PGMOVE_APP' } } })).not.toThrow();
  const failure = (() => {
    try {
      assertSpecSecretsAllowed({ source: { password: 'env:PGMOVE_S' }, target: { password: 'env:PGMOVE_T' }, roles: { passwords: { app: 'k8s-secret:prod/app/password' } } });
    } catch (error) {
      return error as ApplicationFailure;
    }
    return undefined;
  })();
  expect(failure?.type).toBe('SecretNotAllowed');
  expect(failure?.message).toMatch(/^roles\.passwords\.app: this worker does not allow the k8s-secret: secret reference k8s-secret:prod\/app\/password; nothing was written\. /);
});

test('an allowed reference that does not resolve: non-retryable SecretNotFound naming what to create where', async () => {
  process.env.PGMOVE_ALLOWED_SECRETS = `file:${dir}/*,env:PGMOVE_TEST_*`;
  delete process.env.PGMOVE_TEST_NEVER_SET;
  const missingFile = join(dir, 'not-mounted');
  for (const [reference, text] of [
    ['env:PGMOVE_TEST_NEVER_SET', "source.password references environment variable PGMOVE_TEST_NEVER_SET, which is not set in the worker's environment: export PGMOVE_TEST_NEVER_SET where the pgmove worker runs"],
    [`file:${missingFile}`, `source.password references file ${missingFile}, which the worker cannot read (ENOENT): mount or create it where the pgmove worker runs`],
  ] as const) {
    const error = (await resolveSecret(reference, 'source.password').catch((e: unknown) => e)) as ApplicationFailure;
    expect(error).toBeInstanceOf(ApplicationFailure);
    expect([error.type, error.nonRetryable]).toEqual(['SecretNotFound', true]);
    expect(error.message).toContain(text);
  }
});
