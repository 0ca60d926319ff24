/** Spec units, pure (no imports): the workflow bundle uses them too. */

/** A spec size ("10GB", "512kB", or a number of bytes) in bytes; PostgreSQL's 1024-based units. */
export function sizeBytes(value: number | string): number {
  if (typeof value === 'number') return value;
  const match = /^(\d+(?:\.\d+)?)\s*(B|kB|MB|GB|TB)$/.exec(value);
  if (!match) throw new Error(`not a size: ${value}`);
  const unit = { B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 }[match[2] as 'B' | 'kB' | 'MB' | 'GB' | 'TB'];
  return Math.round(Number(match[1]) * unit);
}

/** Duration strings of the spec ("4h") in milliseconds, for activity timeouts and estimates. */
export function durationMs(value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(value);
  if (!match) throw new Error(`not a duration: ${value}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(Number(match[1]) * unit);
}

/** Bytes for people: "12.3 MB", or "512 bytes" below a megabyte. */
export function formatBytes(value: number): string {
  return value >= 1024 * 1024 ? `${(value / 1024 / 1024).toFixed(1)} MB` : `${value} bytes`;
}
