// Locks, each released on every path (finally):
// - KeyedMutex: in-process, per key, waiters served first come first served.
// - TargetLock: KeyedMutex plus a proper-lockfile lock per target IQN under <stateDir>/locks, so two
//   driver processes on one node (a rolling upgrade) never interleave login/scan/logout of a target.
//   A lock left by a crashed process goes stale (its mtime stops being refreshed) and is taken over.
// - OperationGuard: never waits; a second operation on the same volume is refused with ABORTED, as the
//   CSI spec allows, and kubelet retries it.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { Aborted } from '../errors.js';
import type { Logger } from '../log.js';
import { safeFileKey } from './validate.js';

export class KeyedMutex {
  /** per key: the resolvers of waiting callers, in arrival order; present while the key is held */
  private readonly queues = new Map<string, (() => void)[]>();

  isLocked(key: string): boolean {
    return this.queues.has(key);
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

export interface TargetLockOptions {
  /** a lock whose holder stopped refreshing it for this long is taken over (proper-lockfile minimum 5000) */
  staleMs?: number;
  /** how long to wait for another process's lock before giving up with ABORTED */
  maxWaitMs?: number;
  logger?: Logger;
}

const DEFAULT_STALE_MS = 10_000;
const DEFAULT_MAX_WAIT_MS = 120_000;
/** Backoff between attempts on a lock held by another process. */
const RETRY_MIN_MS = 20;
const RETRY_MAX_MS = 250;
const RETRY_FACTOR = 1.5;
const LOCK_DIR_MODE = 0o700;

export class TargetLock {
  private readonly mutex = new KeyedMutex();
  private readonly staleMs: number;
  private readonly retries: number;
  private readonly logger: Logger | undefined;

  constructor(
    private readonly stateDir: string,
    opts: TargetLockOptions = {},
  ) {
    this.staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
    // enough attempts at the capped backoff to cover maxWaitMs
    this.retries = Math.ceil((opts.maxWaitMs ?? DEFAULT_MAX_WAIT_MS) / RETRY_MAX_MS) + 1;
    this.logger = opts.logger;
  }

  /** `<stateDir>/locks/<safe name of iqn>.lock` (a directory: proper-lockfile's atomic mkdir). */
  lockPath(iqn: string): string {
    return join(this.stateDir, 'locks', `${safeFileKey(iqn)}.lock`);
  }

  /** Runs `fn` holding the target's lock in this process and on this node. Always releases. */
  async withLock<T>(iqn: string, fn: () => Promise<T> | T): Promise<T> {
    return this.mutex.withLock(iqn, async () => {
      const lockPath = this.lockPath(iqn);
      await fs.mkdir(join(this.stateDir, 'locks'), { recursive: true, mode: LOCK_DIR_MODE });
      let release: () => Promise<void>;
      try {
        release = await lockfile.lock(lockPath.slice(0, -'.lock'.length), {
          lockfilePath: lockPath,
          realpath: false,
          stale: this.staleMs,
          retries: { retries: this.retries, minTimeout: RETRY_MIN_MS, maxTimeout: RETRY_MAX_MS, factor: RETRY_FACTOR },
          // the default throws from a timer and would crash the driver; a compromised lock (its
          // directory removed or not refreshable) is reported and the operation carries on
          onCompromised: (err) => this.logger?.error({ iqn, lockPath, err: err.message }, 'target lock compromised'),
        });
      } catch (e) {
        if ((e as { code?: string }).code === 'ELOCKED') {
          throw new Aborted(`target ${iqn} is locked by another driver process (${lockPath}); retry later`);
        }
        throw e;
      }
      try {
        return await fn();
      } finally {
        await release().catch((err: Error) => this.logger?.warn({ iqn, lockPath, err: err.message }, 'releasing target lock failed'));
      }
    });
  }
}

export class OperationGuard {
  private readonly active = new Set<string>();

  /** Takes `key` or throws ABORTED if an operation on it is in progress. The release function is idempotent. */
  tryAcquire(key: string): () => void {
    if (this.active.has(key)) throw new Aborted(`an operation on volume ${key} is already in progress`);
    this.active.add(key);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active.delete(key);
    };
  }

  isActive(key: string): boolean {
    return this.active.has(key);
  }

  /** Runs `fn` holding `key` (non-waiting, see tryAcquire). Always releases. */
  async run<T>(key: string, fn: () => Promise<T> | T): Promise<T> {
    const release = this.tryAcquire(key);
    try {
      return await fn();
    } finally {
      release();
    }
  }
}
