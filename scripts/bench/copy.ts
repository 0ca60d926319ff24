/**
 * Times pgmove (start → validated), `pg_dump -Fc | pg_restore` and `pgcopydb clone` on one dataset,
 * in the same run on the same clusters, and reports min/median/max, ratios and the worker's peak RSS.
 */
import { existsSync, mkdtempSync, chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { adminQuery, DEBIAN_PG15_BIN, postmasterPid, PROJECT_PG18_BIN, runSqlFile, startCluster, stopCluster, type ClusterHandle } from '../../src/dev/pg-cluster';
import { startTemporalServer, stopTemporalServer } from '../../src/dev/temporal-server';
import { BENCH_TUNING, numericOption, sh, shell, stats, withFragment, type SpecFragment } from '../lib/bench';
import { startWorkerProcess, stopWorkerProcess } from '../../src/dev/worker-process';
import { CpuSampler } from '../lib/cpu-sampler';
import type { MigrationResult } from '../../workflows/migrate-database';

const RUNS = numericOption('runs', 3);
const JOBS = numericOption('jobs', 4);
const SCALE = numericOption('scale', 50);
const DATASET = join(__dirname, '..', '..', '..', 'shared', 'bench', 'dataset.sql');


const uri = (c: ClusterHandle, db: string) => `postgresql://postgres:${encodeURIComponent(c.superuserPassword)}@127.0.0.1:${c.port}/${db}`;

async function freshTarget(target: ClusterHandle): Promise<void> {
  await adminQuery(target, 'postgres', 'DROP DATABASE IF EXISTS bench WITH (FORCE)');
  await adminQuery(target, 'postgres', 'CREATE DATABASE bench');
  await adminQuery(target, 'postgres', 'CHECKPOINT');
}

const cpu = new CpuSampler();

async function timed(label: string, fn: () => Promise<void>): Promise<number> {
  const startedMs = Date.now();
  const started = process.hrtime.bigint();
  await fn();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(`  ${label.padEnd(28)} ${seconds.toFixed(1)} s (${cpu.describe(startedMs, Date.now())})`);
  return seconds;
}

/** Each phase's seconds and the machine's CPU use meanwhile. */
function phaseLine(timings: MigrationResult['status']['timings']): string {
  return Object.entries(timings)
    .map(([phase, t]) => {
      if (!t?.seconds) return `${phase} ${(t?.seconds ?? 0).toFixed(1)}s`;
      const from = Date.parse(t.startedAt);
      return `${phase} ${t.seconds.toFixed(1)}s [${cpu.describe(from, from + t.seconds * 1000)}]`;
    })
    .join(', ');
}


async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pgmove-bench-'));
  chmodSync(dir, 0o755);
  const clusters: ClusterHandle[] = [];
  let temporalPid: number | undefined;
  let workerPid: number | undefined;
  try {
    const source = await startCluster({ binDir: DEBIAN_PG15_BIN, dataDir: join(dir, 'source'), password: 'bench-source', settings: BENCH_TUNING });
    clusters.push(source);
    const target = await startCluster({ binDir: PROJECT_PG18_BIN, dataDir: join(dir, 'target'), password: 'bench-target', settings: BENCH_TUNING });
    clusters.push(target);
    console.log(`building the bench set: pgbench -i -s ${SCALE} + ${DATASET}`);
    await adminQuery(source, 'postgres', 'CREATE DATABASE bench');
    await sh(join(DEBIAN_PG15_BIN, 'pgbench'), ['-i', '-q', '-s', String(SCALE), '-h', '127.0.0.1', '-p', String(source.port), '-U', 'postgres', 'bench'], { PGPASSWORD: source.superuserPassword });
    runSqlFile(source, 'bench', DATASET);
    const [size] = await adminQuery<{ size: string }>(source, 'bench', `SELECT pg_size_pretty(pg_database_size('bench')) AS size`);
    console.log(`source database: ${size?.size}; ${JOBS} jobs; ${RUNS} runs; source PostgreSQL ${source.major}, target ${target.major}; CPU shares are of ${cpu.cores} cores`);

    const server = await startTemporalServer({ headless: true, logFile: join(dir, 'temporal.log') });
    temporalPid = server.pid;
    const worker = await startWorkerProcess({ address: server.address, taskQueue: 'bench', logFile: join(dir, 'worker.log'), env: { PGMOVE_WORK_DIR: join(dir, 'work'), PGMOVE_ALLOWED_SECRETS: `file:${dir}/*` } }); // the bench's password files
    workerPid = worker.pid;
    // Who spends the CPU: each cluster's postmaster tree, the worker with its pg_dump/pg_restore, the server.
    cpu.watch('source', postmasterPid(source.dataDir)!);
    cpu.watch('target', postmasterPid(target.dataDir)!);
    cpu.watch('worker', worker.pid);
    cpu.watch('temporal', server.pid);
    cpu.watch('peer tools', process.pid); // pgcopydb, pg_dump | pg_restore and the bench itself
    const connection = await Connection.connect({ address: server.address });
    const client = new Client({ connection });
    const passwordFile = (c: ClusterHandle, name: string) => {
      const path = join(dir, `${name}.pw`);
      writeFileSync(path, c.superuserPassword, { mode: 0o600 });
      return `file:${path}`;
    };
    const spec = {
      source: { uri: `postgresql://postgres@127.0.0.1:${source.port}/bench`, password: passwordFile(source, 'source') },
      target: { uri: `postgresql://postgres@127.0.0.1:${target.port}/bench`, password: passwordFile(target, 'target') },
      method: 'dump' as const,
      jobs: JOBS,
    };
    const variantOf = (fragment: SpecFragment) => withFragment(spec, fragment);
    const variants: [string, typeof spec][] = [['pgmove', spec]];
    // --compare-index-order: every index built in post-data; --compare-checksums-off: counts only;
    // --compare-split N: tables split into key ranges only above N MB; --variant JSON (repeatable): any
    // spec fragment, e.g. '{"copy":{"indexesDuringCopyUpToMB":1024}}'.
    if (process.argv.includes('--compare-index-order')) variants.push(['pgmove, indexes after copy', variantOf({ copy: { indexesDuringCopy: false } })]);
    if (process.argv.includes('--compare-checksums-off')) variants.push(['pgmove, counts only', variantOf({ validate: { checksums: false } })]);
    const splitAbove = numericOption('compare-split', 0);
    if (splitAbove > 0) variants.push([`pgmove, split > ${splitAbove} MB`, variantOf({ copy: { splitTablesLargerThanMB: splitAbove } })]);
    process.argv.forEach((arg, i) => {
      if (arg !== '--variant') return;
      const fragment = JSON.parse(process.argv[i + 1] ?? '{}') as SpecFragment;
      variants.push([`pgmove ${JSON.stringify(fragment)}`, variantOf(fragment)]);
    });
    const times: Record<string, number[]> = { ...Object.fromEntries(variants.map(([name]) => [name, []])), 'pg_dump | pg_restore': [], pgcopydb: [] };
    const phases: string[] = [];
    // A fresh cluster creates (zero-fills) its WAL segments on the first large write and recycles them
    // afterwards: one untimed copy first, so that the first timed tool does not pay for all of them.
    const dumpRestore = () => shell(`"${DEBIAN_PG15_BIN}/pg_dump" -Fc -d "$SRC" | "${DEBIAN_PG15_BIN}/pg_restore" --no-owner -d "$DST"`, { SRC: uri(source, 'bench'), DST: uri(target, 'bench') });
    await freshTarget(target);
    await timed('warm-up (untimed): pg_dump | pg_restore', dumpRestore);
    for (let run = 1; run <= RUNS; run++) {
      console.log(`run ${run}/${RUNS}`);
      for (const [name, variantSpec] of variants) {
        await freshTarget(target);
        times[name]!.push(
          await timed(`${name} (start → validated)`, async () => {
            const handle = await client.workflow.start('migrateDatabase', { taskQueue: 'bench', workflowId: `bench-${Date.now()}`, args: [variantSpec] });
            const result = (await handle.result()) as MigrationResult;
            if (!result.status.validation?.ok) throw new Error('pgmove validation failed');
            const indexes = result.status.copyUnits?.indexesBuilt ? `, ${result.status.copyUnits.indexesBuilt} indexes built during the copy` : '';
            const validation = result.status.validation;
            const compared = validation?.tablesComparedDuringCopy ? `, ${validation.tablesComparedDuringCopy} of ${validation.tablesChecked} tables compared right after their copy` : '';
            const recompared = validation?.tables.filter((t) => (t.seconds ?? 0) > 0.05).map((t) => `${t.table} ${t.seconds!.toFixed(1)}s`).join(' ');
            phases.push(`${name}: ${phaseLine(result.status.timings)}${indexes}${compared}${recompared ? `; compared by validation: ${recompared}` : ''}`);
          }),
        );
      }
      await freshTarget(target);
      times['pg_dump | pg_restore']!.push(await timed('pg_dump -Fc | pg_restore', dumpRestore));
      await freshTarget(target);
      const workDir = join(dir, `pgcopydb-${run}`);
      times.pgcopydb!.push(
        await timed(`pgcopydb clone (jobs ${JOBS})`, () =>
          sh('pgcopydb', ['clone', '--dir', workDir, '--table-jobs', String(JOBS), '--index-jobs', String(JOBS), '--no-owner'], {
            PGCOPYDB_SOURCE_PGURI: uri(source, 'bench'),
            PGCOPYDB_TARGET_PGURI: uri(target, 'bench'),
            PATH: `${DEBIAN_PG15_BIN}:${process.env.PATH}`,
          }),
        ),
      );
      rmSync(workDir, { recursive: true, force: true });
    }
    const peakRss = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${worker.pid}/status`, 'utf8'))?.[1];
    await connection.close();

    console.log('\nresults (seconds)');
    const base = stats(times.pgcopydb!).median;
    for (const [tool, values] of Object.entries(times)) {
      const s = stats(values);
      console.log(`  ${tool.padEnd(22)} min ${s.min.toFixed(1)}  median ${s.median.toFixed(1)}  max ${s.max.toFixed(1)}  ×${(s.median / base).toFixed(2)} of pgcopydb`);
    }
    console.log(`  pgmove / pg_dump|pg_restore median ratio: ${(stats(times.pgmove!).median / stats(times['pg_dump | pg_restore']!).median).toFixed(2)}`);
    console.log(`  pgmove worker peak RSS: ${peakRss ? (Number(peakRss) / 1024).toFixed(0) : '?'} MB`);
    console.log(`  pgmove phases per run:\n${phases.map((p) => `    ${p}`).join('\n')}`);
  } finally {
    cpu.stop();
    if (workerPid) await stopWorkerProcess({ pid: workerPid }, 'SIGKILL');
    if (temporalPid) await stopTemporalServer({ pid: temporalPid });
    for (const cluster of clusters) await stopCluster(cluster);
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
