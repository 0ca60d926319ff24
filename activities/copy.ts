/**
 * Phase 6 (offline), the data copy. `planCopy` cuts the work into units: large tables with an integer
 * key into key ranges (parallelism and resume inside one table), small tables into batches (a short
 * history even for thousands of tables). With the source frozen, the workflow runs one `copyUnit`
 * activity per unit, `jobs` at a time: a finished unit is never copied again, a retried one clears its
 * table or range first. Without a freeze, `copyAtSnapshot` copies every unit inside one activity at one
 * exported snapshot (a snapshot dies with its connection, so a crash restarts that copy whole).
 */
import { CancelledFailure, Context } from '@temporalio/activity';
import type { Client } from 'pg';
import type { MigrationSpec } from '../src/spec';
import type { CopyPlan, CopyTable, CopyUnit, CopyUnitResult } from '../src/model';
import { connect, connectionInfo, type ConnectionInfo } from '../src/pg/connect';
import { countLargeObjects, listTables, type TableInfo } from '../src/pg/catalog';
import { displayName, ident, qualified } from '../src/pg/sql';
import { copyGroups, copySmallTables, copyTable, isSmallWholeTable, type CopyCounters } from '../src/pg/table-copy';
import { startHeartbeat } from '../src/heartbeat';
import { StallWatch, stallTimeoutMs } from '../src/stall';
import { tableChecksums, type SourceTableChecksum } from './validate';
import { activityLogger } from '../src/log';

const MB = 1024 * 1024;
const MAX_TABLES_PER_BATCH = 200;

/** `skipUnlogged`: the logical method copies unlogged tables inside the cutover freeze instead. */
export async function planCopy(spec: MigrationSpec, options: { skipUnlogged?: boolean } = {}): Promise<CopyPlan> {
  const info = await connectionInfo(spec.source, 'source');
  const source = await connect(info, 'source', { applicationName: 'pgmove plan' });
  // Table sizes take a share lock: a table locked by another session stops the planning too.
  const stalled = new AbortController();
  const watch = new StallWatch({ activity: 'copy planning', stallMs: stallTimeoutMs(spec), endpoints: { source: info }, progress: () => 0, onStall: () => stalled.abort() });
  watch.track('source', source);
  const heartbeat = startHeartbeat(() => ({ step: 'planning the copy', ...watch.details() }));
  try {
    const tables = (await listTables(source, spec)).filter((t) => !(options.skipUnlogged && t.unlogged));
    const units: CopyUnit[] = [];
    const small: TableInfo[] = [];
    const batchLimit = spec.copy.batchSmallTablesUpToMB * MB;
    const laneShare = tables.reduce((sum, t) => sum + t.bytes, 0) / Math.max(1, spec.jobs);
    for (const table of tables) {
      const count = rangeCount(table.bytes, spec.copy.splitTablesLargerThanMB * MB, laneShare, spec.jobs);
      if (table.splitKey && count > 1) {
        units.push(...(await rangeUnits(source, table, count)));
      } else if (table.bytes >= batchLimit / 4) {
        units.push({ id: `table:${displayName(table)}`, tables: [copyTableOf(table)], bytes: table.bytes });
      } else {
        small.push(table);
      }
    }
    units.push(...batchUnits(small, spec.jobs, batchLimit));
    const perTable: CopyPlan['tables'] = {};
    for (const table of tables) perTable[displayName(table)] = { bytes: table.bytes, units: 0 };
    for (const unit of units) for (const t of unit.tables) perTable[displayName(t)]!.units += 1;
    // Largest first: the long poles start early.
    units.sort((a, b) => b.bytes - a.bytes);
    return { units, tables: perTable, largeObjects: await countLargeObjects(source) };
  } catch (error) {
    throw watch.failure ?? error;
  } finally {
    watch.stop();
    heartbeat.stop();
    await source.end().catch(() => undefined);
  }
}

export function copyTableOf(table: TableInfo): CopyTable {
  return {
    schema: table.schema,
    name: table.name,
    columns: table.columns.map((c) => c.name),
    binary: table.columns.every((c) => c.binarySafe),
    bytes: table.bytes,
  };
}

