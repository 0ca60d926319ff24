/** Error chains as one readable text for the status. Pure: workflow-safe. */

/** The messages of an error and its causes (at most 4), without repeats or those `skip` matches. */
export function errorText(error: unknown, skip?: RegExp): string {
  let current: unknown = error;
  const parts: string[] = [];
  while (current instanceof Error && parts.length < 4) {
    parts.push(current.message);
    current = (current as { cause?: unknown }).cause;
  }
  return parts.filter((p, i) => p && !parts.slice(0, i).includes(p) && !skip?.test(p)).join(': ');
}
