/**
 * The stall watchdog of long activities (copy, post-data, validation). Heartbeats alone prove the
 * worker lives, not that the work moves: a COPY queued behind another session's lock, or waiting for
 * bytes over a dead network path, would wait out the start-to-close timeout (hours) looking healthy.
 *
 * The watch compares the activity's progress counters every second. When they have not moved for a
 * probe interval (a quarter of timeouts.stall, at most 15 s) it asks each server, on a short-lived
 * connection of its own, what the activity's sessions are doing: `pg_blocking_pids` and the blockers'
 * `pg_stat_activity`. A session that works on its own (active, not waiting for a lock or the client)
 * counts as progress (an index build, a range scan); a lock wait, a lost session or silence becomes
 * `stalled` in the heartbeat details (shown by `pgmove status` and the Web UI). After timeouts.stall
 * without progress the watch cancels the sessions and fails the attempt with a retryable error that
 * names the blocker, so Temporal retries it (from its heartbeat checkpoint).
 */
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from 'pg';
import { withClient, type ConnectionInfo, type Side } from './pg/connect';
import { durationMs } from './units';
import { errorMessage } from './error-text';

/** A session seen in pg_stat_activity (a blocker); pid 0 is a prepared transaction. */
export interface SessionInfo {
  pid: number;
  user: string | null;
  application: string | null;
  state: string | null;
  /** When the session entered its state (e.g. idle in transaction since). */
  stateSince: string | null;
  transactionStart: string | null;
  query: string | null;
}

/** One of the activity's own sessions as the server sees it. */
export interface OwnSession {
  side: Side;
  pid: number;
  state: string | null;
  waitEventType: string | null;
  waitEvent: string | null;
  /** When its current statement started: a new one since the last probe is progress (a tool between statements). */
  queryStart: string | null;
  /** The relations (or lock types) it waits for, when it waits for a lock. */
  waitingFor: string | null;
  blockers: SessionInfo[];
}

/** What the heartbeat details carry as `stalled` while progress does not move. */
export interface Stall {
  /** Seconds since progress last moved. */
  seconds: number;
  since: string;
  reason: 'lock' | 'noProgress';
  /** The line `pgmove status` prints. */
  summary: string;
  blocked?: OwnSession[];
}

export interface StallWatchOptions {
  /** What stalls, for messages: "copy of table:public.orders". */
  activity: string;
  stallMs: number;
  /** The servers whose sessions are asked about. */
  endpoints: Partial<Record<Side, ConnectionInfo>>;
  /** The activity's progress counters; any change is progress. */
  progress: () => unknown;
  /** Called once when the stall timeout passed: stop the activity's work (it then throws `failure`). */
  onStall: (failure: ApplicationFailure) => void;
  /** What silence means for this activity, e.g. "no bytes from the source". */
  silence?: string;
  /** Default: a quarter of stallMs, between 1 s and 15 s. */
  probeMs?: number;
}

/** Sessions of this activity (by pid, or by the application name a child tool got) and their blockers. */
export async function ownSessions(client: Client, side: Side, pids: number[], applications: string[]): Promise<OwnSession[]> {
  const result = await client.query<{
    pid: number; state: string | null; wait_event_type: string | null; wait_event: string | null; query_start: string | null; waiting_for: string | null;
    blockers: { pid: number; user: string | null; application: string | null; state: string | null; state_since: string | null; xact_start: string | null; query: string | null }[];
  }>(
    `SELECT a.pid, a.state, a.wait_event_type, a.wait_event, a.query_start::text AS query_start,
            (SELECT string_agg(DISTINCT coalesce(l.relation::regclass::text, l.locktype), ', ') FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted) AS waiting_for,
            coalesce((SELECT json_agg(json_build_object('pid', bp, 'user', b.usename, 'application', b.application_name, 'state', b.state,
                                                        'state_since', b.state_change, 'xact_start', b.xact_start, 'query', left(b.query, 200)) ORDER BY bp)
                        FROM unnest(pg_blocking_pids(a.pid)) bp LEFT JOIN pg_stat_activity b ON b.pid = bp), '[]') AS blockers
       FROM pg_stat_activity a
      WHERE a.pid <> pg_backend_pid()
        AND (a.pid = ANY ($1::int[]) OR (a.application_name = ANY ($2::text[]) AND a.datname = current_database() AND a.usename = current_user))`,
    [pids, applications],
  );
  return result.rows.map((row) => ({
    side,
    pid: row.pid,
    state: row.state,
    waitEventType: row.wait_event_type,
    waitEvent: row.wait_event,
    queryStart: row.query_start,
    waitingFor: row.waiting_for,
    blockers: row.blockers.map((b) => ({
      pid: b.pid, user: b.user, application: b.application, state: b.state, stateSince: b.state_since, transactionStart: b.xact_start, query: b.query,
    })),
  }));
}

