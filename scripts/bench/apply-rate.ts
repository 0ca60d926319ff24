/**
 * The apply-rate benchmark (issue 14, "apply must keep up"): the highest pgbench rate at which the lag
 * of a `syncing` logical migration stays bounded, per subscription apply mode (logical.applyStreaming),
 * and with --big-tx how long large transactions take from their commit on the source until they are
 * visible on the target.
 *
 * Modes (--apply, a comma list; default before,auto): `before` is the subscription as pgmove made it
 * before logical.applyStreaming existed, the target's defaults (PostgreSQL 18: streaming = parallel,
 * text; made with applyStreaming: off, then ALTER SUBSCRIPTION … SET (streaming = parallel)); `off` and
 * `auto` are the spec's values.
 *
 * For each mode (in turn, the order reversed every other round): a fresh target database, a
 * `method: logical` migration through the worker until `syncing` and streaming; then pgbench steps through the rates, each held
 * --hold seconds, the slot's lag sampled every second on the source (bytes not confirmed by the target,
 * and pg_stat_replication.replay_lag). Between steps pgbench stops and the lag drains to ≤ 1 MB, so
 * every step starts even. The achieved rate is the step's increase of events_id_seq (one insert per
 * pgbench transaction) over its duration.
 *
 * BOUNDED: the lag at the end of the step (median of its last 3 samples) is at most 1 MB above the lag
 * at mid-step (median of the 3 samples around the middle) AND below 16 MB (cutover.maxLagBytes'
 * default). The verdict is the highest achieved rate of a bounded step.
 *
 * Where the CPU goes: per step, CPU time of each process class from /proc (source backends, the
 * walsender, the target's apply workers, pgbench, the pgmove worker, and what is not ours) as % of one
 * core, and the apply worker's CPU per transaction.
 *
 * The machine is shared (2 cores, other people's tests): every measurement starts only when no jest and
 * no other benchmark runs (polled every 5 s, up to 40 min), and a step during which processes not ours
 * took more than 30 % of a core is measured again (up to 3 times; else printed as shared).
 *
 * Catch-up: the apply worker's own ceiling, which pgbench cannot reach on a small machine (the source
 * saturates it first): the subscription is disabled while pgbench runs at the top rate for --hold
 * seconds, then enabled with pgbench stopped; the backlog's transactions over the time to drain it.
 */
import { mkdtempSync, chmodSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client as TemporalClient, Connection, type WorkflowHandle } from '@temporalio/client';
import type { Client } from 'pg';
import { adminClient, adminQuery, DEBIAN_PG15_BIN, postmasterPid, PROJECT_PG18_BIN, startCluster, stopCluster, type ClusterHandle } from '../../src/dev/pg-cluster';
import { startTemporalServer, stopTemporalServer } from '../../src/dev/temporal-server';
import { BENCH_TUNING, numericOption, stats, stringOption } from '../lib/bench';
import { startWorkerProcess, stopWorkerProcess } from '../../src/dev/worker-process';
import { waitFor } from '../../src/dev/ports';
import { createOnlineTarget, createPgbenchSource, startPgbench, type OnlineDatabase, type PgbenchRun } from '../lib/pgbench';
import { abortSignal, statusQuery } from '../../workflows/messages';
import { replicationNames } from '../../src/pg/replication';

const SCALE = numericOption('scale', 20);
const CLIENTS = numericOption('clients', 8);
const HOLD = numericOption('hold', 30);
const RATES = stringOption('rates', '250,500,1000,1500,2000,3000').split(',').map(Number);
type Mode = 'before' | 'off' | 'auto';
const MODES = stringOption('apply', 'before,auto').split(',') as Mode[];
if (MODES.some((m) => !['before', 'off', 'auto'].includes(m))) throw new Error(`--apply takes a comma list of before, off, auto; got ${MODES.join(',')}`);
const ROUNDS = numericOption('rounds', 1);
const BIG_TX_ROWS = numericOption('big-tx', 0);
const BIG_TX_COUNT = numericOption('big-tx-count', 3);
const SOURCE_MAJOR = numericOption('source', 15);

const MB = 1024 * 1024;
const BOUND_MARGIN = MB;
const BOUND_LIMIT = 16 * MB;
const DRAINED = MB;
const CLK_TCK = 100; // getconf CLK_TCK on Linux

