/**
 * What the benchmark scripts share: numeric command-line options, cluster tuning, min/median/max, and
 * running a program to completion.
 */
import execa from 'execa';

/** `--name N` from the command line, else the fallback. */
export function numericOption(name: string, fallback: number): number {
  const args = process.argv.slice(2);
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}

/** `--name VALUE` from the command line, else the fallback. */
export function stringOption(name: string, fallback: string): string {
  const args = process.argv.slice(2);
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : fallback;
}

/** Server settings for benchmark clusters (bulk loads, no checkpoints in the middle). */
export const BENCH_TUNING = { shared_buffers: "'512MB'", maintenance_work_mem: "'256MB'", max_wal_size: "'8GB'", checkpoint_timeout: "'30min'", max_parallel_maintenance_workers: '2' };

export type SpecFragment = Record<string, Record<string, unknown>>;

/** The spec with a fragment merged in one level deep (e.g. {"copy": {...}} keeps the other copy fields). */
export function withFragment<T extends object>(spec: T, fragment: SpecFragment): T {
  const merged: Record<string, unknown> = { ...(spec as Record<string, unknown>) };
  for (const [key, value] of Object.entries(fragment)) merged[key] = { ...((merged[key] as object | undefined) ?? {}), ...value };
  return merged as T;
}

export function stats(values: number[]): { min: number; median: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return { min: sorted[0]!, median: sorted[Math.floor(sorted.length / 2)]!, max: sorted[sorted.length - 1]! };
}

/**
 * Runs a program to completion (`pgbench -i`, pgcopydb, a `bash -o pipefail -c` pipeline) with the
 * environment plus `env` (passwords go there, never into argv); fails with the tail of its stderr.
 */
export async function sh(file: string, argv: string[], env: NodeJS.ProcessEnv = {}): Promise<void> {
  // reject: false: execa's own message would repeat the command line and all of stderr.
  const result = await execa(file, argv, { env, stdin: 'ignore', stdout: 'ignore', reject: false });
  if (result.failed) {
    const how = result.exitCode ?? result.signal ?? `before starting (${(result as execa.ExecaError).originalMessage})`;
    throw new Error(`${file} exited ${how}: ${result.stderr.slice(-2000)}`);
  }
}

/** A bash pipeline (`pg_dump | pg_restore`): values such as passwords reach it through `env`. */
export function shell(command: string, env: NodeJS.ProcessEnv): Promise<void> {
  return sh('bash', ['-o', 'pipefail', '-c', command], env);
}
