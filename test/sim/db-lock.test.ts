// The fake iscsiadm holds open-iscsi's DB lock like 2.1.8 (usr/idbm.c idbm_lock / idbm_unlock):
// R/run/lock/iscsi/lock.write linked to lock in the record modes, released on exit; one killed while
// holding it leaves it behind; the next waits for it 10 ms at a time, and after 3000 tries (~30 s)
// goes on and removes it. Both clients (native and Node), named iscsiadm in /proc like the real tool.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, linkSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { distDir, SimulatedHost } from './host.js';

const NODE_CLIENT = join(distDir(), 'test/sim/sim-cli.js');
/** idbm_lock's 3000 tries 10 ms apart, plus the sleeps' overshoot on a loaded machine */
const TAKEOVER_MIN_MS = 29_500;
const TAKEOVER_MAX_MS = 45_000;
const WAIT_OBSERVE_MS = 400;
/** an uncontended call: a link and an unlink more than before */
const FAST_CALL_MS = 1_000;

let host: SimulatedHost;
let lockWrite: string;
let lockFile: string;

beforeAll(async () => {
  host = await SimulatedHost.create();
  lockWrite = join(host.paths.lockDir, 'lock.write');
  lockFile = join(host.paths.lockDir, 'lock');
});
afterAll(async () => {
  await host?.destroy();
});

interface Call { child: ChildProcess; done: Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number; stderr: string }> }

function call(argv: string[], client: 'native' | 'node' = 'native'): Call {
  const [file, args] = client === 'native'
    ? [host.bin('iscsiadm'), argv]
    : [process.execPath, [NODE_CLIENT, '--sim-root', host.root, '--tool', 'iscsiadm', ...argv]];
  const started = Date.now();
  const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number; stderr: string }>((res) => {
    child.on('exit', (code, signal) => res({ code, signal, ms: Date.now() - started, stderr }));
  });
  return { child, done };
}

/** lock.write as a killed iscsiadm leaves it: a link to lock. */
function leaveStaleLock(): void {
  mkdirSync(host.paths.lockDir, { recursive: true });
  if (!existsSync(lockFile)) writeFileSync(lockFile, '');
  linkSync(lockFile, lockWrite);
}

const settled = (p: Promise<unknown>) => Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), 0))]);

describe('open-iscsi DB lock of the fake iscsiadm', () => {
  it('an uncontended call makes the lock dir and file, is fast, and leaves no lock.write', async () => {
    for (const client of ['native', 'node'] as const) {
      const r = await call(['-m', 'node'], client).done;
      expect(r.code, client).toBe(21); // no records yet
      expect(r.ms).toBeLessThan(client === 'native' ? FAST_CALL_MS : FAST_CALL_MS * 5);
      expect(existsSync(lockFile)).toBe(true);
      expect(existsSync(lockWrite)).toBe(false);
    }
  });

  it('a call waits while lock.write exists and goes on within a retry once it is released; session listings do not wait', async () => {
    for (const client of ['native', 'node'] as const) {
      leaveStaleLock();
      const waiting = call(['-m', 'discoverydb', '-t', 'sendtargets', '-p', '127.0.0.1:3260', '-o', 'show'], client);
      const session = await call(['-m', 'session'], client).done;
      expect(session.code, 'session mode takes no DB lock').toBe(21);
      expect(session.ms).toBeLessThan(client === 'native' ? FAST_CALL_MS : FAST_CALL_MS * 5);
      await new Promise((r) => setTimeout(r, WAIT_OBSERVE_MS));
      expect(await settled(waiting.done), `${client} waits for the lock`).toBe(false);
      // named like the real tool, so a process list tells holders apart
      expect(readFileSync(`/proc/${waiting.child.pid}/comm`, 'utf8').trim()).toBe('iscsiadm');
      const released = Date.now();
      rmSync(lockWrite);
      const r = await waiting.done;
      expect(r.code).not.toBeNull();
      expect(Date.now() - released).toBeLessThan(FAST_CALL_MS);
      expect(existsSync(lockWrite)).toBe(false);
    }
  });

  it('killed while holding the lock (the kernel still busy with its records), it leaves lock.write behind', async () => {
    const kernel = host.kernelPid;
    process.kill(kernel, 'SIGSTOP');
    let holder: Call;
    try {
      holder = call(['-m', 'node', '-o', 'show']);
      const deadline = Date.now() + 5000;
      while (!existsSync(lockWrite) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      expect(existsSync(lockWrite)).toBe(true);
      holder.child.kill('SIGKILL');
      expect((await holder.done).signal).toBe('SIGKILL');
    } finally {
      process.kill(kernel, 'SIGCONT');
    }
    expect(existsSync(lockWrite)).toBe(true);
    expect(lstatSync(lockWrite).ino).toBe(lstatSync(lockFile).ino);
    rmSync(lockWrite);
  });

  it('a stale lock.write costs the next call ~30 s (3000 tries), then it goes on and removes it', { timeout: 60_000 }, async () => {
    leaveStaleLock();
    const r = await call(['-m', 'node']).done;
    expect(r.code).toBe(21);
    expect(r.ms).toBeGreaterThanOrEqual(TAKEOVER_MIN_MS);
    expect(r.ms).toBeLessThan(TAKEOVER_MAX_MS);
    expect(existsSync(lockWrite)).toBe(false);
  });
});