/** Tables from this size on may be split to keep the lanes even (below, splitting costs more than it saves). */
const BALANCE_SPLIT_FROM = 256 * MB;

/**
 * Into how many key ranges a table is cut (1: copied whole). Whole is cheapest: the source reads it in
 * one sequential scan (a range is read through the key's index, measured 1.5–2× the CPU per row) and the
 * target takes it with COPY FREEZE (rows written frozen: no hint-bit pass by the index builds and the
 * validation after it). So a table is split only where that pays: above `splitBytes`, in ranges of
 * about that size, so that a crash copies at most one range again; and above a lane's even share of
 * all the data (and BALANCE_SPLIT_FROM), where copying it whole would leave the other lanes idle.
 */
export function rangeCount(bytes: number, splitBytes: number, laneShare: number, jobs: number): number {
  const forResume = bytes > splitBytes ? Math.max(2, Math.ceil(bytes / splitBytes)) : 1;
  const forBalance = jobs > 1 && bytes > Math.max(laneShare * 1.1, BALANCE_SPLIT_FROM) ? Math.min(jobs, Math.ceil(bytes / laneShare)) : 1;
  return Math.min(64, Math.max(forResume, forBalance));
}

/** `count` even key ranges between min and max of the split key; the first and last are open-ended. */
async function rangeUnits(source: Client, table: TableInfo, count: number): Promise<CopyUnit[]> {
  const key = table.splitKey!;
  const bounds = (
    await source.query<{ lo: string | null; hi: string | null }>(
      `SELECT min(${ident(key)})::text AS lo, max(${ident(key)})::text AS hi FROM ONLY ${qualified(table)}`,
    )
  ).rows[0];
  if (!bounds?.lo || !bounds.hi) return [{ id: `table:${displayName(table)}`, tables: [copyTableOf(table)], bytes: table.bytes }];
  const lo = BigInt(bounds.lo);
  const span = BigInt(bounds.hi) - lo + 1n;
  const step = span / BigInt(count) > 0n ? span / BigInt(count) : 1n;
  const units: CopyUnit[] = [];
  for (let i = 0; i < count; i++) {
    const from = i === 0 ? null : (lo + step * BigInt(i)).toString();
    const to = i === count - 1 ? null : (lo + step * BigInt(i + 1)).toString();
    if (from !== null && to !== null && BigInt(from) >= BigInt(to)) continue;
    units.push({
      id: `range:${displayName(table)}:${i + 1}/${count}`,
      tables: [copyTableOf(table)],
      range: { key, lo: from, hi: to },
      bytes: Math.ceil(table.bytes / count),
    });
  }
  return units;
}

/** Packs small tables into at least `jobs` batches (so they still copy in parallel), each ≤ the limit. */
function batchUnits(tables: TableInfo[], jobs: number, limitBytes: number): CopyUnit[] {
  if (tables.length === 0) return [];
  const total = tables.reduce((sum, t) => sum + t.bytes, 0);
  const count = Math.min(
    tables.length,
    Math.max(jobs, Math.ceil(total / limitBytes), Math.ceil(tables.length / MAX_TABLES_PER_BATCH)),
  );
  const bins = Array.from({ length: count }, () => ({ tables: [] as TableInfo[], bytes: 0 }));
  for (const table of tables) {
    const lightest = bins.reduce((best, bin) => (bin.bytes < best.bytes || (bin.bytes === best.bytes && bin.tables.length < best.tables.length) ? bin : best));
    lightest.tables.push(table);
    lightest.bytes += table.bytes;
  }
  return bins
    .filter((bin) => bin.tables.length > 0)
    .map((bin, index) => ({
      id: `batch:${index + 1}/${count}:${displayName(bin.tables[0]!)}`,
      tables: bin.tables.map(copyTableOf),
      bytes: bin.bytes,
    }));
}

export interface CopyUnitInput {
  spec: MigrationSpec;
  unit: CopyUnit;
}

/** Heartbeat details of a running unit; `completedTables` is the resume checkpoint of a batch. */
interface UnitProgress {
  unit: string;
  table?: string;
  rows: number;
  bytes: number;
  completedTables: CopyUnitResult['tables'];
}

