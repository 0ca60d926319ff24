/**
 * The workflows' pure helpers, without a Temporal server: the cutover's refusals, whether the old
 * source stays fenced, when autoCutover fires, the bounded-parallel unit runner, the offline copy's
 * status counters, the Web UI's Markdown status and the phase timings.
 */
import { autoCutoverDue, cutoverRefusal, sourceStaysFrozen, type CutoverControl } from '../../workflows/logical';
import { finalizeRefusal, rollbackRefusal } from '../../workflows/rollback-window';
import { runUnits } from '../../workflows/copy-progress';
import { initPlannedProgress, recordPlannedUnit } from '../../workflows/offline-copy';
import { renderStatusMarkdown } from '../../workflows/status-markdown';
import { advancePhase } from '../../workflows/phase-timing';
import { parseSpec, type MigrationSpec } from '../../src/spec';
import type { ClusterPhase, CopyPlan, MigrationStatus, PhaseTiming, ReplicationState, RollbackState } from '../../src/model';

const spec = (extra: Record<string, unknown> = {}): MigrationSpec =>
  parseSpec({
    source: { uri: 'postgresql://migrator@source.example:5432/app', password: 'env:SRC_PW' },
    target: { uri: 'postgresql://migrator@target.example:5432/app', password: 'env:DST_PW' },
    method: 'logical',
    ...extra,
  });

const replication = (extra: Partial<ReplicationState> = {}): ReplicationState => ({
  lagBytes: 1024,
  lagSeconds: 0,
  retainedWalBytes: 4096,
  streaming: true,
  applyErrors: 0,
  newTables: [],
  measuredAt: '2026-12-01T10:00:00Z',
  ...extra,
});

const status = (extra: Partial<MigrationStatus> = {}): MigrationStatus => ({
  migrationId: 'm1',
  phase: 'syncing',
  method: 'logical',
  methodReason: 'chosen in the spec',
  dryRun: false,
  tables: {},
  totals: { tables: 0, tablesDone: 0, rows: 0, bytes: 0, totalBytes: 0 },
  timings: {},
  errors: [],
  cleanupOwed: [],
  replication: replication(),
  ...extra,
});

const idle: CutoverControl = { running: false };

describe('cutoverRefusal', () => {
  test('a syncing migration with small lag, streaming and no new tables may cut over', () => {
    expect(cutoverRefusal(spec(), status(), idle)).toBeUndefined();
  });
  test('each blocker says why, with the figure where there is one', () => {
    expect(cutoverRefusal(spec(), status(), { running: true })).toBe('a cutover is already running');
    expect(cutoverRefusal(spec(), status(), { running: false, switchedAt: '2026-12-01T10:00:00Z' })).toBe('the migration has already cut over');
    expect(cutoverRefusal(spec(), status({ phase: 'copy' }), idle)).toBe('not syncing yet (phase: copy)');
    expect(cutoverRefusal(spec(), status({ method: 'dump', phase: 'copy' }), idle)).toContain('dump method');
    expect(cutoverRefusal(spec(), status({ replication: undefined }), idle)).toBe('no lag measurement yet');
    expect(cutoverRefusal(spec({ cutover: { maxLagBytes: '1MB' } }), status({ replication: replication({ lagBytes: 5 * 1024 * 1024 }) }), idle)).toMatch(/^lag 5\.0 MB is above cutover\.maxLagBytes \(1\.0 MB\)/);
    expect(cutoverRefusal(spec(), status({ replication: replication({ streaming: false }) }), idle)).toContain('not streaming');
    expect(cutoverRefusal(spec(), status({ replication: replication({ newTables: ['public.late'] }) }), idle)).toContain('public.late');
  });
});

describe('autoCutoverDue', () => {
  test('off, on, and at a time; never while lagging or not streaming', () => {
    expect(autoCutoverDue(spec({ cutover: { autoCutover: false } }), replication())).toBe(false);
    expect(autoCutoverDue(spec({ cutover: { autoCutover: true } }), replication())).toBe(true);
    expect(autoCutoverDue(spec({ cutover: { autoCutover: true } }), replication({ streaming: false }))).toBe(false);
    expect(autoCutoverDue(spec({ cutover: { autoCutover: true, maxLagBytes: '1MB' } }), replication({ lagBytes: 2 * 1024 * 1024 }))).toBe(false);
    expect(autoCutoverDue(spec({ cutover: { autoCutover: { at: '2000-01-01T00:00:00Z' } } }), replication())).toBe(true);
    expect(autoCutoverDue(spec({ cutover: { autoCutover: { at: '2999-01-01T00:00:00Z' } } }), replication())).toBe(false);
  });
});

