// The node healer: a pass of src/flows/heal.ts every `node.healing.intervalMs` (one at a time, the next
// scheduled when one ends), off when `node.healing.enabled` is false. A volume a CSI call holds is
// skipped for that pass; while the healer works on a volume, a call on it is refused with ABORTED (the
// per-volume guard the server uses) and kubelet retries. Every event is logged with its reason and
// counted by action and outcome (the counts go into the log line of each pass that did something, and
// to the metrics).
import type { HealingConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { OperationGuard } from '../common/operation-guard.js';
import { HealMemory } from '../flows/heal-memory.js';
import { healPass, type HealEvent } from '../flows/heal.js';
import type { NodeHost } from '../flows/ports.js';

const HOLDER = 'the node healer';

/** Told of every event the healer records (the metrics); must not throw. */
export interface HealObserver {
  healEvent(action: HealEvent['action'], outcome: HealEvent['outcome']): void;
}

export class NodeHealer {
  readonly #counts = new Map<string, number>();
  readonly #memory: HealMemory;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(
    private readonly host: NodeHost,
    private readonly cfg: HealingConfig,
    private readonly guard: OperationGuard,
    private readonly log: Logger,
    private readonly observer?: HealObserver,
  ) {
    this.#memory = new HealMemory(cfg.intervalMs);
  }

  start(): void {
    if (!this.cfg.enabled) {
      this.log.info('node healing is off (node.healing.enabled: false)');
      return;
    }
    this.log.info({ intervalMs: this.cfg.intervalMs, orphanGraceMs: this.cfg.orphanGraceMs, reapOrphans: this.cfg.reapOrphans }, 'node healing on');
    this.#schedule();
  }

  /** No new pass; waits for the running one, `maxWaitMs` at most (a step left running is safe to find half-done). */
  async stop(maxWaitMs: number): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    if (this.#running) await Promise.race([this.#running, new Promise((r) => setTimeout(r, maxWaitMs).unref())]);
  }

  /** Events counted so far, by `action/outcome`. */
  counts(): Record<string, number> {
    return Object.fromEntries([...this.#counts].sort(([a], [b]) => a.localeCompare(b)));
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.#pass().finally(() => {
        this.#running = undefined;
        this.#schedule();
      });
    }, this.cfg.intervalMs);
    this.#timer.unref();
  }

  async #pass(): Promise<void> {
    const started = performance.now();
    try {
      const events = await healPass(this.host, {
        memory: this.#memory,
        takeVolume: (volumeId) => this.#take(volumeId),
        graceMs: this.cfg.orphanGraceMs,
        reapOrphans: this.cfg.reapOrphans,
        log: this.log,
      });
      for (const e of events) this.#record(e);
      if (events.length > 0) this.log.info({ events: events.length, durationMs: Math.round(performance.now() - started), counts: this.counts() }, 'node healer pass');
    } catch (e) {
      this.#record({ action: 'check-failed', outcome: 'failed', reason: (e as Error).message });
    }
  }

  #take(volumeId: string): (() => void) | null {
    try {
      return this.guard.tryAcquire(volumeId, HOLDER);
    } catch {
      return null; // a CSI call is working on it: next pass
    }
  }

  #record(e: HealEvent): void {
    const key = `${e.action}/${e.outcome}`;
    const count = (this.#counts.get(key) ?? 0) + 1;
    this.#counts.set(key, count);
    this.observer?.healEvent(e.action, e.outcome);
    const line = { heal: e.action, outcome: e.outcome, reason: e.reason, count, ...pick(e) };
    if (e.outcome === 'done' || e.outcome === 'ended') this.log.info(line, `healer: ${e.action} ${e.outcome}`);
    else this.log.warn(line, `healer: ${e.action} ${e.outcome}`);
  }
}

function pick(e: HealEvent): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ['volumeId', 'iqn', 'portal', 'device'] as const) if (e[k] !== undefined) out[k] = e[k]!;
  return out;
}
