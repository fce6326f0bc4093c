import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { once } from 'node:events';
import { resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Aborted } from '../../src/errors.js';
import { KeyedMutex } from '../../src/common/keyed-mutex.js';
import { OperationGuard } from '../../src/common/operation-guard.js';
import { TargetLock } from '../../src/node-host/target-lock.js';

const IQN = 'iqn.2026-11.io.example:t1';
const COMPILED_LOCKS = resolve('dist/src/node-host/target-lock.js');

/** Another driver process that takes the target lock, says so on stdout, and holds it until killed. */
async function otherProcessHolding(stateDir: string): Promise<ReturnType<typeof spawn>> {
  const code = `const { TargetLock } = await import(${JSON.stringify(COMPILED_LOCKS)});
    await new TargetLock(${JSON.stringify(stateDir)}).withLock(${JSON.stringify(IQN)}, async () => {
      process.stdout.write('holding\\n');
      await new Promise(() => setInterval(() => undefined, 1000));
    });`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  await once(child.stdout!, 'data');
  return child;
}

/** Whether `key` is free: a new holder gets it before anything else runs (its grant is a microtask). */
async function isFree(mutex: KeyedMutex, key: string): Promise<boolean> {
  let got = false;
  const taken = mutex.withLock(key, () => {
    got = true;
  });
  await new Promise((r) => setImmediate(r));
  if (got) await taken;
  return got;
}

describe('KeyedMutex', () => {
  it('serialises callers of one key in arrival order, without overlap', async () => {
    const mutex = new KeyedMutex();
    const events: string[] = [];
    let inside = 0;
    const task = (name: string, ms: number) =>
      mutex.withLock('k', async () => {
        inside += 1;
        expect(inside).toBe(1);
        events.push(`start ${name}`);
        await sleep(ms);
        events.push(`end ${name}`);
        inside -= 1;
        return name;
      });
    expect(await Promise.all([task('a', 20), task('b', 1), task('c', 5)])).toEqual(['a', 'b', 'c']);
    expect(events).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
    expect(await isFree(mutex, 'k')).toBe(true);
  });

  it('lets different keys run at the same time', async () => {
    const mutex = new KeyedMutex();
    let concurrent = 0;
    let peak = 0;
    const task = (key: string) =>
      mutex.withLock(key, async () => {
        peak = Math.max(peak, ++concurrent);
        await sleep(10);
        concurrent -= 1;
      });
    await Promise.all([task('a'), task('b'), task('c')]);
    expect(peak).toBe(3);
  });

  it('releases when the function throws, and the next waiter runs', async () => {
    const mutex = new KeyedMutex();
    const failing = mutex.withLock('k', async () => {
      await sleep(5);
      throw new Error('boom');
    });
    const next = mutex.withLock('k', () => 'ran');
    await expect(failing).rejects.toThrow('boom');
    expect(await next).toBe('ran');
    expect(await isFree(mutex, 'k')).toBe(true);
    await expect(mutex.withLock('k', () => { throw new Error('sync boom'); })).rejects.toThrow('sync boom');
    expect(await isFree(mutex, 'k')).toBe(true);
  });
});

describe('OperationGuard', () => {
  it('refuses a second operation on the same volume with ABORTED, and allows it after release', () => {
    const guard = new OperationGuard();
    const release = guard.tryAcquire('vol-1');
    expect(() => guard.tryAcquire('vol-1')).toThrow(Aborted);
    expect(() => guard.tryAcquire('vol-1')).toThrow('an operation on volume vol-1 is already in progress');
    expect(guard.tryAcquire('vol-2')).toBeTypeOf('function');
    release();
    release(); // idempotent: must not free an acquisition made after it
    const again = guard.tryAcquire('vol-1');
    release();
    expect(() => guard.tryAcquire('vol-1')).toThrow(Aborted); // still held by `again`
    again();
    expect(guard.tryAcquire('vol-1')).toBeTypeOf('function');
  });
});

