import { ApplicationFailure } from '@temporalio/common';
import { classifyActivityError } from '../../worker/classify-errors';
import { CommandError } from '../../src/exec';

test('a full lock table is not retried and names the setting that fixes it', () => {
  // As node-pg reports it (SQLSTATE 53200 with PostgreSQL's hint).
  const fromDriver = Object.assign(new Error('out of shared memory'), { code: '53200', hint: 'You might need to increase "max_locks_per_transaction".' });
  // As pg_restore prints it.
  const fromRestore = new CommandError('pg_restore', 1, 'pg_restore: error: could not execute query: ERROR:  out of shared memory\nHINT:  You might need to increase "max_locks_per_transaction".\nCommand was: CREATE TABLE public.t5297 (id integer);');
  for (const error of [fromDriver, fromRestore]) {
    const failure = classifyActivityError(error) as ApplicationFailure;
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure.nonRetryable).toBe(true);
    expect(failure.type).toBe('LockTableFull');
    expect(failure.message).toContain('raise max_locks_per_transaction');
  }
  // Other out-of-memory errors stay retryable (another session may release the memory).
  const other = Object.assign(new Error('out of memory'), { code: '53200' });
  expect(classifyActivityError(other)).toBe(other);
});
