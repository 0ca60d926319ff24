/**
 * Activity interceptor that turns PostgreSQL errors which a retry cannot fix (syntax, privileges,
 * data exceptions, unsupported features) into non-retryable failures that say what happened, so a
 * migration fails fast with the reason instead of retrying for minutes. Connection loss, deadlocks,
 * serialization failures and server shutdowns stay retryable. Every failure leaves without the secret
 * values the worker resolved (src/secret-registry.ts).
 */
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityInboundCallsInterceptor, ActivityInterceptorsFactory } from '@temporalio/worker';
import { CommandError } from '../src/exec';
import { scrubError } from '../src/secret-registry';

/** SQLSTATE classes that a retry cannot fix. */
const PERMANENT_CLASSES = new Set(['0A', '22', '23', '2B', '42', '44']);

/**
 * The server's lock table is full: a deterministic resource limit (the same statements fail the same
 * way on every retry), fixed only by a setting on that server.
 */
export const LOCK_TABLE_FULL_FIX =
  'the server ran out of lock table space (out of shared memory, SQLSTATE 53200). Its lock table holds max_locks_per_transaction × (max_connections + max_prepared_transactions) locks, one per table touched by a transaction: raise max_locks_per_transaction on that server (e.g. ALTER SYSTEM SET max_locks_per_transaction = 256, or the RDS parameter group; a restart is needed) and start the migration again';

function isLockTableFull(error: { code?: unknown; message?: string; hint?: string }, stderr?: string): boolean {
  if (error.code === '53200' && /max_locks_per_transaction/.test(`${error.hint ?? ''} ${error.message ?? ''}`)) return true;
  return stderr !== undefined && /out of shared memory/.test(stderr) && /max_locks_per_transaction/.test(stderr);
}

export function classifyActivityError(error: unknown): unknown {
  if (error instanceof ApplicationFailure) return error;
  const pgError = error as { code?: unknown; message?: string; hint?: string; detail?: string };
  if (isLockTableFull(pgError, error instanceof CommandError ? error.stderr : undefined)) {
    return ApplicationFailure.nonRetryable(`${LOCK_TABLE_FULL_FIX}. (${(pgError.message ?? '').split('\n').slice(-3).join(' ')})`, 'LockTableFull');
  }
  if (typeof pgError.code === 'string' && /^[0-9A-Z]{5}$/.test(pgError.code) && PERMANENT_CLASSES.has(pgError.code.slice(0, 2))) {
    const extra = [pgError.detail, pgError.hint].filter(Boolean).join('; ');
    return ApplicationFailure.nonRetryable(`${pgError.message ?? 'PostgreSQL error'} (SQLSTATE ${pgError.code})${extra ? `: ${extra}` : ''}`, 'PostgresError');
  }
  if (error instanceof CommandError && /ERROR: {2}(syntax error|permission denied|must be owner|.*does not exist|.*already exists)|unrecognized option|invalid option/.test(error.stderr)) {
    return ApplicationFailure.nonRetryable(error.message, 'CommandFailed');
  }
  return error;
}

class ClassifyErrors implements ActivityInboundCallsInterceptor {
  async execute(input: Parameters<NonNullable<ActivityInboundCallsInterceptor['execute']>>[0], next: Parameters<NonNullable<ActivityInboundCallsInterceptor['execute']>>[1]): Promise<unknown> {
    try {
      return await next(input);
    } catch (error) {
      // Failures reach the workflow history, the status and the worker's log: no resolved secret in them.
      throw scrubError(classifyActivityError(error));
    }
  }
}

export const classifyErrorsInterceptor: ActivityInterceptorsFactory = () => ({ inbound: new ClassifyErrors() });
