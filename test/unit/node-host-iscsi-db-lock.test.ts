// open-iscsi's record lock left by a killed iscsiadm: when lock.write is removed (old, no live
// iscsiadm that can hold it) and when it stays (young, a possible holder alive, nothing readable),
// over a fake /proc and an injected clock; then the Iscsiadm adapter's two moments (before a call,
// after the runner killed one at its timeout) with real processes.
import { existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { buildConfig, type CommandName } from '../../src/config.js';
import { DeadlineExceeded } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { ProcessRunner, safeArgv, type Arg, type CommandRunner, type RunResult } from '../../src/runner.js';
import { IscsiDbLock, LOCK_WRITE_FILE, type IscsiDbLockOptions, type SweepMoment } from '../../src/node-host/iscsi-db-lock.js';
import { Iscsiadm } from '../../src/node-host/iscsiadm.js';
import { CLOCK_TICKS_PER_SECOND } from '../../src/common/proc.js';
import { parsePortal } from '../../src/common/validate.js';

const STALE_MS = 10_000;
const UPTIME_S = 5000;
const tmp = mkdtempSync('/tmp/iscsi-db-lock-test-');
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

class Capture extends Writable {
  lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    for (const l of chunk.toString().split('\n').filter(Boolean)) this.lines.push(JSON.parse(l) as Record<string, unknown>);
    cb();
  }
}

let n = 0;
interface Case { lockDir: string; procRoot: string; lockedMs: number }

/** A lock dir with `lock` (and lock.write linked to it, as iscsiadm takes it) and an empty fake /proc. */
function setup(locked = true): Case {
  const dir = join(tmp, `case-${n++}`);
  const lockDir = join(dir, 'lock/iscsi');
  const procRoot = join(dir, 'proc');
  mkdirSync(lockDir, { recursive: true });
  mkdirSync(procRoot);
  writeFileSync(join(procRoot, 'uptime'), `${UPTIME_S}.00 9000.00\n`);
  writeFileSync(join(lockDir, 'lock'), '');
  if (locked) linkSync(join(lockDir, 'lock'), join(lockDir, LOCK_WRITE_FILE));
  const lockedMs = locked ? Number(lstatSync(join(lockDir, LOCK_WRITE_FILE), { bigint: true }).ctimeNs / 1_000_000n) : Date.now();
  return { lockDir, procRoot, lockedMs };
}

/** /proc/PID/stat of a process named `comm` that started at wall time `startedMs`, the clock reading `nowMs`. */
function addProcess(c: Case, pid: number, comm: string, startedMs: number, nowMs: number): void {
  const bootMs = nowMs - UPTIME_S * 1000;
  const ticks = Math.round(((startedMs - bootMs) * CLOCK_TICKS_PER_SECOND) / 1000);
  // fields 3…21, then 22 (starttime) and a few more
  const fields = ['S', '1', String(pid), String(pid), '0', '-1', '4194560', ...Array(12).fill('0'), String(ticks), '1000', '100'];
  mkdirSync(join(c.procRoot, String(pid)));
  writeFileSync(join(c.procRoot, String(pid), 'stat'), `${pid} (${comm}) ${fields.join(' ')}\n`);
}

function lock(c: Case, ageMs: number, extra: Partial<IscsiDbLockOptions> = {}): IscsiDbLock {
  return new IscsiDbLock({ lockDir: c.lockDir, staleAfterMs: STALE_MS, procRoot: c.procRoot, now: () => c.lockedMs + ageMs, ...extra });
}

const present = (c: Case): boolean => existsSync(join(c.lockDir, LOCK_WRITE_FILE));

