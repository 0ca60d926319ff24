/**
 * Activity interceptor that turns PostgreSQL errors which a retry cannot fix (syntax, privileges,
 * data exceptions, unsupported features) into non-retryable failures that say what happened, so a
 * migration fails fast with the reason instead of retrying for minutes. Connection loss, deadlocks,
 * serialization failures and server shutdowns stay retryable.
 */
import { ApplicationFailure } from '@temporalio/common';
import type { ActivityInboundCallsInterceptor, ActivityInterceptorsFactory } from '@temporalio/worker';
import { CommandError } from '../src/exec';

/** SQLSTATE classes that a retry cannot fix. */
const PERMANENT_CLASSES = new Set(['0A', '22', '23', '2B', '42', '44']);

export function classifyActivityError(error: unknown): unknown {
  if (error instanceof ApplicationFailure) return error;
  const pgError = error as { code?: unknown; message?: string; hint?: string; detail?: string };
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
      throw classifyActivityError(error);
    }
  }
}

export const classifyErrorsInterceptor: ActivityInterceptorsFactory = () => ({ inbound: new ClassifyErrors() });
