/**
 * Errors as text, one way for workflows, activities and the CLI. Pure (no Node built-ins, no imports):
 * the workflow bundle imports it too.
 */

/** The error's own message (not its causes'); anything else thrown, as text. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  const message = (error as { message?: unknown } | null | undefined)?.message;
  return typeof message === 'string' ? message : String(error);
}

/** The message of the error's direct cause when it has one (a Temporal failure wraps the reason), else its own. */
export function causeMessage(error: unknown): string {
  const cause = error instanceof Error ? (error as { cause?: unknown }).cause : undefined;
  return cause instanceof Error ? cause.message : errorMessage(error);
}

/** The innermost cause of an error chain (the activity's own failure under Temporal's wrappers). */
export function rootCause(error: unknown): unknown {
  let current = error;
  while (current instanceof Error && (current as { cause?: unknown }).cause) current = (current as { cause?: unknown }).cause;
  return current;
}

/** The messages of an error and its causes (at most 4), without repeats or those `skip` matches: for the status. */
export function errorText(error: unknown, skip?: RegExp): string {
  let current: unknown = error;
  const parts: string[] = [];
  while (current instanceof Error && parts.length < 4) {
    parts.push(current.message);
    current = (current as { cause?: unknown }).cause;
  }
  return parts.filter((p, i) => p && !parts.slice(0, i).includes(p) && !skip?.test(p)).join(': ');
}
