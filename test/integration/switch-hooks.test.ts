/**
 * The switch-hook examples in deploy/hooks/, run by pgmove's own hook runner against `kubectl` and `helm`
 * stand-ins on PATH that record what they receive (argv, stdin, and the files named in argv). The hooks
 * learn the new server from the environment, the password only through a 0600 file that is gone
 * afterwards — never in argv — and a failing tool fails the hook.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { runHook, type HookContext } from '../../src/hooks';

const HOOKS = join(__dirname, '..', '..', 'deploy', 'hooks');
const dir = mkdtempSync(join(tmpdir(), 'pgmove-hooks-'));
const bin = join(dir, 'bin');
const log = join(dir, 'calls.jsonl');
const PASSWORD = "n3w-'pass word\"";
let savedPath: string | undefined;

interface Call {
  tool: string;
  argv: string[];
  stdin: string;
  files: Record<string, { content: string; mode: string }>;
}

/** A recording stand-in: `kubectl create ... -o yaml` prints the Secret it would create, like kubectl. */
function standIn(tool: string): void {
  writeFileSync(
    join(bin, tool),
    `#!${process.execPath}
const fs = require('fs');
const argv = process.argv.slice(2);
const stdin = argv.includes('-f') && argv[argv.indexOf('-f') + 1] === '-' ? fs.readFileSync(0, 'utf8') : '';
const files = {};
for (const arg of argv) {
  const m = /^(?:--from-file=[^=]+=|[^=]+\\.password=)(\\/.+)$/.exec(arg);
  if (m && fs.existsSync(m[1])) files[m[1]] = { content: fs.readFileSync(m[1], 'utf8'), mode: (fs.statSync(m[1]).mode & 0o777).toString(8) };
}
fs.appendFileSync(${JSON.stringify(log)}, JSON.stringify({ tool: ${JSON.stringify(tool)}, argv, stdin, files }) + '\\n');
if (process.env.STANDIN_FAIL === ${JSON.stringify(tool)}) { process.stderr.write('Error: UPGRADE FAILED: timed out waiting for the condition\\n'); process.exit(1); }
if (argv[0] === 'create' && argv.includes('yaml')) {
  const data = {};
  for (const arg of argv) {
    let m = /^--from-literal=([^=]+)=(.*)$/.exec(arg);
    if (m) data[m[1]] = Buffer.from(m[2]).toString('base64');
    m = /^--from-file=([^=]+)=(.*)$/.exec(arg);
    if (m) data[m[1]] = fs.readFileSync(m[2]).toString('base64');
  }
  process.stdout.write('apiVersion: v1\\nkind: Secret\\nmetadata:\\n  name: ' + argv[3] + '\\ndata:\\n' + Object.entries(data).map(([k, v]) => '  ' + k + ': ' + v).join('\\n') + '\\n');
}
`,
  );
  chmodSync(join(bin, tool), 0o755);
}

const calls = (): Call[] => readFileSync(log, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as Call);

const context: HookContext = {
  migrationId: 'metastore-to-rds',
  sourceUri: 'postgresql://metastore@10.0.0.5:5432/metastore',
  targetUri: 'postgresql://metastore@metastore.abc.eu-west-1.rds.amazonaws.com:5433/metastore',
  secretRefs: ['env:SOURCE_PW', 'env:TARGET_PW'],
  targetPasswordRef: 'env:TARGET_PW',
};

beforeAll(() => {
  mkdirSync(bin);
  standIn('kubectl');
  standIn('helm');
  savedPath = process.env.PATH;
  process.env.PATH = `${bin}:${savedPath}`;
  process.env.TARGET_PW = PASSWORD;
  process.env.PGMOVE_ALLOWED_SECRETS = 'env:SOURCE_PW,env:TARGET_PW';
  process.env.SOURCE_PW = 'old-source-pw';
});

beforeEach(() => writeFileSync(log, ''));

afterAll(() => {
  process.env.PATH = savedPath;
  delete process.env.TARGET_PW;
  delete process.env.SOURCE_PW;
  rmSync(dir, { recursive: true, force: true });
});

