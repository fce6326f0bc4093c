// A per-key guard that never waits: a second operation on the same volume is refused with ABORTED, as
// the CSI spec allows, and kubelet retries it.
import { Aborted } from '../errors.js';

export class OperationGuard {
  /** key → what holds it (the method name, for the message) */
  private readonly active = new Map<string, string>();

  /**
   * Takes `key` or throws ABORTED if an operation on it is in progress, naming `volume` (default the
   * key) and what holds it. The release function is idempotent.
   */
  tryAcquire(key: string, holder = 'another call', volume = key): () => void {
    const busy = this.active.get(key);
    if (busy !== undefined) throw new Aborted(`an operation on volume ${volume} is already in progress (${busy})`);
    this.active.set(key, holder);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active.delete(key);
    };
  }
}
