/**
 * Times pgmove's offline migration (start → validated) of N small tables, each with a primary key, an
 * index, a foreign key to its neighbour and 20 rows, against `pg_dump -Fc` followed by
 * `pg_restore -j 2` of the same database, in one run on the same clusters; prints the workflow's runs,
 * events per run and largest payload. `--method logical` times the online method instead: start →
 * syncing, then the cutover (requested as soon as it is accepted) → completed and validated.
 */
import { existsSync, mkdtempSync, chmodSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { adminQuery, DEBIAN_PG15_BIN, PROJECT_PG18_BIN, startCluster, stopCluster, type ClusterHandle } from '../../src/dev/pg-cluster';
import { startTemporalServer, stopTemporalServer } from '../../src/dev/temporal-server';
import { BENCH_TUNING, numericOption, shell, stats, withFragment, type SpecFragment } from '../lib/bench';
import { startWorkerProcess, stopWorkerProcess } from '../../src/dev/worker-process';
import { createManyTables, manyTablesCensus } from '../lib/many-tables';
import { workflowRunStats } from '../lib/history-stats';
import type { MigrationResult } from '../../workflows/migrate-database';
import { requestCutoverUpdate, statusQuery } from '../../workflows/messages';
import { waitFor } from '../../src/dev/ports';

const TABLES = numericOption('tables', 10_000);
const ROWS = numericOption('rows', 20);
const JOBS = numericOption('jobs', 2);
const RUNS = numericOption('runs', 1);
const METHOD = process.argv.includes('--method') ? process.argv[process.argv.indexOf('--method') + 1] : 'dump';
if (METHOD !== 'dump' && METHOD !== 'logical') throw new Error(`--method ${METHOD}: dump or logical`);
/** --spec JSON: a fragment merged into pgmove's spec, e.g. '{"validate":{"duringCopy":true}}'. */
const SPEC_FRAGMENT = process.argv.includes('--spec') ? (JSON.parse(process.argv[process.argv.indexOf('--spec') + 1] ?? '{}') as SpecFragment) : {};

const uri = (c: ClusterHandle, db: string) => `postgresql://postgres:${encodeURIComponent(c.superuserPassword)}@127.0.0.1:${c.port}/${db}`;

async function freshTarget(target: ClusterHandle): Promise<void> {
  await adminQuery(target, 'postgres', 'DROP DATABASE IF EXISTS many WITH (FORCE)');
  await adminQuery(target, 'postgres', 'CREATE DATABASE many');
  await adminQuery(target, 'postgres', 'CHECKPOINT');
}

/** The online method's write freeze (fence → target ready) and its steps, in ms. */
function freezeOf(result: MigrationResult | undefined): string {
  const cutover = result?.status.cutovers?.at(-1);
  if (!cutover?.freezeToReadyMs) return '';
  return `freeze ${cutover.freezeToReadyMs} ms (${Object.entries(cutover.steps ?? {}).map(([step, ms]) => `${step} ${ms}`).join(', ')}); `;
}

async function timed(label: string, fn: () => Promise<void>): Promise<number> {
  const started = process.hrtime.bigint();
  await fn();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(`  ${label.padEnd(36)} ${seconds.toFixed(1)} s`);
  return seconds;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pgmove-bench-many-'));
  chmodSync(dir, 0o755);
  const clusters: ClusterHandle[] = [];
  let temporalPid: number | undefined;
  let workerPid: number | undefined;
  try {
    const source = await startCluster({ binDir: DEBIAN_PG15_BIN, dataDir: join(dir, 'source'), password: 'bench-source', settings: BENCH_TUNING });
    clusters.push(source);
    const target = await startCluster({ binDir: PROJECT_PG18_BIN, dataDir: join(dir, 'target'), password: 'bench-target', settings: BENCH_TUNING });
    clusters.push(target);
    await adminQuery(source, 'postgres', 'CREATE DATABASE many');
    await timed(`generating ${TABLES} tables × ${ROWS} rows`, () => createManyTables(source, 'many', TABLES, ROWS));
    const census = await manyTablesCensus(source, 'many');
    console.log(`source: ${JSON.stringify(census)}; PostgreSQL ${source.major} → ${target.major}, jobs ${JOBS}, ${RUNS} run(s)${process.argv.includes('--spec') ? `, spec ${JSON.stringify(SPEC_FRAGMENT)}` : ''}`);

    const server = await startTemporalServer({ headless: true, logFile: join(dir, 'temporal.log') });
    temporalPid = server.pid;
    const worker = await startWorkerProcess({ address: server.address, taskQueue: 'bench', logFile: join(dir, 'worker.log'), env: { PGMOVE_WORK_DIR: join(dir, 'work'), PGMOVE_ALLOWED_SECRETS: `file:${dir}/*` } }); // the bench's password files
    workerPid = worker.pid;
    const connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection });
    const passwordFile = (c: ClusterHandle, name: string) => {
      const path = join(dir, `${name}.pw`);
      writeFileSync(path, c.superuserPassword, { mode: 0o600 });
      return `file:${path}`;
    };
    const spec = withFragment({
      source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/many`, password: passwordFile(source, 'source') },
      target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/many`, password: passwordFile(target, 'target') },
      method: METHOD as 'dump' | 'logical',
      jobs: JOBS,
      cutover: { autoCutover: false },
    }, SPEC_FRAGMENT);
    const label = METHOD === 'dump' ? 'pgmove offline (validated)' : 'pgmove online (cut over, validated)';
    const times: Record<string, number[]> = { 'pg_dump -Fc + pg_restore -j 2': [], [label]: [] };
    const details: string[] = [];
    for (let run = 1; run <= RUNS; run++) {
      console.log(`run ${run}/${RUNS}`);
      await freshTarget(target);
      const archive = join(dir, 'many.dump');
      times['pg_dump -Fc + pg_restore -j 2']!.push(
        await timed('pg_dump -Fc + pg_restore -j 2', () =>
          shell(`"${DEBIAN_PG15_BIN}/pg_dump" -Fc -f "${archive}" -d "$SRC" && "${DEBIAN_PG15_BIN}/pg_restore" -j 2 --no-owner -d "$DST" "${archive}"`, { SRC: uri(source, 'many'), DST: uri(target, 'many') }),
        ),
      );
      rmSync(archive, { force: true });
      await freshTarget(target);
      const workflowId = `many-${run}-${Date.now()}`;
      let result: MigrationResult | undefined;
      let syncingAfter = 0;
      times[label]!.push(
        await timed(`${label.replace(/ \(.*/, '')} (start → validated)`, async () => {
          const started = Date.now();
          const handle = await client.workflow.start('migrateDatabase', { taskQueue: 'bench', workflowId, args: [spec] });
          if (METHOD === 'logical') {
            await waitFor('syncing', async () => (await handle.query(statusQuery)).replication !== undefined, 3_600_000, 500);
            syncingAfter = (Date.now() - started) / 1000;
            await waitFor('the cutover accepted', async () => (await handle.executeUpdate(requestCutoverUpdate, { args: [{ approvedBy: 'bench' }] })).accepted, 600_000, 1000);
          }
          result = (await handle.result()) as MigrationResult;
          if (!result.status.validation?.ok) throw new Error(`pgmove validation failed: ${result.status.validation?.summary}`);
        }),
      );
      const equal = JSON.stringify(await manyTablesCensus(target, 'many')) === JSON.stringify(census);
      const runs = await workflowRunStats(client, workflowId);
      const largest = runs.reduce((a, b) => (b.largestPayloadBytes > a.largestPayloadBytes ? b : a));
      details.push(
        `    run ${run}: ${runs.length} workflow run(s), events per run ${runs.map((r) => r.events).join(' / ')}, largest payload ${(largest.largestPayloadBytes / 1024).toFixed(1)} KB (${largest.largestPayloadAt}); ` +
          `${result?.status.copyUnits?.units} copy units; ${syncingAfter ? `syncing after ${syncingAfter.toFixed(1)} s; ` : ''}${freezeOf(result)}target ${equal ? 'equal' : 'DIFFERENT'} by census; phases ${Object.entries(result?.status.timings ?? {}).map(([p, t]) => `${p} ${t?.seconds?.toFixed(1)}s`).join(', ')}`,
      );
    }
    await connection.close();
    console.log('\nresults (seconds)');
    const peer = stats(times['pg_dump -Fc + pg_restore -j 2']!).median;
    for (const [tool, values] of Object.entries(times)) {
      const s = stats(values);
      console.log(`  ${tool.padEnd(32)} min ${s.min.toFixed(1)}  median ${s.median.toFixed(1)}  max ${s.max.toFixed(1)}  ×${(s.median / peer).toFixed(2)} of pg_dump + pg_restore`);
    }
    console.log(`  pgmove:\n${details.join('\n')}`);
  } finally {
    if (workerPid) await stopWorkerProcess({ pid: workerPid }, 'SIGKILL');
    if (temporalPid) await stopTemporalServer({ pid: temporalPid });
    for (const cluster of clusters) await stopCluster(cluster);
    // PGMOVE_KEEP_BENCH_DIR=1 keeps the clusters' data and the worker's log for a look afterwards.
    if (existsSync(dir) && !process.env.PGMOVE_KEEP_BENCH_DIR) rmSync(dir, { recursive: true, force: true });
    else console.log(`kept ${dir}`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