test('update-k8s-secret.sh: create|apply of the Secret with the new host; the password only through a 0600 file', async () => {
  const output = await runHook('switchHook', [join(HOOKS, 'update-k8s-secret.sh'), 'apps', 'metastore-db'], context, 30_000);
  expect(output).toContain('secret apps/metastore-db now points at metastore.abc.eu-west-1.rds.amazonaws.com:5433/metastore (migration metastore-to-rds)');
  const [create, apply] = calls();
  expect(create!.tool).toBe('kubectl');
  const passwordFile = Object.keys(create!.files)[0]!;
  expect(create!.argv).toEqual([
    'create', 'secret', 'generic', 'metastore-db', '-n', 'apps',
    '--from-literal=host=metastore.abc.eu-west-1.rds.amazonaws.com', '--from-literal=port=5433', '--from-literal=database=metastore', '--from-literal=user=metastore',
    `--from-file=password=${passwordFile}`, '--dry-run=client', '-o', 'yaml',
  ]);
  expect(create!.files[passwordFile]).toEqual({ content: PASSWORD, mode: '600' });
  expect(apply!.argv).toEqual(['apply', '-n', 'apps', '-f', '-']);
  expect(apply!.stdin).toContain(`password: ${Buffer.from(PASSWORD).toString('base64')}`);
  expect(apply!.stdin).toContain(`host: ${Buffer.from('metastore.abc.eu-west-1.rds.amazonaws.com').toString('base64')}`);
  for (const call of calls()) expect(call.argv.join(' ')).not.toContain(PASSWORD);
  expect(existsSync(passwordFile)).toBe(false);
});

test('helm-upgrade.sh: --reuse-values with the new connection, the password with --set-file; a failure fails the hook', async () => {
  const argv = [join(HOOKS, 'helm-upgrade.sh'), 'data', 'trino', 'trino/trino', 'metastore.db'];
  const output = await runHook('switchHook', argv, context, 30_000);
  expect(output).toContain('release data/trino now uses metastore.abc.eu-west-1.rds.amazonaws.com:5433/metastore');
  const [helm] = calls();
  const passwordFile = Object.keys(helm!.files)[0]!;
  expect(helm!.argv).toEqual([
    'upgrade', 'trino', 'trino/trino', '-n', 'data', '--reuse-values', '--wait',
    '--set-string', 'metastore.db.host=metastore.abc.eu-west-1.rds.amazonaws.com', '--set-string', 'metastore.db.port=5433',
    '--set-string', 'metastore.db.database=metastore', '--set-string', 'metastore.db.user=metastore',
    '--set-file', `metastore.db.password=${passwordFile}`,
  ]);
  expect(helm!.files[passwordFile]).toEqual({ content: PASSWORD, mode: '600' });
  expect(existsSync(passwordFile)).toBe(false);

  process.env.STANDIN_FAIL = 'helm';
  try {
    const failure = await runHook('switchHook', argv, context, 30_000).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect((failure as ApplicationFailure).type).toBe('HookFailed');
    expect((failure as Error).message).toContain('UPGRADE FAILED');
  } finally {
    delete process.env.STANDIN_FAIL;
  }
});

test('a hook sees the connection variables and references, never a password variable', async () => {
  const script = join(dir, 'env-hook.sh');
  writeFileSync(script, '#!/bin/sh\nenv | grep -E "^(PGMOVE_|PGPASSWORD|TARGET_PW|SOURCE_PW)" | sort\n');
  chmodSync(script, 0o755);
  process.env.PGPASSWORD = 'worker-pgpassword';
  try {
    const output = await runHook('switchHook', [script], context, 30_000);
    const vars = Object.fromEntries(output.split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
    expect(vars).toMatchObject({
      PGMOVE_TARGET_HOST: 'metastore.abc.eu-west-1.rds.amazonaws.com',
      PGMOVE_TARGET_PORT: '5433',
      PGMOVE_TARGET_DATABASE: 'metastore',
      PGMOVE_TARGET_USER: 'metastore',
      PGMOVE_TARGET_PASSWORD_REF: 'env:TARGET_PW',
      PGMOVE_MIGRATION_ID: 'metastore-to-rds',
    });
    expect(vars.PGMOVE_TARGET_PASSWORD_FILE).toMatch(/target-password$/);
    for (const name of ['PGPASSWORD', 'TARGET_PW', 'SOURCE_PW']) expect(vars[name]).toBeUndefined();
    expect(output).not.toContain(PASSWORD);
  } finally {
    delete process.env.PGPASSWORD;
  }
});

test('a hook that prints its environment and the password file: its output holds neither the target nor the source password', async () => {
  const output = await runHook('switchHook', ['sh', '-c', 'env; cat "$PGMOVE_TARGET_PASSWORD_FILE"; echo; echo old-source-pw >&2'], context, 10_000);
  expect(output).toContain('[redacted]');
  expect(output).not.toContain(PASSWORD);
  expect(output).not.toContain('old-source-pw');
  const failed = (await runHook('switchHook', ['sh', '-c', 'cat "$PGMOVE_TARGET_PASSWORD_FILE" >&2; exit 1'], context, 10_000).catch((e: unknown) => e)) as ApplicationFailure;
  expect(failed.type).toBe('HookFailed');
  expect(failed.message).not.toContain(PASSWORD);
});