interface Step {
  rate: number;
  achieved: number;
  lagStart: number;
  lagMid: number;
  lagEnd: number;
  secondsEnd: number;
  bounded: boolean;
  drainSeconds: number;
  cpu: Record<string, number>;
}

interface BigTx {
  rows: number;
  sourceSeconds: number;
  visibleAfterCommit: number;
  peakLag: number;
}

interface ModeResult {
  mode: string;
  options: string;
  steps: Step[];
  catchUp: { transactions: number; bytes: number; seconds: number; cpu: Record<string, number> };
  bigTx: BigTx[];
  slotStats?: string;
}

const mb = (bytes: number) => (bytes / MB).toFixed(1);
const median = (values: number[]) => stats(values).median;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Every process's parent and CPU ticks (utime + stime) with its title, from /proc. */
function processTable(): Map<number, { ppid: number; ticks: number; title: string }> {
  const table = new Map<number, { ppid: number; ticks: number; title: string }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name may hold spaces and parentheses: the fields follow the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const title = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      table.set(Number(entry), { ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]), title });
    } catch {
      /* exited meanwhile */
    }
  }
  return table;
}

/** Machine-wide busy and total ticks (all cores), from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  const total = cpu.reduce((a, b) => a + b, 0);
  return { busy: total - cpu[3]! - cpu[4]!, total };
}

/** CPU ticks per process class: the children of both postmasters by their titles, pgbench, the worker. */
function cpuByClass(source: ClusterHandle, target: ClusterHandle, pgbenchPid: number | undefined, workerPid: number, temporalPid: number): Map<string, number> {
  const table = processTable();
  const sourcePm = postmasterPid(source.dataDir);
  const targetPm = postmasterPid(target.dataDir);
  const perPid = new Map<string, number>();
  for (const [pid, p] of table) {
    let cls: string | undefined;
    if (p.ppid === sourcePm) cls = /walsender/.test(p.title) ? 'source walsender' : /postgres: app /.test(p.title) ? 'source backends' : 'source other';
    else if (p.ppid === targetPm) cls = /parallel apply worker/.test(p.title) ? 'target parallel apply' : /apply worker/.test(p.title) ? 'target apply' : 'target other';
    else if (pid === pgbenchPid) cls = 'pgbench';
    else if (pid === workerPid) cls = 'pgmove worker';
    else if (pid === temporalPid || pid === process.pid) cls = 'temporal + this script';
    if (cls) perPid.set(`${cls}:${pid}`, p.ticks);
  }
  return perPid;
}

/** % of one core per class between two cpuByClass snapshots (a process new since `before` counts from 0). */
function cpuShares(before: Map<string, number>, after: Map<string, number>, seconds: number): Record<string, number> {
  const shares: Record<string, number> = {};
  for (const [key, ticks] of after) {
    const cls = key.slice(0, key.lastIndexOf(':'));
    shares[cls] = (shares[cls] ?? 0) + (ticks - (before.get(key) ?? 0));
  }
  for (const cls of Object.keys(shares)) shares[cls] = Math.round((shares[cls]! / CLK_TCK / seconds) * 100);
  return shares;
}

/** CPU of our processes and the machine (both cores) between two snapshots, with what is not ours. */
function cpuReport(ours: Record<string, number>, machineBefore: { busy: number; total: number }): Record<string, number> {
  const machine = machineTicks();
  const busy = Math.round(((machine.busy - machineBefore.busy) / (machine.total - machineBefore.total)) * 200);
  const sum = Object.values(ours).reduce((a, b) => a + b, 0);
  return { ...ours, 'not ours': Math.max(0, busy - sum), 'machine busy (of 200)': busy };
}

const cpuLine = (cpu: Record<string, number>) => Object.entries(cpu).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');