export async function copyUnit(input: CopyUnitInput): Promise<CopyUnitResult> {
  const context = Context.current();
  const previous = context.info.heartbeatDetails as UnitProgress | undefined;
  const sourceInfo = await connectionInfo(input.spec.source, 'source');
  const targetInfo = await connectionInfo(input.spec.target, 'target');
  return runUnit(input.unit, sourceInfo, targetInfo, undefined, previous?.completedTables ?? [], undefined, undefined, stallTimeoutMs(input.spec));
}

/** The stall watch of a copy: its progress is the bytes moved; silence means nothing came from the source. */
function copyStallWatch(activity: string, stallMs: number, sourceInfo: ConnectionInfo, targetInfo: ConnectionInfo, progress: () => unknown, stop: (failure: unknown) => void): StallWatch {
  return new StallWatch({ activity, stallMs, endpoints: { source: sourceInfo, target: targetInfo }, progress, onStall: stop, silence: 'no bytes from the source' });
}

export async function runUnit(
  unit: CopyUnit,
  sourceInfo: ConnectionInfo,
  targetInfo: ConnectionInfo,
  snapshot: string | undefined,
  alreadyDone: CopyUnitResult['tables'],
  onProgress?: (progress: UnitProgress) => void,
  stopSignal?: AbortSignal,
  /** A watch of this unit's sessions: the caller's (shared by its lanes), or this unit's own after that long. */
  stall?: StallWatch | number,
): Promise<CopyUnitResult> {
  const log = activityLogger('copy');
  const started = Date.now();
  const progress: UnitProgress = { unit: unit.id, rows: 0, bytes: 0, completedTables: [...alreadyDone] };
  const counters: CopyCounters = { rows: 0, bytes: 0 };
  const details = () => ({ ...progress, rows: counters.rows, bytes: counters.bytes });
  const stalled = new AbortController();
  const ownWatch = typeof stall === 'number' ? copyStallWatch(`copy of ${unit.id}`, stall, sourceInfo, targetInfo, details, () => stalled.abort()) : undefined;
  const watch = ownWatch ?? (typeof stall === 'object' ? stall : undefined);
  const heartbeat = onProgress ? undefined : startHeartbeat(() => ({ ...details(), ...ownWatch?.details() }));
  const report = onProgress ? setInterval(() => onProgress(details()), 2000) : undefined;
  const signal = AbortSignal.any([stopSignal ?? heartbeat?.signal ?? Context.current().cancellationSignal, stalled.signal]);
  const untrack: ((() => void) | undefined)[] = [];
  let source: Client | undefined;
  let target: Client | undefined;
  try {
    source = await connect(sourceInfo, 'source', { applicationName: 'pgmove copy' });
    untrack.push(watch?.track('source', source));
    target = await connect(targetInfo, 'target', { applicationName: 'pgmove copy' });
    untrack.push(watch?.track('target', target));
    await source.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`);
    if (snapshot) await source.query(`SET TRANSACTION SNAPSHOT '${snapshot.replace(/'/g, "''")}'`);
    const done = new Set(alreadyDone.map((t) => t.table));
    for (const group of copyGroups(unit.tables.filter((t) => !done.has(displayName(t))), unit.range)) {
      progress.table = displayName(group[0]!);
      counters.rows = 0;
      counters.bytes = 0;
      if (!isSmallWholeTable(group[0]!, unit.range)) {
        await copyTable(source, target, group[0]!, unit.range, counters, signal);
        progress.completedTables.push({ table: progress.table, rows: counters.rows, bytes: counters.bytes });
      } else {
        // Recorded once the group's transaction committed: a retry copies the whole group again.
        const copied = await copySmallTables(source, target, group, counters, signal);
        group.forEach((table, i) => progress.completedTables.push({ table: displayName(table), ...copied[i]! }));
      }
      heartbeat?.beat();
    }
    await source.query('COMMIT');
    const seconds = (Date.now() - started) / 1000;
    log.info({ unit: unit.id, tables: progress.completedTables.length, seconds }, 'unit copied');
    return { unitId: unit.id, tables: progress.completedTables, seconds };
  } catch (error) {
    if (watch?.failure) throw watch.failure;
    if (signal.aborted) throw new CancelledFailure(`copy of ${unit.id} cancelled`);
    throw error;
  } finally {
    ownWatch?.stop();
    untrack.forEach((stop) => stop?.());
    heartbeat?.stop();
    if (report) clearInterval(report);
    await source?.end().catch(() => undefined);
    await target?.end().catch(() => undefined);
  }
}

