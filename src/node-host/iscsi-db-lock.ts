// open-iscsi's lock on its record database, and clearing it when a killed iscsiadm left it behind.
//
// iscsiadm takes the lock around every record it reads or writes (usr/idbm.c idbm_lock): it makes
// <lock dir>/lock.write a hard link to <lock dir>/lock; a process that finds lock.write there tries
// again every 10 ms, 3000 times, then goes on without the lock, and its unlock removes lock.write.
// A process killed while holding it leaves lock.write behind, and every later iscsiadm waits those
// ~30 s. Killed at the driver's own iscsiadm timeout (30 s by default) just before, no call ever
// gets there, so the lock never clears and every stage and unstage of the node times out.
//
// So before each iscsiadm call, and right after the driver killed one at its timeout, lock.write is
// removed when it is certainly left over:
//   - the link that took it set its inode's ctime (lock is never removed, only linked and unlinked;
//     a failed link changes nothing), and that is older than timeouts.iscsiLockStaleMs;
//   - no live process named iscsiadm can hold it: one that started after the link (with a margin
//     for the clocks) cannot have made it, it is one of those waiting for it. Any other visible
//     iscsiadm, or a /proc that cannot be read, keeps the lock.
// The node plugin runs with hostPID, so /proc shows the host's processes (another tool's iscsiadm
// too). Every step is bounded; a failure is logged, never thrown: iscsiadm then waits as before.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { errnoCode } from '../errors.js';
import type { Logger } from '../log.js';
import { CLOCK_TICKS_PER_SECOND, listPids, PROC_ROOT, readProcStat, uptimeMs } from '../common/proc.js';

/** usr/idbm.h: LOCK_WRITE_FILE = LOCK_DIR "/lock.write" (the hard link that is the lock) */
export const LOCK_WRITE_FILE = 'lock.write';
/** the command name of a possible holder (/proc/PID/comm) */
const HOLDER_COMM = 'iscsiadm';
/**
 * A process started up to this long after the lock's ctime still counts as a possible holder: the
 * start time is known to a clock tick after boot, the boot time on the wall clock only through
 * /proc/uptime (10 ms), and the wall clock may have been stepped in between.
 */
const HOLDER_START_MARGIN_MS = 1000;
/** One sweep (two stats, a /proc scan, an unlink) may take this long before the call goes on without it. */
export const SWEEP_TIMEOUT_MS = 2000;
const NS_PER_MS = 1_000_000n;

export type SweepMoment = 'before iscsiadm' | 'after killing iscsiadm';

/** What the sweep found. */
export type LockVerdict =
  | { state: 'absent' }
  /** lock.write is younger than the threshold: a holder may well be at work */
  | { state: 'young'; ageMs: number }
  /** a live iscsiadm started before the lock was taken (it may hold it) */
  | { state: 'held'; ageMs: number; holders: number[] }
  /** could not tell (lock or /proc unreadable, the sweep timed out): the lock stays */
  | { state: 'unknown'; reason: string }
  /** old and no possible holder alive; `waiting`: live iscsiadm processes started after the link */
  | { state: 'stale'; ageMs: number; waiting: number[]; ctimeNs: bigint };

export type SweepResult = LockVerdict | { state: 'removed'; ageMs: number; waiting: number[] } | { state: 'unlink-failed'; ageMs: number; error: string };

export interface IscsiDbLockOptions {
  /** the lock dir as this process sees it (host.iscsiLockDir) */
  lockDir: string;
  /** timeouts.iscsiLockStaleMs */
  staleAfterMs: number;
  /** where the processes that could hold the lock are listed; default /proc */
  procRoot?: string;
  /** wall clock in ms (tests) */
  now?: () => number;
  /** removes a file (tests inject a failure) */
  unlink?: (path: string) => Promise<void>;
}

/** The narrow interface iscsiadm's adapter uses. */
export interface StaleLockSweeper {
  /** Removes a left-over lock.write; never throws, returns within SWEEP_TIMEOUT_MS. */
  clearIfStale(logger: Logger | undefined, moment: SweepMoment): Promise<SweepResult>;
}

export interface IscsiDbLockStats {
  /** stale lock.write files removed */
  removed: number;
  /** old lock.write files kept because a live iscsiadm may hold them */
  keptForHolder: number;
  /** stale lock.write files that could not be removed */
  unlinkFailed: number;
}

export class IscsiDbLock implements StaleLockSweeper {
  readonly stats: IscsiDbLockStats = { removed: 0, keptForHolder: 0, unlinkFailed: 0 };
  readonly path: string;
  private readonly procRoot: string;
  private readonly now: () => number;
  private readonly unlink: (path: string) => Promise<void>;
  /** one sweep at a time; calls that come while one runs share the next one (its view starts after them) */
  private running: Promise<SweepResult> | undefined;
  private next: Promise<SweepResult> | undefined;

  constructor(private readonly opts: IscsiDbLockOptions) {
    this.path = join(opts.lockDir, LOCK_WRITE_FILE);
    this.procRoot = opts.procRoot ?? PROC_ROOT;
    this.now = opts.now ?? Date.now;
    this.unlink = opts.unlink ?? ((p) => fs.unlink(p));
  }

