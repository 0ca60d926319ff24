/**
 * Resolves password references (env:NAME, file:/path, k8s-secret:namespace/name/key,
 * aws-secretsmanager:ARN[#key]) inside activities
 * and the CLI, never in workflow code: the reference travels through Temporal, the value never does.
 */
import { readFile } from 'node:fs/promises';
import { ApplicationFailure } from '@temporalio/common';
import { CommandError, run } from './exec';
import { kubectlProgram } from './exec-backend';
import { AWS_SECRET_PREFIX, resolveAwsSecret } from './aws/secret-ref';
import { assertSecretAllowed } from './secret-policy';
import { rememberSecret } from './secret-registry';
import { errorMessage } from './error-text';

/**
 * The value behind a reference, if the worker's operator allows that reference (src/secret-policy.ts);
 * the value is remembered so it is scrubbed from everything the worker stores or prints.
 */
export async function resolveSecret(reference: string | undefined, field: string): Promise<string | undefined> {
  if (reference === undefined) return undefined;
  assertSecretAllowed(reference, field);
  const value = await resolveAllowed(reference, field);
  rememberSecret(value);
  return value;
}

async function resolveAllowed(reference: string, field: string): Promise<string> {
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
  if (reference.startsWith('k8s-secret:')) return readKubernetesSecret(reference.slice('k8s-secret:'.length), field);
  throw ApplicationFailure.nonRetryable(`${field}: unsupported secret reference (use env:NAME, file:/path, k8s-secret:namespace/name/key or aws-secretsmanager:ARN[#key])`, 'BadSpec');
}

/**
 * A key of a Kubernetes Secret, read with `kubectl get secret` (the worker's in-cluster service account
 * or kubeconfig): the value arrives on stdout only, base64-decoded here — never in argv or a log.
 */
async function readKubernetesSecret(path: string, field: string): Promise<string> {
  const [namespace, name, key] = path.split('/');
  const where = `Secret ${namespace}/${name} key ${key}`;
  let encoded: string;
  try {
    // jsonpath: dots in a key (tls.crt) are escaped, the rest of the key is taken literally.
    encoded = (await run(kubectlProgram(), ['get', 'secret', '-n', namespace!, name!, '-o', `jsonpath={.data.${key!.replace(/\./g, '\\.')}}`], { env: process.env })).stdout.trim();
  } catch (error) {
    const reason = error instanceof CommandError ? error.stderr.trim().split('\n').pop() : errorMessage(error);
    throw ApplicationFailure.nonRetryable(
      `${field} references ${where}, which the worker cannot read (${reason}): check the name, and that the worker's service account may get secrets in namespace ${namespace} (deploy/rbac-source.yaml)`,
      'SecretNotFound',
    );
  }
  if (!encoded) throw ApplicationFailure.nonRetryable(`${field} references ${where}, which has no such key: check the key name (kubectl describe secret -n ${namespace} ${name})`, 'SecretNotFound');
  return Buffer.from(encoded, 'base64').toString('utf8').replace(/\r?\n$/, '');
}