/** Other people's test runs and benchmarks (this script's own ancestors excluded). */
function foreignLoad(): string[] {
  const table = processTable();
  const ours = new Set<number>();
  for (let pid: number | undefined = process.pid; pid && !ours.has(pid); pid = table.get(pid)?.ppid) ours.add(pid);
  return [...table].filter(([pid, p]) => !ours.has(pid) && /jest|bench\//.test(p.title)).map(([pid, p]) => `${pid} ${p.title.slice(0, 80)}`);
}

async function waitForIdleMachine(): Promise<void> {
  const started = Date.now();
  let said = false;
  for (;;) {
    const load = foreignLoad();
    if (!load.length) break;
    if (Date.now() - started > 40 * 60_000) throw new Error(`the machine was not idle for 40 min: ${load.join('; ')}`);
    if (!said) console.log(`  (waiting for an idle machine: ${load[0]})`);
    said = true;
    await sleep(5000);
  }
  if (said) console.log(`  (idle after ${((Date.now() - started) / 1000).toFixed(0)} s)`);
}

const SHARED_LIMIT = 30; // % of one core taken by processes not ours during a step

/** The slot's lag as the source sees it: bytes the target has not confirmed, and replay_lag in seconds. */
async function lagOf(source: Client, slot: string): Promise<{ bytes: number; seconds: number }> {
  const row = (
    await source.query<{ bytes: string | null; seconds: string | null }>(
      `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint::text AS bytes,
              extract(epoch FROM r.replay_lag)::text AS seconds
         FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
        WHERE s.slot_name = $1`,
      [slot],
    )
  ).rows[0];
  return { bytes: Math.max(0, Number(row?.bytes ?? 0)), seconds: Number(row?.seconds ?? 0) };
}

async function eventsSeq(source: Client): Promise<number> {
  return Number((await source.query<{ v: string }>(`SELECT last_value::text AS v FROM "public"."events_id_seq"`)).rows[0]!.v);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pgmove-bench-apply-rate-'));
  chmodSync(dir, 0o755);
  const clusters: ClusterHandle[] = [];
  let bench: PgbenchRun | undefined;
  let temporalPid: number | undefined;
  let workerPid: number | undefined;
  const clients: Client[] = [];
  const running: WorkflowHandle[] = [];
  try {
    const source = await startCluster({ binDir: SOURCE_MAJOR === 18 ? PROJECT_PG18_BIN : DEBIAN_PG15_BIN, dataDir: join(dir, 'source'), password: 'bench-source', settings: BENCH_TUNING });
    clusters.push(source);
    const target = await startCluster({ binDir: PROJECT_PG18_BIN, dataDir: join(dir, 'target'), password: 'bench-target', settings: BENCH_TUNING });
    clusters.push(target);
    console.log(`building the source: pgbench -i -s ${SCALE} (+ events${BIG_TX_ROWS ? ', big_tx' : ''}), PostgreSQL ${source.major} → ${target.major}`);
    const sourceDb = await createPgbenchSource(source, 'bench', SCALE);
    // The large-transaction tables exist from the start: DDL is not replicated.
    await adminQuery(source, 'bench', `SET ROLE migrator;
      CREATE TABLE big_tx (batch int NOT NULL, n int NOT NULL, payload text NOT NULL, PRIMARY KEY (batch, n));
      CREATE TABLE big_tx_done (batch int PRIMARY KEY, committed_at timestamptz NOT NULL)`);
    const server = await startTemporalServer({ headless: true, logFile: join(dir, 'temporal.log') });
    temporalPid = server.pid;
    const worker = await startWorkerProcess({ address: server.address, taskQueue: 'bench', logFile: join(dir, 'worker.log'), env: { PGMOVE_WORK_DIR: join(dir, 'work'), PGMOVE_ALLOWED_SECRETS: `file:${dir}/*` } });
    workerPid = worker.pid;
    const connection = await Connection.connect({ address: server.address });
    const temporal = new TemporalClient({ connection });
    const secret = (name: string, value: string) => {
      const path = join(dir, `${name}.pw`);
      writeFileSync(path, value, { mode: 0o600 });
      return `file:${path}`;
    };
    const sourceSql = adminClient(source, 'bench');
    await sourceSql.connect();
    clients.push(sourceSql);

    const runMode = async (mode: Mode, run: number): Promise<ModeResult> => {
      const id = `bench-apply-${mode}-${run}`;
      const database = `apply_${mode}_${run}`;
      const to: OnlineDatabase = await createOnlineTarget(target, database);
      const handle = await temporal.workflow.start('migrateDatabase', {
        taskQueue: 'bench',
        workflowId: id,
        args: [{
          id,
          source: { uri: sourceDb.uri, password: secret('source', sourceDb.password) },
          target: { uri: to.uri, password: secret(`target-${id}`, to.password) },
          method: 'logical',
          logical: { replicaIdentityFull: true, applyStreaming: mode === 'auto' ? 'auto' : 'off' },
        }],
      });
      running.push(handle);
      const reached = await waitFor('syncing and streaming', async () => {
        const status = await handle.query(statusQuery);
        return ['failed', 'aborted'].includes(status.phase) || (status.phase === 'syncing' && status.replication?.streaming) ? status : undefined;
      }, 1_800_000, 500);
      if (reached.phase !== 'syncing') throw new Error(`migration ${id} ${reached.phase}: ${JSON.stringify(reached).slice(0, 2000)}`);
      const subscription = replicationNames(id).subscription;
      // PostgreSQL 18's default, which a subscription made without options had.
      if (mode === 'before') await adminQuery(target, database, `ALTER SUBSCRIPTION "${subscription}" SET (streaming = parallel)`);
      const [sub] = await adminQuery<{ substream: string; subbinary: boolean }>(target, database, `SELECT substream::text, subbinary FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`);
      const options = `streaming = ${{ f: 'off', t: 'on', p: 'parallel' }[sub!.substream] ?? sub!.substream}, binary = ${sub!.subbinary}`;
      console.log(`\n[${mode}, round ${run}] syncing; subscription ${options}`);
      const slot = replicationNames(id).slot;
      const drain = async () => {
        const started = Date.now();
        await waitFor('the lag to drain', async () => (await lagOf(sourceSql, slot)).bytes <= DRAINED, 300_000, 250);
        return (Date.now() - started) / 1000;
      };
      await drain();

      const steps: Step[] = [];
      const measureStep = async (rate: number): Promise<Step> => {
        await waitForIdleMachine();
        const seqBefore = await eventsSeq(sourceSql);
        const cpuBefore = cpuByClass(source, target, undefined, worker.pid, server.pid);
        const machineBefore = machineTicks();
        const started = Date.now();
        bench = startPgbench(dir, source, 'bench', CLIENTS, rate, SCALE);
        const samples: { bytes: number; seconds: number }[] = [];
        for (let second = 1; second <= HOLD; second++) {
          await sleep(started + second * 1000 - Date.now());
          samples.push(await lagOf(sourceSql, slot));
        }
        const seconds = (Date.now() - started) / 1000;
        const seqAfter = await eventsSeq(sourceSql);
        const cpu = cpuReport(cpuShares(cpuBefore, cpuByClass(source, target, bench.child.pid, worker.pid, server.pid), seconds), machineBefore);
        if (bench.child.exitCode !== null) throw new Error(`pgbench exited during the step: ${(await bench.done).output.slice(-1000)}`);
        await bench.stop();
        bench = undefined;
        const mid = Math.floor(HOLD / 2);
        const lagMid = median(samples.slice(mid - 2, mid + 1).map((s) => s.bytes));
        const lagEnd = median(samples.slice(-3).map((s) => s.bytes));
        const step: Step = {
          rate,
          achieved: (seqAfter - seqBefore) / seconds,
          lagStart: samples[0]!.bytes,
          lagMid,
          lagEnd,
          secondsEnd: median(samples.slice(-3).map((s) => s.seconds)),
          bounded: lagEnd <= lagMid + BOUND_MARGIN && lagEnd < BOUND_LIMIT,
          drainSeconds: await drain(),
          cpu,
        };
        return step;
      };
      for (const rate of RATES) {
        let step = await measureStep(rate);
        for (let attempt = 2; attempt <= 3 && (step.cpu['not ours'] ?? 0) > SHARED_LIMIT; attempt++) {
          console.log(`  ${String(rate).padStart(5)} tx/s: measured again, processes not ours took ${step.cpu['not ours']} % of a core`);
          step = await measureStep(rate);
        }
        steps.push(step);
        console.log(`  ${String(rate).padStart(5)} tx/s: achieved ${step.achieved.toFixed(0).padStart(5)} tx/s; lag start/mid/end ${mb(step.lagStart)} / ${mb(step.lagMid)} / ${mb(step.lagEnd)} MB (${step.secondsEnd.toFixed(2)} s); bounded ${step.bounded ? 'yes' : 'NO'}; drained in ${step.drainSeconds.toFixed(1)} s`);
        const applyUs = ((step.cpu['target apply'] ?? 0) + (step.cpu['target parallel apply'] ?? 0)) * 1e4 / Math.max(1, step.achieved);
        console.log(`         CPU % of one core: ${cpuLine(step.cpu)}; apply ${applyUs.toFixed(0)} µs CPU per transaction${(step.cpu['not ours'] ?? 0) > SHARED_LIMIT ? ' (SHARED machine)' : ''}`);
      }

      // Catch-up: the backlog of the top rate, applied with the machine to the apply side.
      await waitForIdleMachine();
      await adminQuery(target, database, `ALTER SUBSCRIPTION "${subscription}" DISABLE`);
      const topRate = Math.max(...RATES);
      const seqBefore = await eventsSeq(sourceSql);
      bench = startPgbench(dir, source, 'bench', CLIENTS, topRate, SCALE);
      await sleep(HOLD * 1000);
      await bench.stop();
      bench = undefined;
      const backlog = { transactions: (await eventsSeq(sourceSql)) - seqBefore, bytes: (await lagOf(sourceSql, slot)).bytes };
      const cpuBefore = cpuByClass(source, target, undefined, worker.pid, server.pid);
      const machineBefore = machineTicks();
      await adminQuery(target, database, `ALTER SUBSCRIPTION "${subscription}" ENABLE`);
      const catchUpSeconds = await drain();
      const catchUp = { ...backlog, seconds: catchUpSeconds, cpu: cpuReport(cpuShares(cpuBefore, cpuByClass(source, target, undefined, worker.pid, server.pid), catchUpSeconds), machineBefore) };
      console.log(`  catch-up: ${backlog.transactions} transactions (${mb(backlog.bytes)} MB of WAL) applied in ${catchUpSeconds.toFixed(1)} s = ${(backlog.transactions / catchUpSeconds).toFixed(0)} tx/s`);
      console.log(`         CPU % of one core: ${cpuLine(catchUp.cpu)}${(catchUp.cpu['not ours'] ?? 0) > SHARED_LIMIT ? ' (SHARED machine)' : ''}`);

      const bigTx: BigTx[] = [];
      let slotStats: string | undefined;
      if (BIG_TX_ROWS > 0) {
        const targetSql = adminClient(target, database);
        await targetSql.connect();
        clients.push(targetSql);
        const statsSql = `SELECT spill_txns, spill_bytes, stream_txns, stream_bytes FROM pg_stat_replication_slots WHERE slot_name = $1`;
        const slotBefore = (await sourceSql.query<Record<string, string>>(statsSql, [slot])).rows[0];
        for (let i = 1; i <= BIG_TX_COUNT; i++) {
          const batch = run * 1000 + i + 300 * MODES.indexOf(mode);
          await waitForIdleMachine();
          let peakLag = 0;
          let sampling = true;
          const sampler = (async () => {
            const peek = adminClient(source, 'bench');
            await peek.connect();
            try {
              while (sampling) {
                peakLag = Math.max(peakLag, (await lagOf(peek, slot)).bytes);
                await sleep(200);
              }
            } finally {
              await peek.end();
            }
          })();
          const t0 = Date.now();
          // One simple-protocol query: both statements commit together.
          await sourceSql.query(`INSERT INTO "public"."big_tx" SELECT ${batch}, g, repeat(md5(g::text), 4) FROM generate_series(1, ${BIG_TX_ROWS}) g;
            INSERT INTO "public"."big_tx_done" VALUES (${batch}, now())`);
          const t1 = Date.now();
          await waitFor(`big transaction ${batch} on the target`, async () => (await targetSql.query(`SELECT 1 FROM "public"."big_tx_done" WHERE batch = $1`, [batch])).rowCount === 1, 600_000, 50);
          const t2 = Date.now();
          sampling = false;
          await sampler;
          bigTx.push({ rows: BIG_TX_ROWS, sourceSeconds: (t1 - t0) / 1000, visibleAfterCommit: (t2 - t1) / 1000, peakLag });
          console.log(`  big transaction ${i}/${BIG_TX_COUNT} (${BIG_TX_ROWS} rows): ${((t1 - t0) / 1000).toFixed(1)} s on the source, visible on the target ${((t2 - t1) / 1000).toFixed(1)} s after its commit; peak lag ${mb(peakLag)} MB`);
          await drain();
        }
        const slotAfter = (await sourceSql.query<Record<string, string>>(statsSql, [slot])).rows[0];
        if (slotBefore && slotAfter) {
          slotStats = Object.keys(slotAfter).map((k) => `${k} +${Number(slotAfter[k]) - Number(slotBefore[k])}`).join(', ');
          console.log(`  the source's decoding of them: ${slotStats}`);
        }
      }

      await handle.signal(abortSignal, { reason: 'benchmark done' });
      await handle.result().catch(() => undefined);
      running.splice(running.indexOf(handle), 1);
      const [left] = await adminQuery<{ n: string }>(source, 'postgres', `SELECT count(*)::text AS n FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
      if (left!.n !== '0') throw new Error(`the abort left slot ${slot} on the source`);
      return { mode, options, steps, catchUp, bigTx, slotStats };
    };

    const results: ModeResult[] = [];
    for (let run = 1; run <= ROUNDS; run++) {
      // Alternate the order between rounds so neither mode always runs on a warmer source.
      const order = run % 2 === 1 ? MODES : [...MODES].reverse();
      for (const mode of order) results.push(await runMode(mode, run));
    }
    await connection.close();

    console.log(`\nresults: pgbench ${CLIENTS} clients, scale ${SCALE}, steps of ${HOLD} s, source PostgreSQL ${source.major} → target ${target.major}`);
    console.log(`bounded = lag at the end of the step (median of the last 3 s) ≤ lag at mid-step (median of 3 s) + ${mb(BOUND_MARGIN)} MB, and < ${mb(BOUND_LIMIT)} MB`);
    const verdict = (r: ModeResult) => {
      const bounded = r.steps.filter((s) => s.bounded);
      return bounded.length ? Math.max(...bounded.map((s) => s.achieved)) : 0;
    };
    console.log(`rate    | ${results.map((r) => `${r.mode} (${r.options})`.padEnd(44)).join(' | ')}`);
    for (const [i, rate] of RATES.entries()) {
      console.log(`${String(rate).padEnd(7)} | ${results.map((r) => {
        const s = r.steps[i]!;
        return `${s.achieved.toFixed(0)} tx/s, lag ${mb(s.lagMid)}→${mb(s.lagEnd)} MB, ${s.bounded ? 'bounded' : 'UNBOUNDED'}${(s.cpu['not ours'] ?? 0) > SHARED_LIMIT ? ' (shared)' : ''}`.padEnd(44);
      }).join(' | ')}`);
    }
    console.log(`verdict | ${results.map((r) => `highest bounded: ${verdict(r).toFixed(0)} tx/s`.padEnd(44)).join(' | ')}`);
    console.log(`catch-up| ${results.map((r) => `${(r.catchUp.transactions / r.catchUp.seconds).toFixed(0)} tx/s (${r.catchUp.transactions} tx in ${r.catchUp.seconds.toFixed(1)} s)`.padEnd(44)).join(' | ')}`);
    if (BIG_TX_ROWS > 0) {
      console.log(`big tx  | ${results.map((r) => `commit → visible ${r.bigTx.map((b) => b.visibleAfterCommit.toFixed(1)).join(' / ')} s, peak lag ${mb(Math.max(...r.bigTx.map((b) => b.peakLag)))} MB`.padEnd(44)).join(' | ')}`);
      console.log(`decoding| ${results.map((r) => (r.slotStats ?? '').padEnd(44)).join(' | ')}`);
    }
  } finally {
    if (bench) await bench.stop();
    for (const handle of running) await handle.signal(abortSignal, { reason: 'benchmark failed' }).catch(() => undefined);
    for (const handle of running) await Promise.race([handle.result().catch(() => undefined), sleep(60_000)]);
    for (const client of clients) await client.end().catch(() => undefined);
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
