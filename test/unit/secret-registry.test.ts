/**
 * Resolved secret values are scrubbed by value, not by pattern: a password that looks like an ordinary
 * word, echoed back by a server or a tool, leaves the worker as [redacted] — in tool errors, activity
 * failures (what reaches the workflow history and the status) and log lines.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityInboundCallsInterceptor, ActivityExecuteInput } from '@temporalio/worker';
import { CommandError, redactSecrets } from '../../src/exec';
import { loggerOptions } from '../../src/log';
import { forgetSecretsForTest, rememberSecret, scrubSecrets } from '../../src/secret-registry';
import { resolveSecret } from '../../src/secrets';
import { classifyErrorsInterceptor } from '../../worker/classify-errors';

const PASSWORD = 'marmalade';

beforeEach(() => {
  forgetSecretsForTest();
  process.env.PGMOVE_TEST_REGISTRY_PW = PASSWORD;
});
afterAll(() => delete process.env.PGMOVE_TEST_REGISTRY_PW);

test('a resolved value is scrubbed from tool output, in every form it takes in text', async () => {
  const echoed = `psql: error: FATAL:  role "marmalade" does not exist (user marmalade, uri postgresql://u:marmalade@h/db)`;
  expect(redactSecrets(echoed)).toContain(PASSWORD); // unknown yet: nothing looks like a password
  expect(await resolveSecret('env:PGMOVE_TEST_REGISTRY_PW', 'source.password')).toBe(PASSWORD);
  expect(redactSecrets(echoed)).not.toContain(PASSWORD);
  expect(redactSecrets(echoed)).toContain('role "[redacted]" does not exist');
  expect(new CommandError('psql', 2, echoed).message).not.toContain(PASSWORD);
  rememberSecret('pa ss"wo/rd');
  expect(scrubSecrets('a pa ss"wo/rd b pa ss\\"wo/rd c pa%20ss%22wo%2Frd')).toBe('a [redacted] b [redacted] c [redacted]');
  // Too short to scrub without blanking ordinary text.
  rememberSecret('abc');
  expect(scrubSecrets('abc')).toBe('abc');
});

test('activity failures leave the worker scrubbed: message, stack and causes', async () => {
  rememberSecret(PASSWORD);
  const interceptor = classifyErrorsInterceptor({} as never).inbound as ActivityInboundCallsInterceptor;
  const failing = async (error: unknown) =>
    (await interceptor.execute!({} as ActivityExecuteInput, () => Promise.reject(error)).catch((e: unknown) => e)) as Error;
  const plain = await failing(new Error(`server said: password "${PASSWORD}" is wrong`, { cause: new Error(`because ${PASSWORD}`) }));
  expect(plain.message).toBe('server said: password "[redacted]" is wrong');
  expect(plain.stack).not.toContain(PASSWORD);
  expect((plain.cause as Error).message).toBe('because [redacted]');
  // A PostgreSQL error classified non-retryable keeps its classification, without the value.
  const classified = (await failing(Object.assign(new Error(`syntax error at or near "${PASSWORD}"`), { code: '42601' }))) as ApplicationFailure;
  expect(classified).toBeInstanceOf(ApplicationFailure);
  expect(classified.nonRetryable).toBe(true);
  expect(classified.message).toBe('syntax error at or near "[redacted]" (SQLSTATE 42601)');
  expect(classified.stack).not.toContain(PASSWORD);
  const application = await failing(ApplicationFailure.nonRetryable(`hook printed ${PASSWORD}`, 'HookFailed'));
  expect(application.message).toBe('hook printed [redacted]');
});

test('log lines are scrubbed whatever field holds the value', () => {
  rememberSecret(PASSWORD);
  const lines: string[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) });
  const logger = pino(loggerOptions, sink);
  logger.warn({ detail: `error: ${PASSWORD}`, nested: { stderr: PASSWORD } }, `failed with ${PASSWORD}`);
  expect(lines.join('')).not.toContain(PASSWORD);
  expect(lines.join('')).toContain('failed with [redacted]');
});
