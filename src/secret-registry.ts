/**
 * The secret values this worker process has resolved, so they can be scrubbed from every text it
 * stores or prints — error messages and stacks (the workflow history and the status), hook output,
 * logs — even when nothing about them looks like a password (a plain word a failing server or hook
 * echoes back). Process-wide: a value stays known for the life of the worker.
 */

export const REDACTED = '[redacted]';

/** Shorter values are not scrubbed: they would blank out ordinary text (pgmove warns about them instead). */
export const MIN_SCRUBBED_LENGTH = 4;

const known = new Set<string>();
let sorted: string[] = [];

/** The forms a value takes in text: as is, JSON-escaped (log lines), URI-encoded (connection strings). */
function forms(value: string): string[] {
  return [value, JSON.stringify(value).slice(1, -1), encodeURIComponent(value)];
}

export function rememberSecret(value: string | undefined): void {
  if (value === undefined || value.length < MIN_SCRUBBED_LENGTH) return;
  let added = false;
  for (const form of forms(value)) {
    if (!known.has(form)) {
      known.add(form);
      added = true;
    }
  }
  // Longest first: a value that contains another is replaced whole.
  if (added) sorted = [...known].sort((a, b) => b.length - a.length);
}

/** The text with every known secret value replaced by [redacted]. */
export function scrubSecrets(text: string): string {
  let result = text;
  for (const value of sorted) if (result.includes(value)) result = result.split(value).join(REDACTED);
  return result;
}

export function knownSecretCount(): number {
  return known.size;
}

/** Scrubs an error's message and stack and those of its causes, in place (the same object goes on). */
export function scrubError<T>(error: T): T {
  if (sorted.length === 0) return error;
  let current: unknown = error;
  for (let depth = 0; current instanceof Error && depth < 8; depth++) {
    const e = current as Error & { cause?: unknown; stderr?: unknown; stdout?: unknown };
    e.message = scrubSecrets(e.message);
    if (e.stack) e.stack = scrubSecrets(e.stack);
    if (typeof e.stderr === 'string') e.stderr = scrubSecrets(e.stderr);
    if (typeof e.stdout === 'string') e.stdout = scrubSecrets(e.stdout);
    current = e.cause;
  }
  return error;
}

/** For tests: forget every value. */
export function forgetSecretsForTest(): void {
  known.clear();
  sorted = [];
}
