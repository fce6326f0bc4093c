// An in-process lock per key, released on every path (finally); waiters are served first come first served.
export class KeyedMutex {
  /** per key: the resolvers of waiting callers, in arrival order; present while the key is held */
  private readonly queues = new Map<string, (() => void)[]>();

  /** Whether callers are queued behind the current holder of `key`. */
  hasWaiters(key: string): boolean {
    return (this.queues.get(key)?.length ?? 0) > 0;
  }

  /** Runs `fn` holding `key`; waits (FIFO) while another caller holds it. Always releases. */
  async withLock<T>(key: string, fn: () => Promise<T> | T): Promise<T> {
    await this.acquire(key);
    try {
      return await fn();
    } finally {
      this.release(key);
    }
  }

  private acquire(key: string): Promise<void> {
    const queue = this.queues.get(key);
    if (!queue) {
      this.queues.set(key, []);
      return Promise.resolve();
    }
    return new Promise((resolve) => queue.push(resolve));
  }

  private release(key: string): void {
    const queue = this.queues.get(key);
    const next = queue?.shift();
    if (next) next(); // ownership passes straight to the next waiter
    else this.queues.delete(key);
  }
}
