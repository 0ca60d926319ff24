/**
 * The cutover benchmark. With pgbench writing at a steady rate to the source (as the application
 * role), runs an online (logical) migration, requests the cutover once syncing, and reports over the
 * runs: the write-freeze window (from the freeze until the target is ready for writes, and until the
 * switch hook has run) with where it went, pgbench's failed transactions, and start → syncing against
 * an offline (dump) copy of the same data.
 */
import { mkdtempSync, chmodSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DEBIAN_PG15_BIN, PROJECT_PG18_BIN, startCluster, stopCluster, type ClusterHandle } from '../../src/dev/pg-cluster';
import { startTemporalServer, stopTemporalServer } from '../../src/dev/temporal-server';
import { BENCH_TUNING, numericOption, stats } from '../lib/bench';
import { startWorkerProcess, stopWorkerProcess } from '../../src/dev/worker-process';
import { waitFor } from '../../src/dev/ports';
import { createOnlineTarget, createPgbenchSource, startPgbench, type OnlineDatabase, type PgbenchRun } from '../lib/pgbench';
import { requestCutoverUpdate, statusQuery } from '../../workflows/messages';
import type { MigrationResult } from '../../workflows/migrate-database';
import type { MigrationStatus } from '../../src/model';

const RUNS = numericOption('runs', 5);
const SCALE = numericOption('scale', 20);
const RATE = numericOption('rate', 500);
const CLIENTS = numericOption('clients', 4);
const JOBS = numericOption('jobs', 4);


const fmt = (values: number[], unit: string, digits = 0) => {
  const s = stats(values);
  return `min ${s.min.toFixed(digits)} ${unit}  median ${s.median.toFixed(digits)} ${unit}  max ${s.max.toFixed(digits)} ${unit}`;
};

