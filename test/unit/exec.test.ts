import { CommandError, redactSecrets, run } from '../../src/exec';

test('passwords in tool output are redacted', () => {
  const stderr = [
    `pg_restore: error: could not execute query: ERROR:  server "x" does not exist`,
    `Command was: CREATE USER MAPPING FOR app SERVER x OPTIONS (user 'app', password 's3cr3t');`,
    `CREATE SUBSCRIPTION s CONNECTION 'host=h password=s3cr3t dbname=d' PUBLICATION p;`,
    `could not connect to postgresql://app:s3cr3t@host/db`,
  ].join('\n');
  const redacted = redactSecrets(stderr);
  expect(redacted).not.toContain('s3cr3t');
  expect(redacted).toContain(`password '***'`);
  expect(redacted).toContain('password=*** dbname=d');
  expect(new CommandError('pg_restore', 1, stderr).message).not.toContain('s3cr3t');
});

test('a failing command reports its stderr; an aborted one is killed', async () => {
  await expect(run('sh', ['-c', 'echo boom >&2; exit 3'])).rejects.toThrow('sh failed (exit 3): boom');
  const controller = new AbortController();
  const started = Date.now();
  const sleeping = run('sleep', ['30'], { signal: controller.signal });
  controller.abort();
  await expect(sleeping).rejects.toThrow('sleep failed (exit signal)');
  expect(Date.now() - started).toBeLessThan(5000);
});