describe('config', () => {
  it('has the lock dir and the threshold as keys, the lock dir an absolute host path', () => {
    const cfg = buildConfig(undefined);
    expect(cfg.host.iscsiLockDir).toBe('/run/lock/iscsi');
    expect(cfg.timeouts.iscsiLockStaleMs).toBe(10_000);
    expect(cfg.timeouts.iscsiLockStaleMs).toBeLessThan(cfg.commands.iscsiadm.timeoutMs);
    const custom = buildConfig({ host: { iscsiLockDir: '/host/run/lock/iscsi' }, timeouts: { iscsiLockStaleMs: 5000 } });
    expect([custom.host.iscsiLockDir, custom.timeouts.iscsiLockStaleMs]).toEqual(['/host/run/lock/iscsi', 5000]);
    expect(() => buildConfig({ host: { iscsiLockDir: 'run/lock/iscsi' } })).toThrow('host.iscsiLockDir must be an absolute path');
    expect(() => buildConfig({ timeouts: { iscsiLockStaleMs: -1 } })).toThrow('timeouts.iscsiLockStaleMs must be a non-negative integer');
  });
});

describe('IscsiDbLock: the stale decision', () => {
  let capture: Capture;
  beforeEach(() => {
    capture = new Capture();
  });
  const logger = () => createLogger('debug', capture);

  it('does nothing when there is no lock.write (nor a lock dir at all)', async () => {
    const c = setup(false);
    expect(await lock(c, 0).clearIfStale(logger(), 'before iscsiadm')).toEqual({ state: 'absent' });
    const none = new IscsiDbLock({ lockDir: join(tmp, 'no-such-dir'), staleAfterMs: STALE_MS, procRoot: c.procRoot });
    expect(await none.clearIfStale(logger(), 'before iscsiadm')).toEqual({ state: 'absent' });
    expect(capture.lines).toEqual([]);
  });

  it('keeps a lock younger than the threshold, without looking at /proc', async () => {
    const c = setup();
    rmSync(c.procRoot, { recursive: true }); // would make an old lock "unknown"
    const l = lock(c, STALE_MS - 1);
    expect(await l.clearIfStale(logger(), 'before iscsiadm')).toMatchObject({ state: 'young' });
    expect(present(c)).toBe(true);
    expect(l.stats).toEqual({ removed: 0, keptForHolder: 0, unlinkFailed: 0 });
  });

  it('removes an old lock no live iscsiadm can hold, logs why and counts it', async () => {
    const c = setup();
    const now = c.lockedMs + STALE_MS + 5000;
    addProcess(c, 10, 'iscsid', c.lockedMs - 60_000, now); // not an iscsiadm
    addProcess(c, 11, 'bash', c.lockedMs - 1000, now);
    const l = lock(c, now - c.lockedMs);
    expect(await l.clearIfStale(logger(), 'before iscsiadm')).toEqual({ state: 'removed', ageMs: STALE_MS + 5000, waiting: [] });
    expect(present(c)).toBe(false);
    expect(existsSync(join(c.lockDir, 'lock'))).toBe(true); // the lock file itself stays, as open-iscsi leaves it
    expect(l.stats).toEqual({ removed: 1, keptForHolder: 0, unlinkFailed: 0 });
    const warn = capture.lines.find((l) => l.level === 'warn')!;
    expect(warn).toMatchObject({ path: join(c.lockDir, LOCK_WRITE_FILE), moment: 'before iscsiadm', lockAgeMs: STALE_MS + 5000, removedTotal: 1 });
    expect(String(warn.msg)).toMatch(/left by a killed iscsiadm.*taken 15000 ms ago and no live iscsiadm can hold it/);
  });

  it('keeps an old lock while an iscsiadm that started before it was taken is alive', async () => {
    const c = setup();
    const now = c.lockedMs + 60_000;
    addProcess(c, 20, 'iscsiadm', c.lockedMs - 200, now);
    const l = lock(c, now - c.lockedMs);
    expect(await l.clearIfStale(logger(), 'before iscsiadm')).toEqual({ state: 'held', ageMs: 60_000, holders: [20] });
    expect(present(c)).toBe(true);
    expect(l.stats.keptForHolder).toBe(1);
    expect(capture.lines.find((x) => x.level === 'info')).toMatchObject({ holders: [20], lockAgeMs: 60_000 });
  });

  it('counts an iscsiadm started just after the link as a possible holder (clock margin), one started later as a waiter', async () => {
    const c = setup();
    const now = c.lockedMs + 40_000;
    addProcess(c, 30, 'iscsiadm', c.lockedMs + 500, now);
    expect(await lock(c, now - c.lockedMs).clearIfStale(undefined, 'before iscsiadm')).toMatchObject({ state: 'held', holders: [30] });
    rmSync(join(c.procRoot, '30'), { recursive: true });
    addProcess(c, 31, 'iscsiadm', c.lockedMs + 5000, now);
    addProcess(c, 32, 'iscsiadm', c.lockedMs + 9000, now);
    expect(await lock(c, now - c.lockedMs).clearIfStale(undefined, 'after killing iscsiadm')).toEqual({ state: 'removed', ageMs: 40_000, waiting: [31, 32] });
    expect(present(c)).toBe(false);
  });

  it('keeps the lock when /proc cannot be read', async () => {
    const c = setup();
    rmSync(c.procRoot, { recursive: true });
    const r = await lock(c, STALE_MS * 3).clearIfStale(logger(), 'before iscsiadm');
    expect(r).toMatchObject({ state: 'unknown' });
    expect(present(c)).toBe(true);
    expect(capture.lines.some((x) => x.level === 'debug' && /it stays/.test(String(x.msg)))).toBe(true);
  });

  it('logs and counts an unlink that fails, and does not throw', async () => {
    const c = setup();
    const eperm = Object.assign(new Error('EPERM: operation not permitted'), { code: 'EPERM' });
    const l = lock(c, STALE_MS * 2, { unlink: async () => { throw eperm; } });
    expect(await l.clearIfStale(logger(), 'after killing iscsiadm')).toEqual({ state: 'unlink-failed', ageMs: STALE_MS * 2, error: 'EPERM' });
    expect(present(c)).toBe(true);
    expect(l.stats).toEqual({ removed: 0, keptForHolder: 0, unlinkFailed: 1 });
    expect(capture.lines.find((x) => x.level === 'warn')).toMatchObject({ error: 'EPERM', moment: 'after killing iscsiadm' });
    // gone meanwhile (someone else removed it): nothing to report
    const gone = lock(c, STALE_MS * 2, { unlink: async () => { throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' }); } });
    expect(await gone.clearIfStale(undefined, 'before iscsiadm')).toEqual({ state: 'absent' });
    expect(gone.stats.unlinkFailed).toBe(0);
  });

  it('does not remove a lock taken again between the decision and the unlink', async () => {
    const c = setup();
    const path = join(c.lockDir, LOCK_WRITE_FILE);
    let unlinked = 0;
    const l = lock(c, STALE_MS * 2, {
      // the clock is read once the verdict is made: release and re-take the lock right then
      now: (() => {
        let calls = 0;
        return () => {
          if (++calls === 2) {
            rmSync(path);
            // inode times tick with the kernel's coarse clock: let it move on
            for (const until = Date.now() + 25; Date.now() < until;);
            linkSync(join(c.lockDir, 'lock'), path);
          }
          return c.lockedMs + STALE_MS * 2;
        };
      })(),
      unlink: async () => { unlinked += 1; },
    });
    expect(await l.clearIfStale(undefined, 'before iscsiadm')).toMatchObject({ state: 'young' });
    expect(unlinked).toBe(0);
    expect(present(c)).toBe(true);
  });

  it('runs one check at a time: calls arriving together share one removal', async () => {
    const c = setup();
    const l = lock(c, STALE_MS * 2);
    const results = await Promise.all(Array.from({ length: 7 }, () => l.clearIfStale(undefined, 'before iscsiadm')));
    expect(results.filter((r) => r.state === 'removed')).toHaveLength(1);
    expect(results.every((r) => r.state === 'removed' || r.state === 'absent')).toBe(true);
    expect(l.stats.removed).toBe(1);
  });
});

/** Records the order of sweeps and commands; the command itself throws what it is given. */
class OrderRunner implements CommandRunner {
  readonly stats = { commands: 0, commandMs: 0, byName: {} };
  constructor(private readonly events: string[], private readonly fail?: Error) {}
  async run(name: CommandName, args: Arg[]): Promise<RunResult> {
    this.events.push(`run ${args.join(' ')}`);
    if (this.fail) throw this.fail;
    return { argv: safeArgv(args), exitCode: 0, stdout: '', stderr: '', durationMs: 1 };
  }
}

describe('Iscsiadm adapter and the record lock', () => {
  /** any iscsiadm call will do: a SendTargets discovery, whose empty output is an empty list */
  const ref = { portal: parsePortal('127.0.0.1:3260'), iface: 'default' };
  const DISCOVER = 'run -m discoverydb -t sendtargets -p 127.0.0.1:3260 -I default --discover';
  const sweeper = (events: string[]) => ({
    async clearIfStale(_logger: unknown, moment: SweepMoment) {
      events.push(moment);
      return { state: 'absent' } as const;
    },
  });

  it('checks the lock before every call, and again after a call killed at its timeout', async () => {
    const events: string[] = [];
    await new Iscsiadm(new OrderRunner(events), undefined, sweeper(events)).discover(ref);
    expect(events).toEqual(['before iscsiadm', DISCOVER]);
    events.length = 0;
    const killed = new DeadlineExceeded('iscsiadm did not finish within 30000 ms and was killed (iscsiadm -m discoverydb)');
    await expect(new Iscsiadm(new OrderRunner(events, killed), undefined, sweeper(events)).discover(ref)).rejects.toBe(killed);
    expect(events).toEqual(['before iscsiadm', DISCOVER, 'after killing iscsiadm']);
    events.length = 0;
    const other = new Error('spawn failed');
    await expect(new Iscsiadm(new OrderRunner(events, other), undefined, sweeper(events)).discover(ref)).rejects.toBe(other);
    expect(events).toEqual(['before iscsiadm', DISCOVER]);
  });

  // real processes: a fake iscsiadm (a shell under that name) and the real /proc
  const fakeIscsiadm = join(tmp, 'bin/iscsiadm');
  mkdirSync(join(tmp, 'bin'), { recursive: true });
  symlinkSync('/bin/sh', fakeIscsiadm);
  /** the adapter's calls run `sh -c script lockDir <iscsiadm args>` under the name iscsiadm */
  const runnerFor = (script: string, lockDir: string, timeoutMs: number) =>
    new ProcessRunner({ ...buildConfig(undefined).commands, iscsiadm: { argv: [fakeIscsiadm, '-c', script, lockDir], timeoutMs } }, [], createLogger('silent'));

  it('after killing an iscsiadm that died holding the lock, the lock is gone before the error is returned', async () => {
    const c = setup(false);
    const dbLock = new IscsiDbLock({ lockDir: c.lockDir, staleAfterMs: 100 });
    // takes the lock as iscsiadm does, then is stuck (its child sleeps, the shell waits for it)
    const iscsi = new Iscsiadm(runnerFor('ln "$0/lock" "$0/lock.write" && { sleep 30 & wait; }', c.lockDir, 400), undefined, dbLock);
    const started = Date.now();
    const err = await iscsi.discover(ref).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(3000);
    expect(present(c)).toBe(false);
    expect(dbLock.stats.removed).toBe(1);
  });

  it('before a call, a stale lock is removed so that the command finds none', async () => {
    const c = setup();
    await new Promise((r) => setTimeout(r, 150));
    const dbLock = new IscsiDbLock({ lockDir: c.lockDir, staleAfterMs: 100 });
    const iscsi = new Iscsiadm(runnerFor('test ! -e "$0/lock.write"', c.lockDir, 5000), undefined, dbLock);
    expect(await iscsi.discover(ref)).toEqual({ ok: true, value: [] });
    expect(dbLock.stats.removed).toBe(1);
  });
});