async function cancelSessions(client: Client, pids: number[]): Promise<void> {
  await client.query('SELECT pg_cancel_backend(pid) FROM unnest($1::int[]) AS pid', [pids]);
}

/** "pid 123 (user app, idle in transaction since ..., query: LOCK TABLE ...)" */
export function describeBlocker(blocker: SessionInfo): string {
  if (blocker.pid === 0) return 'a prepared transaction (see pg_prepared_xacts)';
  const parts = [
    blocker.user ? `user ${blocker.user}` : undefined,
    blocker.application ? `application ${blocker.application}` : undefined,
    blocker.state ? `${blocker.state}${blocker.stateSince ? ` since ${blocker.stateSince}` : ''}` : undefined,
    blocker.transactionStart ? `transaction started ${blocker.transactionStart}` : undefined,
    blocker.query ? `query: ${blocker.query.replace(/\s+/g, ' ').trim()}` : undefined,
  ].filter(Boolean);
  return `pid ${blocker.pid}${parts.length ? ` (${parts.join(', ')})` : ''}`;
}

function describeOwn(session: OwnSession): string {
  const wait = session.waitEventType ? `, waiting ${session.waitEventType}:${session.waitEvent}` : '';
  return `${session.side} session ${session.pid} ${session.state ?? 'unknown'}${wait}`;
}

/** A session that makes progress on its own: running, and not waiting for a lock or for us. */
function working(session: OwnSession): boolean {
  return session.state === 'active' && session.waitEventType !== 'Lock' && session.waitEventType !== 'Client';
}

/** The human line for a stall (exported for tests and the status view). */
export function summarizeStall(seconds: number, blocked: OwnSession[], quiet: string[], silence: string): string {
  if (blocked.length > 0) {
    return `stalled ${seconds} s: ${blocked
      .map((s) => `${s.side} session ${s.pid} waits for a lock${s.waitingFor ? ` on ${s.waitingFor}` : ''} held by ${s.blockers.map(describeBlocker).join(' and ')}`)
      .join('; ')}`;
  }
  return `stalled ${seconds} s: ${silence}${quiet.length ? ` (${quiet.join('; ')})` : ''}`;
}

export class StallWatch {
  private readonly pids = new Map<Client, { side: Side; pid: number }>();
  private readonly applications: { side: Side; name: string }[] = [];
  private readonly probeMs: number;
  private readonly timer: NodeJS.Timeout;
  private lastProgress: string;
  private lastMove = Date.now();
  private lastProbe = 0;
  private probing = false;
  /** Each session's statement start at the last probe ("side:pid" → query_start). */
  private statements = new Map<string, string | null>();
  stall: Stall | undefined;
  failure: ApplicationFailure | undefined;

  constructor(private readonly options: StallWatchOptions) {
    this.probeMs = options.probeMs ?? Math.min(15_000, Math.max(1000, options.stallMs / 4));
    this.lastProgress = JSON.stringify(options.progress());
    this.timer = setInterval(() => void this.tick(), 1000);
  }

  /** Watches a node-pg connection (its server pid); returns the function that stops watching it. */
  track(side: Side, client: Client): () => void {
    const pid = (client as Client & { processID?: number }).processID;
    if (pid) this.pids.set(client, { side, pid });
    return () => this.pids.delete(client);
  }

  /** Watches the sessions a child tool (pg_dump, pg_restore) opens with this application name. */
  trackApplication(side: Side, name: string): void {
    if (!this.applications.some((a) => a.side === side && a.name === name)) this.applications.push({ side, name });
  }

