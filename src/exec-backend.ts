/**
 * Execution backends: run a command where the source server runs — on this host (`local`) or inside
 * its pod (`kubectl exec`) — either with the backend's own identity or as the server's OS user.
 * Commands are argv arrays end to end (kubectl passes its arguments after `--` on as argv): no value
 * is ever spliced into a shell string. Cancellation kills the child process (src/exec.ts).
 */
import { userInfo } from 'node:os';
import { ApplicationFailure } from '@temporalio/common';
import { run, type RunResult } from './exec';
import type { PrivilegeElevationSpec } from './elevation-spec';

export type Identity = 'server' | 'default';

export interface RunWhereOptions {
  /** `server`: as the server's OS user; `default`: the backend's own identity (root on a host, the container's user in a pod). */
  as: Identity;
  input?: string | Buffer;
  signal?: AbortSignal;
}

export interface ExecBackend {
  /** Human description for messages and the status, e.g. "kubectl exec -n db pod/pg-0". */
  readonly description: string;
  /** The argv that would run `argv` (what run() spawns): for messages and tests. */
  argvFor(argv: string[], options: Pick<RunWhereOptions, 'as' | 'input'>): string[];
  run(argv: string[], options: RunWhereOptions): Promise<RunResult>;
  /** Learns the server's OS user once it is known (owner of the data directory). */
  setServerUser(osUser: string): void;
}

/** The kubectl program: `kubectl` on PATH unless PGMOVE_KUBECTL names another. */
export function kubectlProgram(): string {
  return process.env.PGMOVE_KUBECTL ?? 'kubectl';
}

abstract class BaseBackend implements ExecBackend {
  protected osUser?: string;
  abstract readonly description: string;
  abstract argvFor(argv: string[], options: Pick<RunWhereOptions, 'as' | 'input'>): string[];

  setServerUser(osUser: string): void {
    this.osUser = osUser;
  }

  protected serverUser(): string {
    if (!this.osUser) throw new Error('internal: the server OS user is not known yet');
    return this.osUser;
  }

  async run(argv: string[], options: RunWhereOptions): Promise<RunResult> {
    const [file, ...args] = this.argvFor(argv, options);
    try {
      return await run(file!, args, { input: options.input, signal: options.signal, env: process.env });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw ApplicationFailure.nonRetryable(`${file} was not found on the worker (${this.description}): install it or put it on the worker's PATH`, 'BadSpec');
      }
      throw error;
    }
  }
}

/** A host shell: the worker runs on the server's machine (VM sources); as root it acts through runuser. */
export class LocalBackend extends BaseBackend {
  readonly description = 'local shell';

  argvFor(argv: string[], options: Pick<RunWhereOptions, 'as'>): string[] {
    if (options.as === 'default') return argv;
    const user = this.serverUser();
    if (process.getuid?.() === 0) return ['runuser', '-u', user, '--', ...argv];
    if (userInfo().username === user) return argv;
    throw ApplicationFailure.nonRetryable(
      `source.privilegeElevation.backend local: the worker runs as ${userInfo().username}, and can act as the server's OS user ${user} only as root or as ${user} itself`,
      'BadSpec',
    );
  }
}

/** `kubectl exec` into the source's pod/container; `runAs` says how to become the server's OS user. */
export class KubectlBackend extends BaseBackend {
  constructor(private readonly config: NonNullable<PrivilegeElevationSpec['kubectl']>) {
    super();
  }

  get description(): string {
    return `kubectl exec -n ${this.config.namespace} pod/${this.config.pod}${this.config.container ? ` -c ${this.config.container}` : ''}`;
  }

  argvFor(argv: string[], options: Pick<RunWhereOptions, 'as' | 'input'>): string[] {
    const { context, namespace, pod, container, runAs } = this.config;
    const asServer = options.as === 'server' && runAs === 'runuser' ? ['runuser', '-u', this.serverUser(), '--'] : [];
    return [
      kubectlProgram(),
      ...(context ? ['--context', context] : []),
      'exec',
      ...(options.input !== undefined ? ['-i'] : []),
      '-n',
      namespace,
      pod,
      ...(container ? ['-c', container] : []),
      '--',
      ...asServer,
      ...argv,
    ];
  }
}

export function createBackend(spec: PrivilegeElevationSpec): ExecBackend {
  return spec.backend === 'kubectl' ? new KubectlBackend(spec.kubectl!) : new LocalBackend();
}