describe('sourceStaysFrozen', () => {
  const switched = status({ cutovers: [{ outcome: 'switched' } as never] });
  test('only after a switch, with sourceAfterSwitch frozen', () => {
    expect(sourceStaysFrozen(spec({ cutover: { sourceAfterSwitch: 'frozen' } }), status()).keep).toBe(false);
    expect(sourceStaysFrozen(spec({ cutover: { sourceAfterSwitch: 'frozen' } }), switched).keep).toBe(true);
    expect(sourceStaysFrozen(spec({ cutover: { sourceAfterSwitch: 'writable' } }), switched).keep).toBe(false);
  });
  test('a SUPERUSER from the privilege hack is reverted, so the source is unfrozen, with a note', () => {
    const elevated = { ...switched, privilegeElevation: { attributesSet: ['SUPERUSER'] } as never };
    const verdict = sourceStaysFrozen(spec({ cutover: { sourceAfterSwitch: 'frozen' } }), elevated);
    expect(verdict.keep).toBe(false);
    expect(verdict.note).toContain('SUPERUSER');
  });
});

describe('the rollback window', () => {
  const windowed = spec({ cutover: { rollbackWindow: '24h' } });
  const open = (extra: Partial<RollbackState> = {}): Partial<MigrationStatus> => ({
    phase: 'rollbackWindow',
    rollback: { openedAt: '2026-12-01T10:00:00Z', until: '2026-12-02T10:00:00Z', switchedAt: '2026-12-01T10:00:00Z', state: 'open', reverse: replication(), ...extra },
  });
  const switchedControl: CutoverControl = { running: false, switchedAt: '2026-12-01T10:00:00Z' };
  test('a rollback is accepted while the window is open, the source close behind and the reverse stream streaming', () => {
    expect(rollbackRefusal(windowed, status(open()), switchedControl)).toBeUndefined();
  });
  test('each refusal says why', () => {
    expect(rollbackRefusal(spec(), status(), idle)).toContain('cutover.rollbackWindow is not set');
    expect(rollbackRefusal(windowed, status(), idle)).toBe('the migration has not cut over yet (phase: syncing): there is nothing to roll back');
    expect(rollbackRefusal(windowed, status(open({ state: 'rollingBack' })), switchedControl)).toBe('a rollback is already running');
    expect(rollbackRefusal(windowed, status(open({ state: 'finalized', endedBecause: 'finalized by ops' })), switchedControl)).toBe('the rollback window has ended: finalized (finalized by ops)');
    expect(rollbackRefusal(windowed, status(open({ reverse: undefined })), switchedControl)).toBe('no measurement of the reverse stream yet');
    expect(rollbackRefusal(spec({ cutover: { rollbackWindow: '1h', maxLagBytes: '1MB' } }), status(open({ reverse: replication({ lagBytes: 3 * 1024 * 1024 }) })), switchedControl)).toMatch(/^the source is 3\.0 MB behind the target, above cutover\.maxLagBytes \(1\.0 MB\)/);
    expect(rollbackRefusal(windowed, status(open({ reverse: replication({ streaming: false }) })), switchedControl)).toContain('not streaming');
    expect(rollbackRefusal(windowed, status(open({ reverse: replication({ newTables: ['public.new_on_target'] }) })), switchedControl)).toContain('public.new_on_target');
  });
  test('finalize only while the window is open and no rollback runs', () => {
    expect(finalizeRefusal(status(open()), switchedControl)).toBeUndefined();
    expect(finalizeRefusal(status(), idle)).toContain('no rollback window');
    expect(finalizeRefusal(status(open()), { ...switchedControl, running: true })).toBe('a rollback is running');
    expect(finalizeRefusal(status(open({ state: 'rolledBack' })), switchedControl)).toBe('the rollback window has already ended: rolledBack');
  });
  test('after a rollback the old source is not kept frozen (the rollback made it live)', () => {
    const rolledBack = status({ cutovers: [{ outcome: 'switched' } as never], ...open({ state: 'rolledBack' }) });
    expect(sourceStaysFrozen(spec({ cutover: { sourceAfterSwitch: 'frozen', rollbackWindow: '1h' } }), rolledBack).keep).toBe(false);
  });
  test('the Web UI shows the window, the reverse stream and how to act on it', () => {
    const markdown = renderStatusMarkdown(status(open({ reverse: replication({ lagBytes: 512 }) })));
    expect(markdown).toContain('**rollback window**: open until 2026-12-02T10:00:00Z; `pgmove rollback m1` switches back to the source, `pgmove finalize m1` ends the window');
    expect(markdown).toContain('**reverse stream**: the source is 512 bytes behind the target');
    expect(renderStatusMarkdown(status(open({ state: 'closed', endedBecause: 'the reverse slot held too much WAL' })))).toContain('**rollback window**: closed — the reverse slot held too much WAL');
  });
  test('the spec: logical method and pgmove\'s own freeze only', () => {
    expect(() => spec({ method: 'dump', cutover: { rollbackWindow: '1h' } })).toThrow(/rollbackWindow.*needs the logical method/s);
    expect(() => spec({ cutover: { rollbackWindow: '1h', freeze: 'hook', freezeHook: ['true'], unfreezeHook: ['true'] } })).toThrow(/needs cutover\.freeze: readOnly/);
    expect(() => spec({ cutover: { rollbackWindow: 'a day' } })).toThrow(/must be a duration/);
  });
});

