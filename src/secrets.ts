/**
 * Resolves password references (env:NAME, file:/path, aws-secretsmanager:ARN[#key]) inside activities and the CLI, never in workflow
 * code: the reference travels through Temporal, the value never does.
 */
import { readFile } from 'node:fs/promises';
import { ApplicationFailure } from '@temporalio/common';
import { AWS_SECRET_PREFIX, resolveAwsSecret } from './aws/secret-ref';

export async function resolveSecret(reference: string | undefined, field: string): Promise<string | undefined> {
  if (reference === undefined) return undefined;
  if (reference.startsWith('env:')) {
    const name = reference.slice(4);
    const value = process.env[name];
    if (value === undefined) {
      throw ApplicationFailure.nonRetryable(
        `${field} references environment variable ${name}, which is not set in the worker's environment: ` +
          `export ${name} where the pgmove worker runs (or use file:/path)`,
        'SecretNotFound',
      );
    }
    return value;
  }
  if (reference.startsWith('file:')) {
    const path = reference.slice(5);
    try {
      return (await readFile(path, 'utf8')).replace(/\r?\n$/, '');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'error';
      throw ApplicationFailure.nonRetryable(
        `${field} references file ${path}, which the worker cannot read (${code}): mount or create it where the pgmove worker runs`,
        'SecretNotFound',
      );
    }
  }
  if (reference.startsWith(AWS_SECRET_PREFIX)) return resolveAwsSecret(reference, field);
  throw ApplicationFailure.nonRetryable(`${field}: unsupported secret reference (use env:NAME, file:/path or aws-secretsmanager:ARN[#key])`, 'BadSpec');
}
