/**
 * Operator hooks (cutover freeze/unfreeze, switch): commands run by the worker as argv, no shell, with
 * a deadline. They learn the migration and the target's connection details through the environment —
 * the password only as its reference and as a 0600 file removed afterwards, never in argv or a
 * variable — and a non-zero exit is a non-retryable failure that names the hook. Their output (last
 * 4 kB, passwords redacted) is returned for the status.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { CommandError, redactSecrets, run } from './exec';
import { resolveSecret } from './secrets';
import { rememberSecret } from './secret-registry';
import type { MigrationSpec } from './spec';
import { errorMessage } from './error-text';

export interface HookContext {
  migrationId: string;
  sourceUri: string;
  targetUri: string;
  /** The spec's password references: variables they name are not passed on to the hook. */
  secretRefs?: (string | undefined)[];
  /** More PGMOVE_* variables for this hook (never a secret). */
  extraEnv?: Record<string, string>;
  /** The target's password reference: passed on as PGMOVE_TARGET_PASSWORD_REF and as a 0600 file. */
  targetPasswordRef?: string;
}

/**
 * One migration's hook context: the cutover's hooks, the unfreeze after an abandoned cutover, and (with
 * the servers reversed) the rollback's share it; PGMOVE_DIRECTION tells the hook which way it switches.
 */
export function migrationHookContext(spec: MigrationSpec, migrationId: string, direction: 'forward' | 'rollback' = 'forward'): HookContext {
  return {
    migrationId,
    sourceUri: spec.source.uri,
    targetUri: spec.target.uri,
    secretRefs: [spec.source.password, spec.target.password],
    targetPasswordRef: spec.target.password,
    extraEnv: { PGMOVE_DIRECTION: direction },
  };
}

const MAX_OUTPUT = 4096;

/** The target's connection details as hook variables (from the URI, which never holds a password). */
function targetVariables(targetUri: string): NodeJS.ProcessEnv {
  const url = new URL(targetUri);
  return {
    PGMOVE_TARGET_HOST: decodeURIComponent(url.hostname.replace(/^\[|\]$/g, '')),
    PGMOVE_TARGET_PORT: url.port || '5432',
    PGMOVE_TARGET_DATABASE: decodeURIComponent(url.pathname.slice(1)),
    PGMOVE_TARGET_USER: decodeURIComponent(url.username),
  };
}

export async function runHook(name: string, argv: string[], context: HookContext, timeoutMs: number, signal?: AbortSignal): Promise<string> {
  const [file, ...args] = argv;
  if (!file) throw ApplicationFailure.nonRetryable(`cutover.${name} is empty`, 'HookFailed');
  const deadline = AbortSignal.timeout(timeoutMs);
  const combined = signal ? AbortSignal.any([signal, deadline]) : deadline;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PGMOVE_HOOK: name,
    PGMOVE_MIGRATION_ID: context.migrationId,
    PGMOVE_SOURCE_URI: context.sourceUri,
    PGMOVE_TARGET_URI: context.targetUri,
    ...targetVariables(context.targetUri),
    ...context.extraEnv,
  };
  // Our own database passwords must not leak into the hook through inherited variables.
  delete env.PGPASSWORD;
  for (const ref of context.secretRefs ?? []) {
    if (!ref?.startsWith('env:')) continue;
    // Known to the scrubber even on a worker that never connected with it: the hook's output is stored.
    rememberSecret(process.env[ref.slice(4)]);
    delete env[ref.slice(4)];
  }
  let passwordDir: string | undefined;
  try {
    if (context.targetPasswordRef) {
      env.PGMOVE_TARGET_PASSWORD_REF = context.targetPasswordRef;
      const password = await resolveSecret(context.targetPasswordRef, 'target.password');
      passwordDir = await mkdtemp(join(tmpdir(), 'pgmove-hook-')); // mode 0700
      env.PGMOVE_TARGET_PASSWORD_FILE = join(passwordDir, 'target-password');
      await writeFile(env.PGMOVE_TARGET_PASSWORD_FILE, password ?? '', { mode: 0o600 });
    }
    const result = await run(file, args, { env, signal: combined });
    return redactSecrets(`${result.stdout}${result.stderr ? `\n[stderr]\n${result.stderr}` : ''}`.trim()).slice(-MAX_OUTPUT);
  } catch (error) {
    if (deadline.aborted) {
      throw ApplicationFailure.nonRetryable(`cutover.${name} (${file}) did not finish within ${timeoutMs / 1000}s (cutover.hookTimeout)`, 'HookFailed');
    }
    if (error instanceof CommandError || (error as { code?: string }).code === 'ENOENT') {
      throw ApplicationFailure.nonRetryable(`cutover.${name} failed: ${errorMessage(error)}; fix the command (it runs on the worker) and request the cutover again`, 'HookFailed');
    }
    throw error;
  } finally {
    if (passwordDir) await rm(passwordDir, { recursive: true, force: true });
  }
}
