/**
 * The machine's busy CPU over time, from /proc every 100 ms: a benchmark asks how many core-seconds a
 * window used, in all and per process tree (a cluster's postmaster with its backends, the worker with
 * its pg_dump/pg_restore), to tell a CPU-bound phase (nothing left to overlap) from one that waits and
 * to see who spends the CPU.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';

interface Sample {
  at: number;
  busyTicks: number;
  /** Cumulative ticks per named process tree. */
  trees: Record<string, number>;
}

interface ProcStat {
  ppid: number;
  /** utime + stime + cutime + cstime: the process and its children it has waited for. */
  ticks: number;
}

function processTable(): Map<number, ProcStat> {
  const table = new Map<number, ProcStat>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // Fields after the command name (which may hold spaces): state ppid … utime(14) stime cutime cstime.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      table.set(Number(entry), { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]) });
    } catch {
      // The process ended between the listing and the read.
    }
  }
  return table;
}

/** Each process's live children, from one reading of the process table. */
function childrenOf(table: Map<number, ProcStat>): Map<number, number[]> {
  const children = new Map<number, number[]>();
  for (const [pid, p] of table) {
    const list = children.get(p.ppid);
    if (list) list.push(pid);
    else children.set(p.ppid, [pid]);
  }
  return children;
}

/** A live process tree's CPU ticks: each process with its reaped children, plus its live children (not into other roots). */
function treeTicks(table: Map<number, ProcStat>, children: Map<number, number[]>, root: number, otherRoots: Set<number>): number {
  let ticks = 0;
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop()!;
    if (pid !== root && otherRoots.has(pid)) continue;
    ticks += table.get(pid)?.ticks ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return ticks;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

function busyTicks(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return user + nice + system + irq + softirq + steal;
}

export class CpuSampler {
  private readonly samples: Sample[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly roots = new Map<string, number>();
  readonly cores = cpus().length;

  constructor(intervalMs = 100) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  /** Accounts a process tree (e.g. a cluster's postmaster) under a name from now on. */
  watch(name: string, pid: number): void {
    this.roots.set(name, pid);
  }

  private sample(): void {
    const table = this.roots.size ? processTable() : new Map<number, ProcStat>();
    const children = childrenOf(table);
    const roots = new Set(this.roots.values());
    const trees = Object.fromEntries([...this.roots].map(([name, pid]) => [name, treeTicks(table, children, pid, roots)]));
    this.samples.push({ at: Date.now(), busyTicks: busyTicks(), trees });
  }

  private nearest(t: number): Sample {
    return this.samples.reduce((best, s) => (Math.abs(s.at - t) < Math.abs(best.at - t) ? s : best));
  }

  /** Busy core-seconds between two wall-clock times (ms), from the nearest samples. */
  coreSeconds(fromMs: number, toMs: number): number {
    this.sample();
    return (this.nearest(toMs).busyTicks - this.nearest(fromMs).busyTicks) / TICKS_PER_SECOND;
  }

  /** "12.3 core-s, 87 %: source 3.1 target 6.0 …" for a window (the percentage is of all `cores`). */
  describe(fromMs: number, toMs: number): string {
    const used = this.coreSeconds(fromMs, toMs);
    const wall = Math.max(0.001, (toMs - fromMs) / 1000);
    const from = this.nearest(fromMs);
    const to = this.nearest(toMs);
    const trees = Object.keys(to.trees)
      .map((name) => `${name} ${((to.trees[name]! - (from.trees[name] ?? 0)) / TICKS_PER_SECOND).toFixed(1)}`)
      .join(' ');
    return `${used.toFixed(1)} core-s, ${Math.round((100 * used) / (wall * this.cores))} %${trees ? `: ${trees}` : ''}`;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
