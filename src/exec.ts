/**
 * Child processes (pg_dump, pg_restore, psql, hooks): passwords only through the environment, output
 * captured (bounded), and the process killed when the activity is cancelled.
 * execa 9+ is ESM-only and this project is CommonJS (jest, tsx, Temporal's bundler); this file is the
 * small subset we need.
 */
import { spawn } from 'node:child_process';
import { scrubSecrets } from './secret-registry';

export interface RunOptions {
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
export function run(file: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: options.env, cwd: options.cwd, stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    if (options.input !== undefined) {
      child.stdin?.on('error', () => undefined); // a process that exits without reading its input
      child.stdin?.end(options.input);
    }
    let stdout = '';
    let stderr = '';
    let pendingLine = '';
    // Decoded as a stream: a UTF-8 character split between two chunks stays one character.
    child.stdout!.setEncoding('utf8');
    child.stderr!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      if (stdout.length < MAX_CAPTURE) stdout += chunk;
    });
    child.stderr!.on('data', (text: string) => {
      if (stderr.length < MAX_CAPTURE) stderr += text;
      if (options.onStderrLine) {
        const lines = (pendingLine + text).split('\n');
        pendingLine = lines.pop() ?? '';
        lines.forEach((line) => options.onStderrLine?.(line));
      }
    });
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (error) => {
      options.signal?.removeEventListener('abort', onAbort);
      reject(error);
    });
    child.on('close', (code) => {
      options.signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      const name = file.split('/').pop() ?? file;
      if (code === 0) resolve({ stdout, stderr, exitCode: 0 });
      else reject(new CommandError(name, code, stderr));
    });
  });
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
