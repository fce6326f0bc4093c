// The per-target lock, released on every path (finally): KeyedMutex plus a proper-lockfile lock per
// target IQN under <stateDir>/locks, so two driver processes on one node (a rolling upgrade) never
// interleave login/scan/logout of a target. The file lock is handed from one in-process holder to the
// next while callers queue (a storm of stages to one target takes and drops it once, not once per
// volume). A lock left by a crashed process is taken over at once when its owner record shows the owner
// is gone (same boot and PID namespace, no such process), else once it goes stale (its mtime stops
// being refreshed).
import { mkdirSync, promises as fs, rmdirSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { KeyedMutex } from '../common/keyed-mutex.js';
import { Aborted } from '../errors.js';
import type { Logger } from '../log.js';
import { safeFileKey } from '../common/validate.js';
import { lockOwnerGone, readLockOwner, removeLockOwner, writeLockOwner } from './lock-owner.js';

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
/**
 * In-process holders that may follow one another under one take of the file lock before it is
 * dropped and taken again. It bounds how long one take lasts; it does not make room for a driver
 * process on the other side of a rolling upgrade, which retries with backoff and may find the lock
 * taken again at once (as it would without hand-overs) until this process's queue empties.
 */
const MAX_HANDOVERS = 64;

/** A takeover needs the lock this much younger than the stale period. */
const TAKEOVER_STALE_MARGIN_MS = 2_000;
/** A takeover guard left by a process that crashed during a takeover is ignored and removed after this. */
const TAKEOVER_GUARD_STALE_MS = 10_000;

/**
 * proper-lockfile's file calls (mkdir, stat, utimes, rmdir of the lock directory; realpath is off), made synchronously
 * and answered on the next tick: they are metadata calls on the driver's local state directory that
 * answer in microseconds, where a thread-pool round trip each cost more CPU than the call (a stage
 * takes and drops the lock once). One object for the process: proper-lockfile keeps the directory's
 * mtime precision on it.
 */
const LOCAL_STATE_FS = {
  mkdir: answeredNextTick(mkdirSync),
  rmdir: answeredNextTick(rmdirSync),
  stat: answeredNextTick(statSync),
  utimes: answeredNextTick(utimesSync),
  // its exit handler removes held locks synchronously
  rmdirSync,
};

function answeredNextTick(syncCall: (...args: never[]) => unknown): (...args: unknown[]) => void {
  return (...args) => {
    const callback = args.pop() as (err: unknown, value?: unknown) => void;
    let value: unknown;
    try {
      value = (syncCall as (...a: unknown[]) => unknown)(...args);
    } catch (e) {
      process.nextTick(callback, e);
      return;
    }
    process.nextTick(callback, null, value);
  };
}

interface HeldFileLock {
  release: () => Promise<void>;
  handovers: number;
  /** proper-lockfile lost it (directory removed or not refreshable): never handed on */
  compromised: boolean;
}

export class TargetLock {
  private readonly mutex = new KeyedMutex();
  /** file locks held by this process, by IQN, while in-process callers hand the target to each other */
  private readonly fileLocks = new Map<string, HeldFileLock>();
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
      let held = this.fileLocks.get(iqn);
      if (held) held.handovers += 1;
      else {
        const fresh: HeldFileLock = { release: async () => undefined, handovers: 0, compromised: false };
        fresh.release = await this.takeFileLock(iqn, fresh);
        this.fileLocks.set(iqn, fresh);
        held = fresh;
      }
      try {
        return await fn();
      } finally {
        // still inside the mutex: a caller arriving now waits for it and then finds no file lock held
        const forced = held.handovers >= MAX_HANDOVERS;
        if (!this.mutex.hasWaiters(iqn) || forced || held.compromised) {
          this.fileLocks.delete(iqn);
          await held.release();
        }
      }
    });
  }

  /** Takes the target's lock file (waiting for another process); returns its release, which never throws. */
  private async takeFileLock(iqn: string, held: HeldFileLock): Promise<() => Promise<void>> {
    const lockPath = this.lockPath(iqn);
    // synchronous: one mkdir (EEXIST) and one stat of local directories, no thread-pool round trips
    mkdirSync(join(this.stateDir, 'locks'), { recursive: true, mode: LOCK_DIR_MODE });
    // no lock directory, no owner to take over from (one made meanwhile has a live owner)
    if (statSync(lockPath, { throwIfNoEntry: false })) await this.takeOverFromDeadOwner(iqn, lockPath);
    const options: lockfile.LockOptions = {
      lockfilePath: lockPath,
      realpath: false,
      stale: this.staleMs,
      fs: LOCAL_STATE_FS,
      // the default throws from a timer and would crash the driver; a compromised lock (its
      // directory removed or not refreshable) is reported and the operation carries on
      onCompromised: (err) => {
        held.compromised = true;
        this.logger?.error({ iqn, lockPath, err: err.message }, 'target lock compromised');
      },
    };
    const file = lockPath.slice(0, -'.lock'.length);
    let release: () => Promise<void>;
    try {
      // one attempt first: the retry schedule (a delay computed for each of its hundreds of attempts)
      // is built only when another process holds the lock
      release = await lockfile.lock(file, { ...options, retries: 0 }).catch((e: unknown) => {
        if ((e as { code?: string }).code !== 'ELOCKED') throw e;
        return lockfile.lock(file, { ...options, retries: { retries: this.retries, minTimeout: RETRY_MIN_MS, maxTimeout: RETRY_MAX_MS, factor: RETRY_FACTOR } });
      });
    } catch (e) {
      if ((e as { code?: string }).code === 'ELOCKED') {
        throw new Aborted(`target ${iqn} is locked by another driver process (${lockPath}); retry later`);
      }
      throw e;
    }
    await writeLockOwner(lockPath).catch((err: Error) => this.logger?.warn({ iqn, lockPath, err: err.message }, 'cannot record the target lock owner; a crash would leave the lock until it goes stale'));
    return async () => {
      await removeLockOwner(lockPath);
      await release().catch((err: Error) => this.logger?.warn({ iqn, lockPath, err: err.message }, 'releasing target lock failed'));
    };
  }

  /**
   * A lock whose recorded owner is certainly gone (same boot and PID namespace, and no process with
   * that pid and start time) is removed now rather than after the stale period: a driver restarted
   * after a crash attaches at once. Anything uncertain is left to proper-lockfile's staleness rule.
   * Two live processes may find the same dead owner: a guard directory lets one of them take over,
   * and it looks again inside the guard, so neither takeover removes a lock the other has taken
   * since. Past the stale period proper-lockfile's own rule applies (with its own check-then-remove
   * window, as before takeovers existed).
   */
  private async takeOverFromDeadOwner(iqn: string, lockPath: string): Promise<void> {
    const owner = readLockOwner(lockPath);
    if (!owner || !(await lockOwnerGone(lockPath, owner))) return;
    // near or past the stale period proper-lockfile removes it on its own terms: two removers of one
    // directory could each end up holding a lock, so the takeover keeps out of its way
    const age = await fs.stat(lockPath).then((st) => Date.now() - st.mtimeMs, () => Infinity);
    if (age > this.staleMs - TAKEOVER_STALE_MARGIN_MS) return;
    const guard = `${lockPath}.takeover`;
    if (!(await takeGuard(guard))) return; // another process is taking it over: wait as usual
    try {
      const again = readLockOwner(lockPath);
      if (!again || again.pid !== owner.pid || again.startTicks !== owner.startTicks || !(await lockOwnerGone(lockPath, again))) return;
      // the record first: once the directory is gone another process may take the lock and write its own
      await removeLockOwner(lockPath, owner);
      try {
        await fs.rmdir(lockPath);
      } catch {
        return;
      }
      this.logger?.warn({ iqn, lockPath, ownerPid: owner.pid }, 'took over a target lock left by a process that is gone');
    } finally {
      await fs.rmdir(guard).catch(() => undefined);
    }
  }
}

/** mkdir of the takeover guard; false when another process holds it (a stale one is cleared for next time). */
async function takeGuard(guard: string): Promise<boolean> {
  try {
    await fs.mkdir(guard, { mode: LOCK_DIR_MODE });
    return true;
  } catch (e) {
    if ((e as { code?: string }).code !== 'EEXIST') return false;
    const st = await fs.stat(guard).catch(() => null);
    if (st && Date.now() - st.mtimeMs > TAKEOVER_GUARD_STALE_MS) await fs.rmdir(guard).catch(() => undefined);
    return false;
  }
}
