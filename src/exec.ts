/**
 * Child processes (pg_dump, pg_restore, psql, hooks, kubectl) through execa: argv only, never a shell;
 * passwords only through the environment; output captured (bounded); the process killed when the
 * activity is cancelled. execa 5, pinned: from 9 it is ESM-only, and this project is CommonJS (jest,
 * tsx, Temporal's bundler).
 */
import { once } from 'node:events';
import execa from 'execa';
import { scrubSecrets } from './secret-registry';

export interface RunOptions {
  /** The child's whole environment (not added to the worker's); unset: the worker's. */
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Aborting kills the process (SIGTERM, then SIGKILL after 5 s). */
  signal?: AbortSignal;
  /** Called with each stderr line, e.g. to heartbeat progress. */
  onStderrLine?: (line: string) => void;
  /** Written to the process's stdin (closed afterwards); without it stdin is closed at once. */
  input?: string | Buffer;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

const MAX_CAPTURE = 1 << 20;
const FORCE_KILL_AFTER_MS = 5000;

/** execa's additions we do not want; what they would change is in each comment. */
const EXECA_OPTIONS = {
  shell: false,
  // `env` replaces the environment, as spawn's does: what a caller took out (a hook's PGPASSWORD and
  // env: secrets) must not come back from the worker's.
  extendEnv: false,
  // No node_modules/.bin ahead of PATH.
  preferLocal: false,
  // No exit hook (signal-exit) in the worker: a child is killed by cancellation, not by the worker's exit.
  cleanup: false,
  // execa's buffer fails the command past maxBuffer; output is captured below, cut at MAX_CAPTURE instead.
  buffer: false,
  // Output as written (pg_dump --version, hook output), should execa's buffer ever be used.
  stripFinalNewline: false,
  // The outcome is read from the process (see run()), not from execa's error.
  reject: false,
} as const;

/** Fields execa adds to a spawn error (the command line among them), taken off again. */
const EXECA_ERROR_FIELDS = ['originalMessage', 'shortMessage', 'command', 'escapedCommand', 'exitCode', 'signal', 'signalDescription', 'stdout', 'stderr', 'all', 'failed', 'timedOut', 'isCanceled', 'killed'];

export class CommandError extends Error {
  constructor(
    public readonly command: string,
    public readonly exitCode: number | null,
    public readonly stderr: string,
  ) {
    super(`${command} failed (exit ${exitCode ?? 'signal'}): ${redactSecrets(stderr.trim().split('\n').slice(-20).join('\n'))}`);
    this.name = 'CommandError';
  }
}

/** Runs a command to completion; rejects with CommandError on a non-zero exit. */
export async function run(file: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const child = execa(file, args, {
    ...EXECA_OPTIONS,
    env: options.env,
    cwd: options.cwd,
    stdin: options.input === undefined ? 'ignore' : 'pipe',
    input: options.input,
  });
  // The outcome is the 'close' event: execa's own promise settles at 'exit', when output may still be
  // unread, and fails when a process exits without reading all its input (EPIPE on stdin). `closed`
  // rejects on an 'error' event: spawning failed, e.g. ENOENT.
  const closed = once(child, 'close');
  closed.catch(() => undefined); // awaited below, after execa's promise
  let stdout = '';
  let stderr = '';
  let pendingLine = '';
  // Decoded as a stream: a UTF-8 character split between two chunks stays one character.
  // (No streams when spawn threw at once: execa's promise rejects below.)
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    if (stdout.length < MAX_CAPTURE) stdout += chunk;
  });
  child.stderr?.on('data', (text: string) => {
    if (stderr.length < MAX_CAPTURE) stderr += text;
    if (options.onStderrLine) {
      const lines = (pendingLine + text).split('\n');
      pendingLine = lines.pop() ?? '';
      lines.forEach((line) => options.onStderrLine?.(line));
    }
  });
  const onAbort = () => child.kill('SIGTERM', { forceKillAfterTimeout: FORCE_KILL_AFTER_MS });
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // Rejects, even with `reject: false`, only when spawn threw at once (a NUL byte in an argument); it
    // also holds execa's listeners' rejections, which must not go unhandled.
    await child;
    const [code] = (await closed) as [number | null];
    const name = file.split('/').pop() ?? file;
    if (code !== 0) throw new CommandError(name, code, stderr);
    return { stdout, stderr, exitCode: 0 };
  } catch (error) {
    throw asNodeReported(error);
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
}

/** A spawn error as Node reported it: execa prefixes its message with the command line and adds fields. */
function asNodeReported(error: unknown): unknown {
  // Not `instanceof Error`: Node's own errors come from another realm under jest.
  if (typeof error === 'object' && error !== null && 'originalMessage' in error) {
    Object.assign(error, { message: error.originalMessage });
    for (const field of EXECA_ERROR_FIELDS) Reflect.deleteProperty(error, field);
  }
  return error;
}

/**
 * Hides password values in tool output before it becomes an error message (pg_restore echoes the
 * failing statement, e.g. CREATE USER MAPPING ... OPTIONS (password '...') or a CONNECTION string),
 * and every secret value this worker resolved, whatever it looks like (src/secret-registry.ts).
 */
export function redactSecrets(text: string): string {
  return scrubSecrets(text)
    .replace(/(password\s*'?)('[^']*'|"[^"]*")/gi, "$1'***'")
    .replace(/(password\s*=\s*)('[^']*'|[^\s',)]+)/gi, '$1***')
    .replace(/(postgres(?:ql)?:\/\/[^:/@\s]+:)[^@\s]+@/gi, '$1***@');
}
