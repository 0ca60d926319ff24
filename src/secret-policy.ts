/**
 * Which secret references a spec may use on this worker: the operator's allow-list, never the spec's.
 * Without it a spec author could point `source.uri` at a server of theirs and name any secret the worker
 * can read (`env:AWS_SECRET_ACCESS_KEY`, `file:/var/run/secrets/kubernetes.io/serviceaccount/token`,
 * another team's `k8s-secret:`/`aws-secretsmanager:` secret): the worker would send it there as a
 * password. Set by PGMOVE_ALLOWED_SECRETS in the worker's environment (README "Secrets on the worker").
 */
import { isAbsolute, join, resolve } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';

export const ALLOWED_SECRETS_VARIABLE = 'PGMOVE_ALLOWED_SECRETS';

/**
 * Without PGMOVE_ALLOWED_SECRETS: variables named for pgmove (`PGMOVE_*`, which an operator sets for it
 * on purpose) and the dev stack's own password files (`.pgmove/secrets/`, or `$PGMOVE_HOME/secrets/`).
 * No `k8s-secret:` or `aws-secretsmanager:` reference and no other file: the operator lists those.
 */
export function defaultAllowedSecrets(): string[] {
  // The dev stack's directory (src/cli/connection.ts STACK_DIR), without loading the Temporal client here.
  const stackDir = process.env.PGMOVE_HOME ?? join(__dirname, '..', '.pgmove');
  return ['env:PGMOVE_*', `file:${join(stackDir, 'secrets')}/*`];
}

/** The worker's allow-list: PGMOVE_ALLOWED_SECRETS (comma- or newline-separated patterns), else the default. */
export function allowedSecretPatterns(env: NodeJS.ProcessEnv = process.env): string[] {
  const setting = env[ALLOWED_SECRETS_VARIABLE];
  if (setting === undefined || setting.trim() === '') return defaultAllowedSecrets();
  return setting.split(/[,\n]/).map((p) => p.trim()).filter(Boolean);
}

/** `*` matches within one path segment (no `/`), `**` across segments, `?` one character; the rest is literal. */
function globToRegExp(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      source += '.*';
      i++;
    } else if (c === '*') source += '[^/]*';
    else if (c === '?') source += '[^/]';
    else source += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`, 's');
}

/** The reference as it is matched: a file's path made absolute and without `.`/`..` (no escaping the allowed directory). */
function normalizedReference(reference: string): string {
  if (!reference.startsWith('file:')) return reference;
  const path = reference.slice('file:'.length);
  return isAbsolute(path) ? `file:${resolve(path)}` : reference;
}

export function secretKind(reference: string): string {
  const colon = reference.indexOf(':');
  return colon > 0 ? reference.slice(0, colon + 1) : 'unknown';
}

export function isSecretAllowed(reference: string, patterns: string[] = allowedSecretPatterns()): boolean {
  // A relative path depends on the worker's working directory: never allowed.
  if (reference.startsWith('file:') && !isAbsolute(reference.slice(5))) return false;
  const normalized = normalizedReference(reference);
  return patterns.some((pattern) => globToRegExp(normalizedReference(pattern)).test(normalized));
}

/** Throws a non-retryable SecretNotAllowed naming the field, the reference's kind and the setting. */
export function assertSecretAllowed(reference: string, field: string, beforeAnyWrite = false): void {
  if (isSecretAllowed(reference)) return;
  const kind = secretKind(reference);
  throw ApplicationFailure.nonRetryable(
    `${field}: this worker does not allow the ${kind} secret reference ${reference}${beforeAnyWrite ? '; nothing was written' : ''}. ` +
      `The worker's operator allows references with ${ALLOWED_SECRETS_VARIABLE} in the worker's environment ` +
      `(comma-separated patterns, e.g. ${ALLOWED_SECRETS_VARIABLE}='${example(reference)}'; README "Secrets on the worker")`,
    'SecretNotAllowed',
  );
}

function example(reference: string): string {
  if (reference.startsWith('file:')) return 'file:/run/secrets/pgmove/*';
  if (reference.startsWith('env:')) return 'env:PGMOVE_*,env:SOURCE_PASSWORD';
  if (reference.startsWith('k8s-secret:')) return 'k8s-secret:NAMESPACE/NAME/*';
  if (reference.startsWith('aws-secretsmanager:')) return 'aws-secretsmanager:arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-*';
  return reference;
}

/** Every password reference of a (database or cluster) spec, with its field. */
export function specSecretReferences(spec: {
  source?: { password?: string };
  target?: { password?: string };
  roles?: { passwords?: Record<string, string> };
}): { field: string; reference: string }[] {
  const refs: { field: string; reference: string }[] = [];
  if (spec.source?.password) refs.push({ field: 'source.password', reference: spec.source.password });
  if (spec.target?.password) refs.push({ field: 'target.password', reference: spec.target.password });
  for (const [role, reference] of Object.entries(spec.roles?.passwords ?? {})) refs.push({ field: `roles.passwords.${role}`, reference });
  return refs;
}

/** Checks all of a spec's references up front, so a refused one stops the migration before any write. */
export function assertSpecSecretsAllowed(spec: Parameters<typeof specSecretReferences>[0]): void {
  for (const { field, reference } of specSecretReferences(spec)) assertSecretAllowed(reference, field, true);
}