  /** For the heartbeat details: `{ stalled }` while stalled, else nothing. */
  details(): { stalled?: Stall } {
    return this.stall ? { stalled: this.stall } : {};
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Cancels the tracked sessions' statements (e.g. when the activity is cancelled in the middle of one). */
  async cancelTracked(): Promise<void> {
    for (const side of ['source', 'target'] as const) {
      const pids = [...this.pids.values()].filter((p) => p.side === side).map((p) => p.pid);
      const info = this.options.endpoints[side];
      if (info && pids.length) await this.onServer(info, side, (client) => cancelSessions(client, pids)).catch(() => undefined);
    }
  }

  private async tick(): Promise<void> {
    const now = Date.now();
    const progress = JSON.stringify(this.options.progress());
    if (progress !== this.lastProgress) {
      this.lastProgress = progress;
      this.lastMove = now;
      this.stall = undefined;
      return;
    }
    if (this.probing || this.failure || now - this.lastMove < this.probeMs || now - this.lastProbe < this.probeMs) return;
    this.probing = true;
    this.lastProbe = now;
    try {
      await this.probe();
    } finally {
      this.probing = false;
    }
  }

  private async probe(): Promise<void> {
    const sessions: OwnSession[] = [];
    const quiet: string[] = [];
    for (const side of ['source', 'target'] as const) {
      const info = this.options.endpoints[side];
      const pids = [...this.pids.values()].filter((p) => p.side === side).map((p) => p.pid);
      const applications = this.applications.filter((a) => a.side === side).map((a) => a.name);
      if (!info || (pids.length === 0 && applications.length === 0)) continue;
      try {
        const found = await this.onServer(info, side, (client) => ownSessions(client, side, pids, applications));
        sessions.push(...found);
        for (const pid of pids) if (!found.some((s) => s.pid === pid)) quiet.push(`${side} session ${pid} is gone (connection lost)`);
      } catch (error) {
        quiet.push(`cannot ask the ${side} why: ${errorMessage(error)}`);
      }
    }
    const blocked = sessions.filter((s) => s.blockers.length > 0);
    const previous = this.statements;
    this.statements = new Map(sessions.map((s) => [`${s.side}:${s.pid}`, s.queryStart]));
    const newStatement = sessions.some((s) => !previous.has(`${s.side}:${s.pid}`) || previous.get(`${s.side}:${s.pid}`) !== s.queryStart);
    // Nothing of ours on the servers, a session working on its own, or a tool issuing statements: not a stall.
    if (blocked.length === 0 && (sessions.some(working) || newStatement || (sessions.length === 0 && quiet.length === 0))) {
      this.lastMove = Date.now();
      this.stall = undefined;
      return;
    }
    const seconds = Math.round((Date.now() - this.lastMove) / 1000);
    quiet.push(...sessions.map(describeOwn));
    this.stall = {
      seconds,
      since: new Date(this.lastMove).toISOString(),
      reason: blocked.length > 0 ? 'lock' : 'noProgress',
      summary: summarizeStall(seconds, blocked, quiet, this.options.silence ?? 'no progress'),
      ...(blocked.length > 0 ? { blocked } : {}),
    };
    if (Date.now() - this.lastMove >= this.options.stallMs) await this.fail(sessions);
  }

  private async fail(sessions: OwnSession[]): Promise<void> {
    this.failure = ApplicationFailure.retryable(
      `${this.options.activity} ${this.stall!.summary}; failing this attempt after timeouts.stall (${Math.round(this.options.stallMs / 1000)} s) so that it is retried`,
      'Stalled',
    );
    // Cancel our sessions' statements (a lock wait would outlive a closed socket on the server).
    for (const side of ['source', 'target'] as const) {
      const pids = sessions.filter((s) => s.side === side).map((s) => s.pid);
      const info = this.options.endpoints[side];
      if (info && pids.length) await this.onServer(info, side, (client) => cancelSessions(client, pids)).catch(() => undefined);
    }
    this.options.onStall(this.failure);
  }

  private onServer<T>(info: ConnectionInfo, side: Side, fn: (client: Client) => Promise<T>): Promise<T> {
    return withClient(info, side, fn, { applicationName: 'pgmove stall probe', statementTimeoutMs: 10_000 });
  }
}

/** timeouts.stall of a spec in ms (a spec recorded before the setting existed gets the default). */
export function stallTimeoutMs(spec: { timeouts: { stall?: string } }): number {
  return durationMs(spec.timeouts.stall ?? '5m');
}

/**
 * A stall watch over the sessions of one attempt's child tools (pg_dump on the source, pg_restore on
 * the target), found by the application name they are given (by default one per activity and attempt).
 */
export function toolStallWatch(options: Omit<StallWatchOptions, 'silence'> & { attempt: number; applicationName?: string }): { watch: StallWatch; applicationName: string } {
  const applicationName = options.applicationName ?? `pgmove ${options.activity} #${options.attempt}`;
  const watch = new StallWatch(options);
  watch.trackApplication('source', applicationName);
  watch.trackApplication('target', applicationName);
  return { watch, applicationName };
}