describe('runUnits', () => {
  const plan = (n: number): CopyPlan => ({ units: Array.from({ length: n }, (_, i) => ({ id: `u${i}`, tables: [], bytes: 1 })), tables: {}, largeObjects: 0 });
  test('never more than `jobs` in flight, every unit once', async () => {
    let inFlight = 0;
    let most = 0;
    const seen: string[] = [];
    await runUnits(plan(7), 3, async (unit) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await new Promise((resolve) => setImmediate(resolve));
      seen.push(unit.id);
      inFlight -= 1;
    });
    expect(most).toBe(3);
    expect(seen.sort()).toEqual(['u0', 'u1', 'u2', 'u3', 'u4', 'u5', 'u6']);
  });
  test('after a failure no unit starts, the running ones finish, and the failure is thrown', async () => {
    const started: string[] = [];
    let finished = 0;
    await expect(
      runUnits(plan(6), 2, async (unit) => {
        started.push(unit.id);
        if (unit.id === 'u0') throw new Error('unit u0 failed');
        await new Promise((resolve) => setImmediate(resolve));
        finished += 1;
      }),
    ).rejects.toThrow('unit u0 failed');
    expect(started).toEqual(['u0', 'u1']);
    expect(finished).toBe(1);
  });
});

describe('the offline copy status and its Markdown', () => {
  test('totals, tracked tables, the slowest units and the indexes built during the copy', () => {
    const s = status({ phase: 'copy', method: 'dump', replication: undefined });
    initPlannedProgress(s, { units: 3, tables: 12, emptyTables: 2, totalBytes: 3 << 20, largeObjects: 0, largestTables: { 'public.big': { bytes: 2 << 20, units: 2 } } });
    recordPlannedUnit(s, { unitId: 'range:public.big:1/2', index: 0, seconds: 4, tables: 1, tablesDone: 0, rows: 500, bytes: 1 << 20, table: { table: 'public.big', rows: 500, bytes: 1 << 20 } });
    recordPlannedUnit(s, { unitId: 'range:public.big:2/2', index: 1, seconds: 6, tables: 1, tablesDone: 1, rows: 500, bytes: 1 << 20, table: { table: 'public.big', rows: 500, bytes: 1 << 20 }, indexesBuilt: 2 });
    recordPlannedUnit(s, { unitId: 'batch:1/1:public.a', index: 2, seconds: 1, tables: 9, tablesDone: 9, rows: 90, bytes: 9000, indexesBuilt: 9 });
    expect(s.totals).toEqual({ tables: 12, tablesDone: 12, rows: 1090, bytes: (2 << 20) + 9000, totalBytes: 3 << 20 });
    expect(s.tables['public.big']).toMatchObject({ rows: 1000, unitsDone: 2, done: true });
    expect(s.copyUnits).toMatchObject({ done: 3, units: 3, indexesBuilt: 11 });
    expect(s.copyUnits?.slowest.map((u) => u.unit)).toEqual(['range:public.big:2/2', 'range:public.big:1/2', 'batch:1/1:public.a']);
    const markdown = renderStatusMarkdown(s);
    expect(markdown).toContain('## m1: copy');
    expect(markdown).toContain('- **tables**: 12/12 done, 1090 rows');
    expect(markdown).toContain('3/3 done in 1 workflow run(s), 11 indexes built as their tables finished');
    expect(markdown).toContain('range:public.big:2/2 6.0s');
  });
});

describe('advancePhase (both workflows)', () => {
  test('ends the current timing, starts the next, and gives a phase that ends the run no timing', () => {
    const s = status({ phase: 'copy', timings: { copy: { startedAt: '2026-12-01T10:00:00.000Z' } } });
    advancePhase(s, 'postData', '2026-12-01T10:00:30.000Z');
    expect(s.phase).toBe('postData');
    expect(s.timings.copy).toEqual({ startedAt: '2026-12-01T10:00:00.000Z', endedAt: '2026-12-01T10:00:30.000Z', seconds: 30 });
    expect(s.timings.postData).toEqual({ startedAt: '2026-12-01T10:00:30.000Z' });
    advancePhase(s, 'completed', '2026-12-01T10:01:00.000Z');
    expect(s.timings.postData).toMatchObject({ seconds: 30 });
    expect(s.timings.completed).toBeUndefined();
  });
  test('a cluster status moves the same way', () => {
    const cluster: { phase: ClusterPhase; timings: Partial<Record<ClusterPhase, PhaseTiming>> } = { phase: 'starting', timings: {} };
    advancePhase(cluster, 'preflight', '2026-12-01T10:00:00.000Z');
    advancePhase(cluster, 'failed', '2026-12-01T10:00:05.000Z');
    expect(cluster).toEqual({ phase: 'failed', timings: { preflight: { startedAt: '2026-12-01T10:00:00.000Z', endedAt: '2026-12-01T10:00:05.000Z', seconds: 5 } } });
  });
});