describe('TargetLock', () => {
  let stateDir: string;
  beforeEach(async () => {
    stateDir = await fsp.mkdtemp(join(tmpdir(), 'host-locks-'));
  });
  afterEach(async () => {
    await fsp.rm(stateDir, { recursive: true, force: true });
  });

  it('keeps its lock file under <stateDir>/locks with a safe name', () => {
    const lock = new TargetLock(stateDir);
    expect(lock.lockPath(IQN)).toMatch(new RegExp(`^${stateDir}/locks/iqn\\.2026-11\\.io\\.example_t1-[0-9a-f]{32}\\.lock$`));
    expect(lock.lockPath('../../etc')).toMatch(new RegExp(`^${stateDir}/locks/[^/]+\\.lock$`));
  });

  it('makes a second acquirer (another process\'s lock instance) wait until the first releases', async () => {
    const a = new TargetLock(stateDir);
    const b = new TargetLock(stateDir); // its own in-process mutex: only the file lock stands between them
    const events: string[] = [];
    let aHolding!: () => void;
    const aHeld = new Promise<void>((resolve) => (aHolding = resolve));
    const first = a.withLock(IQN, async () => {
      events.push('a in');
      aHolding();
      await sleep(150);
      events.push('a out');
    });
    await aHeld;
    expect((await fsp.stat(a.lockPath(IQN))).isDirectory()).toBe(true);
    const second = b.withLock(IQN, async () => {
      events.push('b in');
    });
    await Promise.all([first, second]);
    expect(events).toEqual(['a in', 'a out', 'b in']);
    await expect(fsp.stat(a.lockPath(IQN))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('gives up with ABORTED after maxWaitMs while another process holds the lock', async () => {
    const holder = new TargetLock(stateDir);
    const impatient = new TargetLock(stateDir, { maxWaitMs: 200 });
    let release!: () => void;
    const holding = holder.withLock(IQN, () => new Promise<void>((resolve) => (release = resolve)));
    await sleep(20);
    const started = Date.now();
    await expect(impatient.withLock(IQN, () => 'never')).rejects.toThrow(Aborted);
    expect(Date.now() - started).toBeLessThan(2000);
    release();
    await holding;
  });

  it('takes over a stale lock left by a crashed process', async () => {
    const lock = new TargetLock(stateDir, { staleMs: 5000, maxWaitMs: 1000 });
    const path = lock.lockPath(IQN);
    await fsp.mkdir(path, { recursive: true }); // a crashed holder's lock, not refreshed for a minute
    const old = new Date(Date.now() - 60_000);
    await fsp.utimes(path, old, old);
    expect(await lock.withLock(IQN, () => 'recovered')).toBe('recovered');
  });

  it('takes over at once a lock whose owner process is gone, never one whose owner is alive', async () => {
    const holder = await otherProcessHolding(stateDir);
    const lock = new TargetLock(stateDir, { staleMs: 60_000, maxWaitMs: 300 });
    // alive: its lock is fresh and its owner runs, so the caller waits and gives up
    await expect(lock.withLock(IQN, () => 'stolen')).rejects.toThrow(Aborted);
    holder.kill('SIGKILL'); // a crash: no release, the lock directory and owner record stay
    await once(holder, 'exit');
    expect((await fsp.stat(lock.lockPath(IQN))).isDirectory()).toBe(true);
    // long before the 60 s stale period
    expect(await lock.withLock(IQN, () => 'recovered')).toBe('recovered');
    await expect(fsp.stat(lock.lockPath(IQN))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(fsp.stat(`${lock.lockPath(IQN)}.owner`)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('does not trust an owner record that describes an older lock directory', async () => {
    const holder = await otherProcessHolding(stateDir);
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const lock = new TargetLock(stateDir, { staleMs: 60_000, maxWaitMs: 300 });
    // the dead owner's directory is replaced by a fresh one whose owner has not written its record yet
    await fsp.rmdir(lock.lockPath(IQN));
    await fsp.mkdir(lock.lockPath(IQN));
    await expect(lock.withLock(IQN, () => 'stolen')).rejects.toThrow(Aborted);
  });

  it('leaves a dead owner\'s lock alone while another process holds the takeover guard', async () => {
    const holder = await otherProcessHolding(stateDir);
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const lock = new TargetLock(stateDir, { staleMs: 60_000, maxWaitMs: 300 });
    // a second live process is in the middle of taking it over
    await fsp.mkdir(`${lock.lockPath(IQN)}.takeover`);
    await expect(lock.withLock(IQN, () => 'both')).rejects.toThrow(Aborted);
    await fsp.rmdir(`${lock.lockPath(IQN)}.takeover`);
    expect(await lock.withLock(IQN, () => 'taken over')).toBe('taken over');
    expect(await fsp.readdir(join(stateDir, 'locks'))).toEqual([]);
  });

  it('on release removes only its own owner record, not one another process wrote since', async () => {
    const lock = new TargetLock(stateDir);
    const path = lock.lockPath(IQN);
    await lock.withLock(IQN, async () => {
      // our lock was lost and another process took it and recorded itself
      const theirs = JSON.parse(await fsp.readFile(`${path}.owner`, 'utf8')) as Record<string, unknown>;
      await fsp.writeFile(`${path}.owner`, JSON.stringify({ ...theirs, pid: 1, startTicks: '1' }));
    });
    expect(JSON.parse(await fsp.readFile(`${path}.owner`, 'utf8'))).toMatchObject({ pid: 1 });
  });

  it('hands the lock file from one in-process caller to the next while they queue', async () => {
    const lock = new TargetLock(stateDir);
    const births = new Set<bigint>();
    await Promise.all([1, 2, 3, 4].map(() => lock.withLock(IQN, async () => {
      births.add((await fsp.stat(lock.lockPath(IQN), { bigint: true })).birthtimeNs);
      await sleep(2);
    })));
    expect(births.size).toBe(1); // taken once for the four
    await expect(fsp.stat(lock.lockPath(IQN))).rejects.toMatchObject({ code: 'ENOENT' });
    // and taken anew by a later caller
    await lock.withLock(IQN, async () => {
      births.add((await fsp.stat(lock.lockPath(IQN), { bigint: true })).birthtimeNs);
    });
    expect(births.size).toBe(2);
  });

  it('releases the file lock when the function throws', async () => {
    const lock = new TargetLock(stateDir);
    await expect(lock.withLock(IQN, async () => { throw new Error('login failed'); })).rejects.toThrow('login failed');
    await expect(fsp.stat(lock.lockPath(IQN))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await new TargetLock(stateDir, { maxWaitMs: 100 }).withLock(IQN, () => 'free')).toBe('free');
  });

  it('serialises in-process callers without touching each other\'s file lock', async () => {
    const lock = new TargetLock(stateDir);
    const order: number[] = [];
    await Promise.all([1, 2, 3].map((n) => lock.withLock(IQN, async () => {
      order.push(n);
      await sleep(5);
    })));
    expect(order).toEqual([1, 2, 3]);
  });
});