  async clearIfStale(logger: Logger | undefined, moment: SweepMoment): Promise<SweepResult> {
    const sweep = this.schedule(logger, moment);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<SweepResult>((resolve) => {
      timer = setTimeout(() => resolve({ state: 'unknown', reason: `the check took longer than ${SWEEP_TIMEOUT_MS} ms` }), SWEEP_TIMEOUT_MS);
    });
    try {
      const result = await Promise.race([sweep, late]);
      if (result.state === 'unknown') logger?.debug({ path: this.path, moment, reason: result.reason }, 'could not tell whether open-iscsi\'s lock is left over; it stays');
      return result;
    } finally {
      clearTimeout(timer);
    }
  }

  private schedule(logger: Logger | undefined, moment: SweepMoment): Promise<SweepResult> {
    if (!this.running) {
      const run = this.sweep(logger, moment).finally(() => {
        if (this.running === run) this.running = undefined;
      });
      this.running = run;
      return run;
    }
    this.next ??= this.running.then(() => {
      this.next = undefined;
      return this.schedule(logger, moment);
    });
    return this.next;
  }

  /** Whether lock.write is there, how old it is and who could hold it; reads only. */
  async inspect(): Promise<LockVerdict> {
    const lock = await this.lockCtime();
    if (lock.state !== 'present') return lock;
    const ageMs = this.ageMs(lock.ctimeNs);
    if (ageMs < this.opts.staleAfterMs) return { state: 'young', ageMs };
    let iscsiadm: { pid: number; startedMs: number }[];
    try {
      iscsiadm = await this.liveIscsiadm();
    } catch (e) {
      return { state: 'unknown', reason: `cannot list processes in ${this.procRoot}: ${(e as Error).message}` };
    }
    const lockedMs = Number(lock.ctimeNs / NS_PER_MS);
    const holders = iscsiadm.filter((p) => p.startedMs <= lockedMs + HOLDER_START_MARGIN_MS).map((p) => p.pid);
    if (holders.length > 0) return { state: 'held', ageMs, holders };
    return { state: 'stale', ageMs, waiting: iscsiadm.map((p) => p.pid), ctimeNs: lock.ctimeNs };
  }

  private async sweep(logger: Logger | undefined, moment: SweepMoment): Promise<SweepResult> {
    let verdict: LockVerdict;
    try {
      verdict = await this.inspect();
    } catch (e) {
      return { state: 'unknown', reason: (e as Error).message };
    }
    if (verdict.state === 'held') {
      this.stats.keptForHolder += 1;
      logger?.info({ path: this.path, moment, lockAgeMs: Math.round(verdict.ageMs), holders: verdict.holders }, 'open-iscsi\'s lock is old but a live iscsiadm may hold it; it stays');
    }
    if (verdict.state !== 'stale') return verdict;
    // still the lock that was judged, not one released and taken again meanwhile (to the kernel's
    // inode-time granularity, a jiffy: what is left is a window of microseconds before the unlink)
    const now = await this.lockCtime();
    if (now.state !== 'present') return now;
    if (now.ctimeNs !== verdict.ctimeNs) return { state: 'young', ageMs: this.ageMs(now.ctimeNs) };
    const ageMs = Math.round(verdict.ageMs);
    try {
      await this.unlink(this.path);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return { state: 'absent' };
      this.stats.unlinkFailed += 1;
      const error = errnoCode(e) ?? (e as Error).message;
      logger?.warn({ path: this.path, moment, lockAgeMs: ageMs, error }, 'cannot remove open-iscsi\'s left-over lock; iscsiadm will wait for it');
      return { state: 'unlink-failed', ageMs, error };
    }
    this.stats.removed += 1;
    logger?.warn(
      { path: this.path, moment, lockAgeMs: ageMs, waitingIscsiadm: verdict.waiting, removedTotal: this.stats.removed },
      `removed open-iscsi's lock left by a killed iscsiadm: ${this.path} was taken ${ageMs} ms ago and no live iscsiadm can hold it`,
    );
    return { state: 'removed', ageMs, waiting: verdict.waiting };
  }

  private ageMs(ctimeNs: bigint): number {
    return this.now() - Number(ctimeNs / NS_PER_MS);
  }

  /** lock.write's ctime in ns, absent, or unknown when it cannot be read. */
  private async lockCtime(): Promise<{ state: 'present'; ctimeNs: bigint } | { state: 'absent' } | { state: 'unknown'; reason: string }> {
    try {
      return { state: 'present', ctimeNs: (await fs.lstat(this.path, { bigint: true })).ctimeNs };
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return { state: 'absent' };
      return { state: 'unknown', reason: `cannot stat ${this.path}: ${errnoCode(e) ?? (e as Error).message}` };
    }
  }

  /** Live processes named iscsiadm with their start on the wall clock; throws when /proc cannot tell. */
  private async liveIscsiadm(): Promise<{ pid: number; startedMs: number }[]> {
    const [pids, sinceBootMs] = await Promise.all([listPids(this.procRoot), uptimeMs(this.procRoot)]);
    const bootMs = this.now() - sinceBootMs;
    const stats = await Promise.all(pids.map((pid) => readProcStat(pid, this.procRoot)));
    return stats
      .filter((s) => s !== null && s.comm === HOLDER_COMM)
      .map((s) => ({ pid: s!.pid, startedMs: bootMs + (Number(s!.startTicks) * 1000) / CLOCK_TICKS_PER_SECOND }));
  }
}