export interface SnapshotCopyResult {
  units: CopyUnitResult[];
  largeObjects: number;
  /** Source row counts and checksums at the copy's snapshot, for validation. */
  sourceTables: SourceTableChecksum[];
}

/** Copies every unit at one exported snapshot of the writable source, `jobs` units at a time. */
export async function copyAtSnapshot(input: { spec: MigrationSpec; plan: CopyPlan }): Promise<SnapshotCopyResult> {
  const { spec, plan } = input;
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  const holder = await connect(sourceInfo, 'source', { applicationName: 'pgmove snapshot' });
  const copier = new SnapshotCopier(spec, plan, sourceInfo, targetInfo);
  try {
    await holder.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snapshot = (await holder.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0]!.id;
    const units = await copier.copyUnits(snapshot);
    const largeObjects = await copyLargeObjectsWith(sourceInfo, targetInfo, snapshot, copier.signal);
    // Source checksums at the snapshot: the source keeps changing, so validation compares against these.
    const sourceTables = await checksumsAt(sourceInfo, snapshot, plan, spec.validate.checksums);
    await holder.query('COMMIT');
    return { units, largeObjects, sourceTables };
  } finally {
    copier.stop();
    await holder.end().catch(() => undefined);
  }
}

/**
 * The parallel copy of a plan's units at one exported snapshot, with heartbeats of the whole copy. The
 * first failure stops the other lanes before the attempt ends (no COPY outlives it).
 */
export class SnapshotCopier {
  private readonly running = new Map<string, UnitProgress>();
  private readonly finished: CopyUnitResult[] = [];
  private readonly heartbeat;
  private readonly watch: StallWatch;
  private readonly stopper = new AbortController();
  private failure: unknown;

  constructor(
    private readonly spec: MigrationSpec,
    private readonly plan: CopyPlan,
    private readonly sourceInfo: ConnectionInfo,
    private readonly targetInfo: ConnectionInfo,
    /** Shown first in the heartbeat details (e.g. the copy generation and what an earlier one kept). */
    leading: Record<string, unknown> = {},
  ) {
    const sum = (list: { rows: number; bytes: number }[], key: 'rows' | 'bytes') => list.reduce((n, x) => n + x[key], 0);
    const progress = () => ({
      ...leading,
      unitsDone: this.finished.length,
      units: plan.units.length,
      rows: sum(this.finished.flatMap((u) => u.tables), 'rows') + sum([...this.running.values()], 'rows'),
      bytes: sum(this.finished.flatMap((u) => u.tables), 'bytes') + sum([...this.running.values()], 'bytes'),
      running: [...this.running.values()].map((p) => p.unit),
    });
    this.watch = copyStallWatch('copy', stallTimeoutMs(spec), sourceInfo, targetInfo, () => progress().bytes, (failure) => this.fail(failure));
    this.heartbeat = startHeartbeat(() => ({ ...progress(), ...this.watch.details() }));
    this.heartbeat.signal.addEventListener('abort', () => this.stopper.abort(), { once: true });
  }

  get signal(): AbortSignal {
    return this.stopper.signal;
  }

  /** Stops the copy from outside (e.g. a guardrail); copyUnits then throws this error. */
  fail(error: unknown): void {
    this.failure ??= error;
    this.stopper.abort();
  }

