// Whether a daemon the driver depends on (tgtd) answered its last call, fed by every call's outcome.
// Only the changes are logged: one warn line when it stops answering and one when it is back, however
// many calls or probes see the same state in between.
import type { Logger } from '../log.js';

/** What an adapter reports after each call to the daemon. */
export interface ReachabilityObserver {
  reachable(): void;
  unreachable(reason: string): void;
}

export class Reachability implements ReachabilityObserver {
  #state: boolean | undefined;
  #reason: string | undefined;

  /**
   * @param what the daemon's name in log lines ("tgtd")
   * @param consequence what callers see while it is unreachable, logged with the first failure
   * @param onBack called once each time it answers again after being unreachable
   */
  constructor(
    private readonly what: string,
    private readonly logger: Logger,
    private readonly consequence: string,
    private readonly onBack?: () => void,
  ) {}

  /** true: the last call reached it; false: it did not; undefined: no call yet. */
  get state(): boolean | undefined {
    return this.#state;
  }

  /** Why the last call did not reach it (undefined while reachable). */
  get reason(): string | undefined {
    return this.#reason;
  }

  reachable(): void {
    const wasDown = this.#state === false;
    this.#state = true;
    this.#reason = undefined;
    if (!wasDown) return;
    this.logger.warn({ daemon: this.what }, `${this.what} is reachable again`);
    this.onBack?.();
  }

  unreachable(reason: string): void {
    const wasDown = this.#state === false;
    this.#state = false;
    this.#reason = reason;
    if (!wasDown) this.logger.warn({ daemon: this.what, reason }, `${this.what} is not reachable: ${this.consequence}`);
  }
}
