/** What the benchmark scripts share: numeric command-line options, cluster tuning, min/median/max. */

/** `--name N` from the command line, else the fallback. */
export function numericOption(name: string, fallback: number): number {
  const args = process.argv.slice(2);
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}

/** Server settings for benchmark clusters (bulk loads, no checkpoints in the middle). */
export const BENCH_TUNING = { shared_buffers: "'512MB'", maintenance_work_mem: "'256MB'", max_wal_size: "'8GB'", checkpoint_timeout: "'30min'", max_parallel_maintenance_workers: '2' };

export function stats(values: number[]): { min: number; median: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return { min: sorted[0]!, median: sorted[Math.floor(sorted.length / 2)]!, max: sorted[sorted.length - 1]! };
}
