/**
 * `pgmove` — the operator's CLI. The same workflows can be driven with the plain `temporal` CLI
 * (see README): this is a convenience that validates specs first and shows progress.
 */
import { Command } from 'commander';
import { WorkflowExecutionAlreadyStartedError, WorkflowUpdateFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { migrationIdFor, SpecError } from '../spec';
import { loadSpecFile, readSpecFile } from '../spec-file';
import { isClusterSpec, parseClusterSpec, type ClusterSpecInput } from '../cluster-spec';
import { followCluster, renderClusterStatus } from './cluster-view';
import { TASK_QUEUE, abortSignal, clusterStatusQuery, finalizeUpdate, migrationPhaseKey, requestCutoverUpdate, requestRollbackUpdate } from '../../workflows/messages';
import type { UpdateDefinition } from '@temporalio/common';
import type { CutoverAnswer, CutoverRequest } from '../model';
import { withTemporalClient } from './connection';
import { follow, describeFailure } from './follow';
import { renderStatus, snapshot } from './status-view';
import { runWorker, workerOptionsFromEnv } from '../../worker/main';
import { checkHealth } from '../../worker/health';
import { devDown, devStatus, devUp } from '../dev/stack';
import { clusterDetails, migrationDetails, migrationSummary } from './static-details';
import { runDemo } from '../dev/demo';
import { cleanupCommand } from './cleanup';
import { unfreezeCommand } from './unfreeze';
import { recoverCommand } from './recover';
import { causeMessage, errorMessage } from '../error-text';

const program = new Command();
program
  .name('pgmove')
  .description('Move a PostgreSQL database to a new server as a durable Temporal workflow.')
  .showHelpAfterError();

program
  .command('start')
  .description('validate a migration spec, start the migration and print its workflow id')
  .requiredOption('-f, --file <spec>', 'migration spec (YAML or JSON); a spec with `databases:` starts a cluster migration')
  .option('--wait', 'follow progress until the migration ends; exit 0 only on success')
  .option('--task-queue <name>', 'Temporal task queue of the pgmove workers', process.env.PGMOVE_TASK_QUEUE ?? TASK_QUEUE)
  .option('--existing-ok', 'exit 0 when a migration with this id is already running or completed (a re-run Job), 1 when it failed')
  .action(async (options: { file: string; wait?: boolean; taskQueue: string; existingOk?: boolean }) => {
    const raw = readSpecFile(options.file);
    if (isClusterSpec(raw)) {
      const cluster = parseClusterSpec(raw);
      const ok = await withTemporalClient(async (client) => {
        if (options.existingOk) {
          const existing = await existingMigration(client, cluster.id, options.wait ? followCluster : undefined);
          if (existing !== undefined) return existing;
        }
        const handle = await client.workflow.start('migrateCluster', {
          taskQueue: options.taskQueue,
          workflowId: cluster.id,
          args: [raw as ClusterSpecInput],
          staticSummary: `pgmove cluster ${cluster.dryRun ? 'dry run' : 'migration'}: ${new URL(cluster.source.uri).host} → ${new URL(cluster.target.uri).host}`,
          staticDetails: clusterDetails(cluster, options.file),
          typedSearchAttributes: cluster.searchAttributes ? [{ key: migrationPhaseKey, value: 'cluster:starting' }] : [],
        });
        console.log(cluster.id);
        return options.wait ? followCluster(handle) : true;
      });
      process.exitCode = ok ? 0 : 1;
      return;
    }
    const { input, spec } = loadSpecFile(options.file);
    const id = migrationIdFor(spec);
    const ok = await withTemporalClient(async (client) => {
      if (options.existingOk) {
        const existing = await existingMigration(client, id, options.wait ? follow : undefined);
        if (existing !== undefined) return existing;
      }
      const handle = await client.workflow.start('migrateDatabase', {
        taskQueue: options.taskQueue,
        workflowId: id,
        args: [input],
        staticSummary: migrationSummary(spec),
        staticDetails: migrationDetails(spec, id, options.file),
        typedSearchAttributes: [{ key: migrationPhaseKey, value: 'starting' }],
      });
      console.log(id);
      return options.wait ? follow(handle) : true;
    });
    process.exitCode = ok ? 0 : 1;
  });

/** --existing-ok: a migration with this id already exists — fine unless it failed; undefined when there is none. */
async function existingMigration(client: Client, id: string, followIt?: (handle: WorkflowHandle) => Promise<boolean>): Promise<boolean | undefined> {
  const existing = await client.workflow.getHandle(id).describe().catch(() => undefined);
  if (!existing) return undefined;
  const fine = ['RUNNING', 'COMPLETED', 'CONTINUED_AS_NEW'].includes(existing.status.name);
  console.log(`${id} (already started: ${existing.status.name}${fine ? '' : '; set a new id in the spec to start again'})`);
  return fine && followIt ? followIt(client.workflow.getHandle(id)) : fine;
}

program
  .command('status')
  .description('show phase, per-table progress, timings, errors, and what a stalled activity waits for (the blocking session)')
  .argument('<id>', 'workflow id')
  .option('--json', 'print the raw status as JSON')
  .action(async (id: string, options: { json?: boolean }) => {
    await withTemporalClient(async (client) => {
      const handle = client.workflow.getHandle(id);
      const status = await handle.query(clusterStatusQuery);
      if (status.kind === 'cluster') {
        const description = await handle.describe();
        console.log(options.json ? JSON.stringify(status, null, 2) : renderClusterStatus(status, description.status.name));
        return;
      }
      const view = await snapshot(handle);
      console.log(options.json ? JSON.stringify(view, null, 2) : renderStatus(view));
    });
  });

program
  .command('abort')
  .description('stop a migration: copy or stream ends, slot/publication/subscription dropped, target reset, source unfrozen')
  .argument('<id>', 'workflow id')
  .option('--reason <text>', 'recorded in the status and the workflow failure', 'aborted by operator')
  .option('--wait', 'wait until the workflow has ended')
  .action(async (id: string, options: { reason: string; wait?: boolean }) => {
    await withTemporalClient(async (client) => {
      const handle = client.workflow.getHandle(id);
      await handle.signal(abortSignal, { reason: options.reason });
      console.log(`abort sent to ${id}`);
      if (options.wait) {
        await handle.result().catch((error: unknown) => console.log(describeFailure(error)));
      }
    });
  });

/** cutover, rollback and finalize: an update the workflow validates; prints accepted, or rejected with the reason. */
function requestCommand(name: string, description: string, update: UpdateDefinition<CutoverAnswer, [CutoverRequest]>): void {
  program
    .command(name)
    .description(description)
    .argument('<id>', 'workflow id')
    .option('--approved-by <name>', 'recorded in the status', process.env.USER ?? 'operator')
    .option('--reason <text>', 'recorded in the status')
    .option('--wait', 'after acceptance, follow the migration until it ends; exit 0 only on success')
    .action(async (id: string, options: { approvedBy: string; reason?: string; wait?: boolean }) => {
      const ok = await withTemporalClient(async (client) => {
        const handle = client.workflow.getHandle(id);
        try {
          const answer = await handle.executeUpdate(update, { args: [{ approvedBy: options.approvedBy, reason: options.reason }] });
          console.log(`accepted: ${answer.reason}`);
        } catch (error) {
          if (!(error instanceof WorkflowUpdateFailedError)) throw error;
          const cause = causeMessage(error);
          console.log(`rejected: ${cause.replace(new RegExp(`^${name} rejected: `), '')}`);
          return false;
        }
        return options.wait ? follow(handle) : true;
      });
      process.exitCode = ok ? 0 : 1;
    });
}

requestCommand('cutover', 'ask a syncing (logical) migration to cut over; prints accepted, or rejected with the reason', requestCutoverUpdate);
requestCommand(
  'rollback',
  'inside the rollback window (cutover.rollbackWindow): switch back to the source without losing the writes made on the target since the cutover; prints accepted, or rejected with the reason',
  requestRollbackUpdate,
);
requestCommand('finalize', 'end the rollback window now: drop the reverse stream on both servers; the migration completes on the target', finalizeUpdate);

program
  .command('worker')
  .description('run a pgmove worker in the foreground (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, PGMOVE_TASK_QUEUE)')
  .option('--health-port <port>', 'serve GET /livez and /readyz on this port for probes (env PGMOVE_HEALTH_PORT)')
  .action(async (options: { healthPort?: string }) => {
    const workerOptions = workerOptionsFromEnv();
    if (options.healthPort !== undefined) workerOptions.healthPort = Number(options.healthPort);
    await runWorker(workerOptions);
  });

program
  .command('health')
  .description("check a worker's health endpoint (what the Kubernetes probes call); exit 0 when healthy")
  .option('--url <url>', 'the endpoint', `http://127.0.0.1:${process.env.PGMOVE_HEALTH_PORT ?? '8080'}/readyz`)
  .option('--timeout <ms>', 'give up after this many milliseconds', '10000')
  .action(async (options: { url: string; timeout: string }) => {
    const result = await checkHealth(options.url, Number(options.timeout));
    console.log(result.detail);
    process.exitCode = result.ok ? 0 : 1;
  });

program
  .command('cleanup')
  .description(
    'delete the AWS resources an ended migration left behind (only those tagged with its id); --dry-run lists them. ' +
      'A target the migration completed on or switched to is never deleted (its history and the instance\'s pgmove:completed / pgmove:switched-at tag say so)',
  )
  .argument('<id>', 'workflow id of the ended migration')
  .option('--dry-run', 'list what would be deleted, delete nothing')
  .option('--delete-target', 'also delete the provisioned RDS instance kept with keepTargetOnAbort or after a failed validation (refused when the migration completed or switched)')
  .option('--no-final-snapshot', 'delete the instance without the final DB snapshot (<instance>-final-<created>) taken by default')
  .option('--task-queue <name>', 'Temporal task queue of the pgmove workers (they run the deletion with their AWS identity)', process.env.PGMOVE_TASK_QUEUE ?? TASK_QUEUE)
  .action(async (id: string, options: { dryRun?: boolean; deleteTarget?: boolean; finalSnapshot?: boolean; taskQueue: string }) => {
    const ok = await withTemporalClient((client) => cleanupCommand(client, id, options));
    process.exitCode = ok ? 0 : 1;
  });

program
  .command('unfreeze')
  .description('make the old source of an ended migration writable again (after a switch it stays frozen: cutover.sourceAfterSwitch)')
  .argument('<id>', 'workflow id of the ended migration (a cluster id releases every database)')
  .option('--task-queue <name>', 'Temporal task queue of the pgmove workers (they hold the source credentials)', process.env.PGMOVE_TASK_QUEUE ?? TASK_QUEUE)
  .action(async (id: string, options: { taskQueue: string }) => {
    const ok = await withTemporalClient((client) => unfreezeCommand(client, id, options.taskQueue));
    process.exitCode = ok ? 0 : 1;
  });

program
  .command('recover')
  .description(
    'undo what a migration that is no longer running left behind (e.g. after `temporal workflow terminate`): fence, slot, publication, ' +
      'replica identities, subscription, what it put on the target, scratch files, the privilege elevation — found from the records on the servers; prints what it found and did per server',
  )
  .argument('<id>', 'workflow id of the ended migration (a cluster: ID.<database> for each database)')
  .option('--dry-run', 'print what was found and would be undone; change nothing')
  .option('-f, --file <spec>', 'the spec the migration was started with, when its history is gone (references only; the history wins when it exists)')
  .option('--task-queue <name>', 'Temporal task queue of the pgmove workers (they hold the credentials)', process.env.PGMOVE_TASK_QUEUE ?? TASK_QUEUE)
  .addHelpText(
    'after',
    '\nA target is reset only when it carries this run\'s marker and no switch to it is recorded; a fence kept after a switch stays\n' +
      '(pgmove unfreeze ID). A running migration is refused: pgmove abort ID ends it with its own cleanup. Exit 1 when a step failed.',
  )
  .action(async (id: string, options: { dryRun?: boolean; file?: string; taskQueue: string }) => {
    const ok = await withTemporalClient((client) => recoverCommand(client, id, options));
    process.exitCode = ok ? 0 : 1;
  });

const dev = program.command('dev').description('the embedded default stack: Temporal dev server + Web UI, a worker, source and target PostgreSQL');
dev
  .command('up')
  .description('start whatever is not running (idempotent)')
  .action(async () => {
    await devUp();
    console.log(devStatus());
  });
dev
  .command('down')
  .description('stop the stack (data and history are kept under .pgmove/)')
  .action(async () => {
    await devDown();
  });
dev
  .command('status')
  .description('show what is running')
  .action(async () => {
    console.log(devStatus());
  });

program
  .command('demo')
  .description('migrate a sample database on the embedded stack, showing progress and the validation report')
  .action(async () => {
    process.exitCode = (await runDemo()) ? 0 : 1;
  });

program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof SpecError) console.error(error.message);
  else if (error instanceof WorkflowExecutionAlreadyStartedError) console.error(`a migration with this id is already running or recorded: ${error.workflowId}; use \`pgmove status ${error.workflowId}\`, or set a new id in the spec`);
  else console.error(`pgmove: ${errorMessage(error)}`);
  process.exitCode = 2;
});