  /** `onUnitCopied` runs once a unit's rows have committed on the target, before the lane goes on. */
  async copyUnits(snapshot: string, onUnitCopied?: (result: CopyUnitResult) => Promise<void>): Promise<CopyUnitResult[]> {
    const queue = [...this.plan.units];
    const lane = async () => {
      for (let unit = queue.shift(); unit && !this.stopper.signal.aborted; unit = queue.shift()) {
        const id = unit.id;
        const result = await runUnit(unit, this.sourceInfo, this.targetInfo, snapshot, [], (p) => this.running.set(id, p), this.stopper.signal, this.watch);
        await onUnitCopied?.(result);
        this.finished.push(result);
        this.running.delete(id);
      }
    };
    const lanes = await Promise.allSettled(
      Array.from({ length: Math.min(this.spec.jobs, this.plan.units.length) }, () =>
        lane().catch((error: unknown) => {
          this.stopper.abort();
          throw error;
        }),
      ),
    );
    if (this.failure !== undefined) throw this.failure;
    const failed = lanes.find((l): l is PromiseRejectedResult => l.status === 'rejected');
    if (failed) throw failed.reason;
    return this.finished;
  }

  stop(): void {
    this.watch.stop();
    this.heartbeat.stop();
  }
}

const LO_CHUNK = 1 << 20;
const INV_WRITE = 0x20000;

/** Large objects' contents (their definitions came with pre-data), rewritten whole on every attempt. */
export async function copyLargeObjects(spec: MigrationSpec): Promise<{ largeObjects: number }> {
  const sourceInfo = await connectionInfo(spec.source, 'source');
  const targetInfo = await connectionInfo(spec.target, 'target');
  const heartbeat = startHeartbeat(() => ({ step: 'large objects' }));
  try {
    return { largeObjects: await copyLargeObjectsWith(sourceInfo, targetInfo, undefined, heartbeat.signal) };
  } finally {
    heartbeat.stop();
  }
}

export async function copyLargeObjectsWith(
  sourceInfo: ConnectionInfo,
  targetInfo: ConnectionInfo,
  snapshot: string | undefined,
  signal: AbortSignal,
): Promise<number> {
  const source = await connect(sourceInfo, 'source', { applicationName: 'pgmove copy' });
  const target = await connect(targetInfo, 'target', { applicationName: 'pgmove copy' });
  try {
    await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    if (snapshot) await source.query(`SET TRANSACTION SNAPSHOT '${snapshot.replace(/'/g, "''")}'`);
    const oids = (await source.query<{ oid: string }>('SELECT oid::text AS oid FROM pg_largeobject_metadata ORDER BY oid')).rows;
    await target.query('BEGIN');
    for (const { oid } of oids) {
      if (signal.aborted) throw new CancelledFailure('large object copy cancelled');
      await target.query(
        `SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = $1::oid) THEN 0 ELSE lo_create($1::oid) END`,
        [oid],
      );
      await target.query('SELECT lo_truncate(lo_open($1::oid, $2), 0)', [oid, INV_WRITE]);
      for (let offset = 0; ; offset += LO_CHUNK) {
        const chunk = (await source.query<{ data: Buffer }>('SELECT lo_get($1::oid, $2, $3) AS data', [oid, offset, LO_CHUNK])).rows[0]!.data;
        if (chunk.length > 0) await target.query('SELECT lo_put($1::oid, $2, $3)', [oid, offset, chunk]);
        if (chunk.length < LO_CHUNK) break;
      }
    }
    await target.query('COMMIT');
    await source.query('COMMIT');
    return oids.length;
  } finally {
    await source.end().catch(() => undefined);
    await target.end().catch(() => undefined);
  }
}

/** Row counts and checksums of every table at the snapshot (one connection per job). */
async function checksumsAt(sourceInfo: ConnectionInfo, snapshot: string, plan: CopyPlan, withChecksums: boolean): Promise<SourceTableChecksum[]> {
  const source = await connect(sourceInfo, 'source', { applicationName: 'pgmove validate' });
  try {
    await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await source.query(`SET TRANSACTION SNAPSHOT '${snapshot.replace(/'/g, "''")}'`);
    const names = Object.keys(plan.tables);
    const tables = plan.units.flatMap((u) => u.tables).filter((t, i, all) => all.findIndex((x) => x.schema === t.schema && x.name === t.name) === i);
    const result = await tableChecksums(source, tables.filter((t) => names.includes(displayName(t))), withChecksums);
    await source.query('COMMIT');
    return result;
  } finally {
    await source.end().catch(() => undefined);
  }
}
