/**
 * The pgmove worker: connects to Temporal, registers the workflows and activities on the task queue,
 * and runs until SIGINT/SIGTERM (then finishes or cancels running activities gracefully).
 */
import { NativeConnection, Runtime, Worker, DefaultLogger } from '@temporalio/worker';
import * as activities from '../activities';
import { TASK_QUEUE } from '../workflows/messages';
import { rootLogger } from '../src/log';
import { activityInterceptors } from './interceptors';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../src/exec';
import { startHealthServer, type HealthSource } from './health';

export interface WorkerOptions {
  address: string;
  namespace: string;
  taskQueue: string;
  /** Serve /livez and /readyz on this port (Kubernetes probes); none when absent. */
  healthPort?: number;
}

export function workerOptionsFromEnv(): WorkerOptions {
  return {
    address: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    namespace: process.env.TEMPORAL_NAMESPACE ?? 'default',
    taskQueue: process.env.PGMOVE_TASK_QUEUE ?? TASK_QUEUE,
    healthPort: process.env.PGMOVE_HEALTH_PORT ? Number(process.env.PGMOVE_HEALTH_PORT) : undefined,
  };
}

/** Bundles the workflows in a child process (see bundle-workflows.ts) and returns the bundle's path. */
async function bundleInChildProcess(): Promise<string> {
  const codePath = join(tmpdir(), `pgmove-workflows-${process.pid}.js`);
  await run(process.execPath, ['--require', require.resolve('tsx/cjs'), join(__dirname, 'bundle-workflows.ts'), codePath]);
  return codePath;
}

export async function runWorker(options: WorkerOptions): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const health: HealthSource = {};
  // Up before the (slow) bundling, so a liveness probe sees a starting worker, not a dead one.
  const healthServer = options.healthPort !== undefined ? await startHealthServer(options.healthPort, health) : undefined;
  try {
    await runWithHealth(options, health);
  } finally {
    healthServer?.close();
  }
}

async function runWithHealth(options: WorkerOptions, health: HealthSource): Promise<void> {
  const codePath = await bundleInChildProcess();
  const connection = await NativeConnection.connect({ address: options.address });
  health.connection = connection;
  try {
    const worker = await Worker.create({
      connection,
      namespace: options.namespace,
      taskQueue: options.taskQueue,
      workflowBundle: { codePath },
      activities,
      interceptors: { activity: activityInterceptors },
      // Cancellation (abort) reaches a running activity with its next heartbeat: keep that quick.
      maxHeartbeatThrottleInterval: '2s',
      defaultHeartbeatThrottleInterval: '2s',
      shutdownGraceTime: '10s',
    });
    health.worker = worker;
    rootLogger.info({ address: options.address, namespace: options.namespace, taskQueue: options.taskQueue, pid: process.pid, healthPort: options.healthPort }, 'worker started');
    await worker.run();
    rootLogger.info('worker stopped');
  } finally {
    await connection.close();
    rmSync(codePath, { force: true });
  }
}