/** Seconds from the preflight's start until `phase` started (or ended, for `untilEndOf`). */
function secondsUntil(status: MigrationStatus, phase: keyof MigrationStatus['timings'], untilEndOf = false): number {
  const t = status.timings[phase]!;
  return (Date.parse(untilEndOf ? t.endedAt! : t.startedAt) - Date.parse(status.timings.preflight!.startedAt)) / 1000;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pgmove-bench-cutover-'));
  chmodSync(dir, 0o755);
  const clusters: ClusterHandle[] = [];
  const benches: PgbenchRun[] = [];
  let temporalPid: number | undefined;
  let workerPid: number | undefined;
  try {
    const source = await startCluster({ binDir: DEBIAN_PG15_BIN, dataDir: join(dir, 'source'), password: 'bench-source', settings: BENCH_TUNING });
    clusters.push(source);
    const target = await startCluster({ binDir: PROJECT_PG18_BIN, dataDir: join(dir, 'target'), password: 'bench-target', settings: BENCH_TUNING });
    clusters.push(target);
    console.log(`building the source: pgbench -i -s ${SCALE} (+ events), application role app`);
    const sourceDb = await createPgbenchSource(source, 'bench', SCALE);
    const server = await startTemporalServer({ headless: true, logFile: join(dir, 'temporal.log') });
    temporalPid = server.pid;
    const worker = await startWorkerProcess({ address: server.address, taskQueue: 'bench', logFile: join(dir, 'worker.log'), env: { PGMOVE_WORK_DIR: join(dir, 'work'), PGMOVE_ALLOWED_SECRETS: `file:${dir}/*` } }); // the bench's password files
    workerPid = worker.pid;
    const connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection });
    const secret = (name: string, value: string) => {
      const path = join(dir, `${name}.pw`);
      writeFileSync(path, value, { mode: 0o600 });
      return `file:${path}`;
    };
    const specFor = (id: string, to: OnlineDatabase, extra: Record<string, unknown>) => ({
      id,
      source: { uri: sourceDb.uri, password: secret('source', sourceDb.password) },
      target: { uri: to.uri, password: secret(`target-${id}`, to.password) },
      jobs: JOBS,
      ...extra,
    });

    console.log(`offline baseline (dump method, same data, no load), jobs ${JOBS}`);
    const offline = (await (await client.workflow.start('migrateDatabase', {
      taskQueue: 'bench',
      workflowId: 'bench-offline',
      args: [specFor('bench-offline', await createOnlineTarget(target, 'offline'), { method: 'dump' })],
    })).result()) as MigrationResult;
    const offlineCopy = secondsUntil(offline.status, 'postData', true);
    const phaseLine = (status: MigrationStatus, phases: (keyof MigrationStatus['timings'])[]) =>
      phases.map((p) => `${p} ${status.timings[p]?.seconds?.toFixed(1) ?? '?'}s`).join(', ');
    console.log(`  phases: ${phaseLine(offline.status, ['preflight', 'freeze', 'preData', 'copy', 'postData'])}`);
    console.log(`  start → copied + post-data: ${offlineCopy.toFixed(1)} s (whole offline migration with validation: ${secondsUntil(offline.status, 'validate', true).toFixed(1)} s)`);

    const toSyncing: number[] = [];
    const toReady: number[] = [];
    const toSwitched: number[] = [];
    const failed: number[] = [];
    const stepTotals: Record<string, number[]> = {};
    for (let run = 1; run <= RUNS; run++) {
      const id = `bench-online-${run}`;
      const bench = startPgbench(dir, source, 'bench', CLIENTS, RATE);
      benches.push(bench);
      const handle = await client.workflow.start('migrateDatabase', {
        taskQueue: 'bench',
        workflowId: id,
        args: [specFor(id, await createOnlineTarget(target, `online_${run}`), {
          method: 'logical',
          logical: { replicaIdentityFull: true, statusInterval: '1s' },
          // Every run migrates the same source while pgbench writes to it: writable again after each switch.
          cutover: { switchHook: ['sh', '-c', `echo "$PGMOVE_TARGET_URI" > ${join(dir, 'switched-to')}`], sourceAfterSwitch: 'writable' },
        })],
      });
      const syncing = await waitFor('syncing with lag under 1 MB', async () => {
        const status = await handle.query(statusQuery);
        return status.phase === 'syncing' && status.replication?.streaming && status.replication.lagBytes < 1024 * 1024 ? status : undefined;
      }, 1_800_000, 250);
      toSyncing.push(secondsUntil(syncing, 'syncing'));
      const phases = phaseLine(syncing, ['preflight', 'preData', 'copy', 'postData']);
      await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'bench' }] });
      const result = (await handle.result()) as MigrationResult;
      const attempt = result.status.cutovers!.find((c) => c.outcome === 'switched')!;
      if (!result.status.validation?.ok) throw new Error(`run ${run}: validation failed: ${result.status.validation?.summary}`);
      const pgbench = await bench.done;
      const failedTx = Number(/number of failed transactions: (\d+)/.exec(pgbench.output)?.[1] ?? 0) + (pgbench.output.match(/aborted in command/g) ?? []).length;
      toReady.push(attempt.freezeToReadyMs!);
      toSwitched.push(attempt.freezeToSwitchedMs!);
      failed.push(failedTx);
      for (const [step, ms] of Object.entries(attempt.steps ?? {})) (stepTotals[step] ??= []).push(ms);
      console.log(`  run ${run}/${RUNS}: start → syncing ${toSyncing.at(-1)!.toFixed(1)} s (${phases}); freeze → target ready ${attempt.freezeToReadyMs} ms, → switched ${attempt.freezeToSwitchedMs} ms; pgbench transactions failed by the freeze: ${failedTx}; steps ${JSON.stringify(attempt.steps)}`);
    }
    // The same online migration without load: how much of start → syncing is the method, how much the load.
    const quiet = await client.workflow.start('migrateDatabase', {
      taskQueue: 'bench',
      workflowId: 'bench-online-unloaded',
      args: [specFor('bench-online-unloaded', await createOnlineTarget(target, 'online_unloaded'), { method: 'logical', logical: { replicaIdentityFull: true, statusInterval: '1s' } })],
    });
    const quietSyncing = await waitFor('unloaded run syncing', async () => {
      const status = await quiet.query(statusQuery);
      return status.phase === 'syncing' && status.replication?.streaming ? status : undefined;
    }, 1_800_000, 100);
    await quiet.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'bench' }] });
    await quiet.result();
    const unloaded = secondsUntil(quietSyncing, 'syncing');
    console.log(`  without pgbench: start → syncing ${unloaded.toFixed(1)} s (${phaseLine(quietSyncing, ['preflight', 'preData', 'copy', 'postData'])})`);
    await connection.close();

    console.log(`\nresults (${RUNS} runs, pgbench ${CLIENTS} clients at ${RATE} tx/s on the source, source PostgreSQL ${source.major} → target ${target.major})`);
    console.log(`  write freeze until the target is ready:  ${fmt(toReady, 'ms')}`);
    console.log(`  write freeze until the switch hook ran:  ${fmt(toSwitched, 'ms')}`);
    console.log(`  pgbench failed transactions per cutover: ${fmt(failed, '')}`);
    console.log(`  where the freeze goes (median ms): ${Object.entries(stepTotals).map(([step, ms]) => `${step} ${stats(ms).median}`).join(', ')}`);
    const syncingMedian = stats(toSyncing).median;
    console.log(`  start → syncing: ${fmt(toSyncing, 's', 1)}; offline copy of the same data ${offlineCopy.toFixed(1)} s; ratio ${(syncingMedian / offlineCopy).toFixed(2)}×`);
    console.log(`  start → syncing without the pgbench load: ${unloaded.toFixed(1)} s; ratio ${(unloaded / offlineCopy).toFixed(2)}×`);
  } finally {
    for (const bench of benches) await bench.stop();
    if (workerPid) await stopWorkerProcess({ pid: workerPid }, 'SIGKILL');
    if (temporalPid) await stopTemporalServer({ pid: temporalPid });
    for (const cluster of clusters) await stopCluster(cluster);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
