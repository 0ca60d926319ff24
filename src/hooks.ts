/**
 * Operator hooks (cutover freeze/unfreeze, switch): commands run by the worker as argv, no shell, with
 * a deadline. They learn the migration through the environment — never a password — and a non-zero
 * exit is a non-retryable failure that names the hook.
 */
import { ApplicationFailure } from '@temporalio/common';
import { CommandError, run } from './exec';

export interface HookContext {
  migrationId: string;
  sourceUri: string;
  targetUri: string;
  /** The spec's password references: variables they name are not passed on to the hook. */
  secretRefs?: (string | undefined)[];
  /** More PGMOVE_* variables for this hook (never a secret). */
  extraEnv?: Record<string, string>;
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
    ...context.extraEnv,
  };
  // Our own database passwords must not leak into the hook through inherited variables.
  delete env.PGPASSWORD;
  for (const ref of context.secretRefs ?? []) if (ref?.startsWith('env:')) delete env[ref.slice(4)];
  try {
    return (await run(file, args, { env, signal: combined })).stdout;
  } catch (error) {
    if (deadline.aborted) {
      throw ApplicationFailure.nonRetryable(`cutover.${name} (${file}) did not finish within ${timeoutMs / 1000}s (cutover.hookTimeout)`, 'HookFailed');
    }
    if (error instanceof CommandError || (error as { code?: string }).code === 'ENOENT') {
      throw ApplicationFailure.nonRetryable(`cutover.${name} failed: ${(error as Error).message}; fix the command (it runs on the worker) and request the cutover again`, 'HookFailed');
    }
    throw error;
  }
}
