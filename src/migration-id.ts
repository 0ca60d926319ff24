/**
 * The migration id is the workflow id: a `temporal workflow start --workflow-id` can make it anything.
 * It reaches file names (pg_hba.conf's backup and record, the scratch directory) and a comment line in
 * pg_hba.conf, so every activity that uses it there checks it first: a newline would write a line of the
 * id's author's choosing into pg_hba.conf, a slash a file elsewhere.
 */
import { ApplicationFailure } from '@temporalio/common';

/** Characters a migration id may not hold (global: also used to replace them). */
export const UNSAFE_IN_ID = /[\x00-\x1f\x7f/\\'"`]/g;

export function migrationIdProblem(id: string): string | undefined {
  if (id.length === 0) return 'is empty';
  if (id.length > 250) return `is ${id.length} characters long (at most 250)`;
  const bad = id.match(UNSAFE_IN_ID)?.[0];
  if (bad !== undefined) return `contains ${JSON.stringify(bad)} (control characters, slashes, backslashes and quotes are refused)`;
  return undefined;
}

/** Non-retryable failure, before anything is written, when the id cannot safely name files and records. */
export function assertSafeMigrationId(id: string): string {
  const problem = migrationIdProblem(id);
  if (problem) {
    throw ApplicationFailure.nonRetryable(
      `the migration id (the workflow id) ${problem}: nothing was written; start the migration again with an id of letters, digits, ".", "_" and "-" (pgmove start takes it from the spec's id)`,
      'BadMigrationId',
    );
  }
  return id;
}
