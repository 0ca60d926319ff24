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

test('an abort that the process ignores ends in SIGKILL after 5 s', async () => {
  const controller = new AbortController();
  // exec: the SIGTERM-ignoring process is the child itself, not a grandchild holding the pipes open.
  const stubborn = run('sh', ['-c', 'trap "" TERM; echo ready >&2; exec sleep 30'], { signal: controller.signal, onStderrLine: () => controller.abort() });
  const started = Date.now();
  await expect(stubborn).rejects.toThrow('sh failed (exit signal)');
  expect(Date.now() - started).toBeGreaterThanOrEqual(4900);
  expect(Date.now() - started).toBeLessThan(15000);
}, 20000);

test('a command that cannot start rejects with the error Node reported, without the command line', async () => {
  const missing = await run('/nonexistent/pgmove-no-such-tool', ['--flag']).catch((error: unknown) => error);
  expect(missing).toMatchObject({ code: 'ENOENT' });
  expect((missing as Error).message).toBe('spawn /nonexistent/pgmove-no-such-tool ENOENT');
  expect(missing).not.toHaveProperty('command');
  const nul = await run('echo', ['a\0b']).catch((error: unknown) => error);
  expect(nul).toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
  expect((nul as Error).message).toMatch(/^The argument 'args\[0\]' must be a string without null bytes/);
});

test('output is captured up to 1 MiB and the command still succeeds', async () => {
  const big = await run('sh', ['-c', "head -c 3000000 /dev/zero | tr '\\0' a; head -c 3000000 /dev/zero | tr '\\0' b >&2"]);
  expect(big.exitCode).toBe(0);
  for (const text of [big.stdout, big.stderr]) {
    expect(text.length).toBeGreaterThanOrEqual(1 << 20);
    expect(text.length).toBeLessThan((1 << 20) + (1 << 17));
  }
});

test('input goes to stdin; a process may exit without reading it', async () => {
  expect((await run('cat', [], { input: 'héllo\n' })).stdout).toBe('héllo\n');
  expect((await run('cat', [])).stdout).toBe(''); // stdin closed at once
  await expect(run('true', [], { input: Buffer.alloc(4 << 20) })).resolves.toMatchObject({ exitCode: 0 });
});

test('the environment is exactly env; output is kept as written, to its last byte', async () => {
  const env = await run(process.execPath, ['-e', 'process.stdout.write(JSON.stringify(process.env))'], { env: { ONLY: 'this' } });
  expect(JSON.parse(env.stdout)).toEqual({ ONLY: 'this' });
  expect((await run('printf', ['a\\n\\n'])).stdout).toBe('a\n\n');
  await expect(run('sh', ['-c', 'printf "first\\nlast" >&2; exit 1'])).rejects.toMatchObject({ exitCode: 1, stderr: 'first\nlast' });
});

test('stderr lines are streamed whole, a UTF-8 character split between writes included', async () => {
  const lines: string[] = [];
  await run('sh', ['-c', "printf '\\303' >&2; sleep 0.2; printf '\\251t\\303\\251\\nnext\\npartial' >&2"], { onStderrLine: (line) => lines.push(line) });
  expect(lines).toEqual(['été', 'next']);
});
