/**
 * The steps of a freeze window (the cutover's, the rollback's): the step running now, for heartbeat
 * details and the stall report, and how long each finished step took (name → ms since the previous
 * step ended), for the attempt's `steps` in the status. Post-data and validation log theirs with it.
 */
export class StepTimer {
  readonly steps: Record<string, number> = {};
  /** The step running now (`starting` before the first). */
  current = 'starting';
  /** When the last timed step ended (or the timer started): the next step is measured from here. */
  mark = Date.now();

  /** Names the step running now without timing it (e.g. a resumed switch hook). */
  enter(name: string): void {
    this.current = name;
  }

  /** Restarts the clock: the next timed step is measured from now. */
  restart(): number {
    this.mark = Date.now();
    return this.mark;
  }

  /** Ends the step running since the last mark (for a phase that logs its steps at the end). */
  lap(name: string): void {
    const now = Date.now();
    this.steps[name] = now - this.mark;
    this.mark = now;
  }

  /** The finished steps in seconds (for logs). */
  seconds(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.steps).map(([name, ms]) => [name, ms / 1000]));
  }

  async timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
    this.current = name;
    const result = await fn();
    const now = Date.now();
    this.steps[name] = now - this.mark;
    this.mark = now;
    return result;
  }

  /** What the heartbeat carries. */
  details(): { step: string; steps: Record<string, number> } {
    return { step: this.current, steps: this.steps };
  }
}
