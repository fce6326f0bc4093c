// What the node healer remembers from one pass to the next, in memory only (a restart starts every
// grace period again, the safe side): since when a finding has been seen (an orphan, a record left
// half-done), when a failed repair may be tried again (backing off, so a portal that stays down does
// not take the target lock for a login attempt every pass), and which problems were already reported
// (a report is logged and counted once per episode, and its end once).

import type { HealEvent } from './heal.js';

/** A failed repair is retried after the interval, doubling up to this many intervals. */
const MAX_BACKOFF_INTERVALS = 16;

export class HealMemory {
  readonly #firstSeen = new Map<string, number>();
  readonly #retry = new Map<string, { at: number; failures: number }>();
  readonly #reported = new Map<string, HealEvent>();
  #touched = new Set<string>();
  #reportedThisPass = new Set<string>();

  constructor(
    private readonly intervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Starts a pass: findings not seen again during it are forgotten at its end. */
  beginPass(): void {
    this.#touched = new Set();
    this.#reportedThisPass = new Set();
  }

  /** Ends a pass; returns the reports of problems not reported again (they ended). */
  endPass(): HealEvent[] {
    for (const key of this.#firstSeen.keys()) if (!this.#touched.has(key)) this.#firstSeen.delete(key);
    for (const key of this.#retry.keys()) if (!this.#touched.has(key)) this.#retry.delete(key);
    const ended: HealEvent[] = [];
    for (const [key, event] of this.#reported) {
      if (this.#reportedThisPass.has(key)) continue;
      this.#reported.delete(key);
      ended.push(event);
    }
    return ended;
  }

  /** How long `key` has been seen, in ms (0 the first time). */
  seenForMs(key: string): number {
    this.#touched.add(key);
    const first = this.#firstSeen.get(key);
    if (first === undefined) {
      this.#firstSeen.set(key, this.now());
      return 0;
    }
    return this.now() - first;
  }

  /** Whether a repair of `key` may be tried now (not within the backoff after a failure). */
  mayTry(key: string): boolean {
    this.#touched.add(key);
    const r = this.#retry.get(key);
    return !r || this.now() >= r.at;
  }

  /** A repair of `key` failed: the next try waits one interval, then two, four, … up to the cap. */
  failed(key: string): void {
    this.#touched.add(key);
    const failures = (this.#retry.get(key)?.failures ?? 0) + 1;
    const wait = this.intervalMs * Math.min(MAX_BACKOFF_INTERVALS, 2 ** (failures - 1));
    this.#retry.set(key, { at: this.now() + wait, failures });
  }

  succeeded(key: string): void {
    this.#retry.delete(key);
    this.#firstSeen.delete(key);
  }

  /** A problem seen this pass: its report the first time of an episode (logged and counted then), else nothing. */
  report(key: string, event: HealEvent): HealEvent[] {
    this.#reportedThisPass.add(key);
    if (this.#reported.has(key)) return [];
    this.#reported.set(key, event);
    return [event];
  }

  /** Keeps the episodes under `prefix` open without looking again this pass (the check was skipped). */
  keepReported(prefix: string): void {
    for (const key of this.#reported.keys()) if (key.startsWith(prefix)) this.#reportedThisPass.add(key);
  }
}
