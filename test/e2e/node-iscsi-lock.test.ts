// open-iscsi's DB lock left behind by a killed iscsiadm (R/run/lock/iscsi/lock.write): the simulated
// iscsiadm waits for it ~30 s like open-iscsi 2.1.8, so without the driver's clean-up every stage
// and unstage is killed at commands.iscsiadm.timeoutMs (30 s). With it, a stale lock is removed
// before the next iscsiadm and calls finish well inside that; a lock that a live iscsiadm may hold
// is never taken from it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log.js';
import { blockCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';

const MiB = 1024 * 1024;
/** the driver's threshold here: a lock this old with no possible holder is left over */
const STALE_MS = 1_000;
/** well inside commands.iscsiadm.timeoutMs (30 s), which a stale lock made every call hit */
const WITHIN_MS = 10_000;
const HOLD_OBSERVE_MS = 2_000;
/** a call stuck behind a stale lock fails as a gRPC deadline, inside the test's own timeout */
const CALL_DEADLINE_MS = 40_000;
const VOLUMES = 7;

class Capture extends Writable {
  lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    for (const l of chunk.toString().split('\n').filter(Boolean)) this.lines.push(JSON.parse(l) as Record<string, unknown>);
    cb();
  }
}

const capture = new Capture();
let sd: SimDriver;
let work: string;
let lockWrite: string;
let lockFile: string;
const tmp = mkdtempSync('/tmp/iscsi-lock-e2e-');

beforeAll(async () => {
  sd = await startSimDriver({ logger: createLogger('info', capture), configure: (cfg) => { cfg.timeouts.iscsiLockStaleMs = STALE_MS; } });
  work = join(sd.stateDir, 'kubelet');
  mkdirSync(work, { recursive: true });
  lockWrite = join(sd.cfg.host.iscsiLockDir, 'lock.write');
  lockFile = join(sd.cfg.host.iscsiLockDir, 'lock');
});
afterAll(async () => {
  await sd?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

const ctxFor = (iqn: string, lun: number) => ({ targetPortal: sd.host.portals[0]!, iqn, lun: String(lun) });
const staging = (id: string) => join(work, `${id}-staging`);
const stage = (id: string, iqn: string, lun: number) =>
  sd.client.call('Node', 'NodeStageVolume', { volume_id: id, staging_target_path: staging(id), volume_capability: blockCapability(), volume_context: ctxFor(iqn, lun) }, CALL_DEADLINE_MS);
const unstage = (id: string) => sd.client.call('Node', 'NodeUnstageVolume', { volume_id: id, staging_target_path: staging(id) }, CALL_DEADLINE_MS);
const removals = () => capture.lines.filter((l) => l.level === 'warn' && /removed open-iscsi's lock/.test(String(l.msg)));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** lock.write as an iscsiadm killed while writing records leaves it, aged past the threshold. */
async function leaveStaleLock(): Promise<void> {
  mkdirSync(sd.cfg.host.iscsiLockDir, { recursive: true });
  if (!existsSync(lockFile)) writeFileSync(lockFile, '');
  linkSync(lockFile, lockWrite);
  await sleep(STALE_MS + 200);
}

async function timed<T>(p: Promise<T>): Promise<{ value: T; ms: number }> {
  const started = Date.now();
  const value = await p;
  return { value, ms: Date.now() - started };
}

describe('a lock.write left by a killed iscsiadm', () => {
  const iqn = 'iqn.2026-11.dev.test:stale-lock';
  beforeAll(async () => {
    await sd.host.createTarget(iqn, Array.from({ length: VOLUMES }, (_, i) => ({ lun: i + 1, sizeBytes: 8 * MiB })));
  });

  it('is removed before the first iscsiadm of a stage, which then succeeds well inside the iscsiadm timeout', async () => {
    await leaveStaleLock();
    const before = removals().length;
    const { ms } = await timed(stage('stale-1', iqn, 1));
    expect(ms).toBeLessThan(WITHIN_MS);
    expect(existsSync(lockWrite)).toBe(false);
    expect(removals().length).toBe(before + 1);
    expect(removals().at(-1)).toMatchObject({ path: lockWrite, moment: 'before iscsiadm' });
    expect(Number(removals().at(-1)!.lockAgeMs)).toBeGreaterThanOrEqual(STALE_MS);
    await unstage('stale-1');
    expect(await sd.host.sessions()).toEqual([]);
  });

  it(`does not stop ${VOLUMES} concurrent unstages of one target (one logout, no call killed)`, async () => {
    for (let i = 1; i <= VOLUMES; i++) await stage(`many-${i}`, iqn, i);
    await leaveStaleLock();
    const { ms } = await timed(Promise.all(Array.from({ length: VOLUMES }, (_, i) => unstage(`many-${i + 1}`))));
    expect(ms).toBeLessThan(WITHIN_MS);
    expect(existsSync(lockWrite)).toBe(false);
    expect(await sd.host.sessions()).toEqual([]);
    expect(capture.lines.filter((l) => /did not finish within/.test(String(l.msg ?? '')) || l.msg === 'command timed out')).toEqual([]);
  });
});

describe('a lock.write a live iscsiadm may hold', () => {
  const iqn = 'iqn.2026-11.dev.test:held-lock';
  let holder: ChildProcess | undefined;
  beforeAll(async () => {
    await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 8 * MiB }]);
  });
  afterAll(() => {
    holder?.kill('SIGKILL');
  });

  it('is never taken from it, however old: the stage waits for the holder and goes on once it lets go', async () => {
    // a process named iscsiadm, started before it takes the lock (as the real one, stuck holding it)
    symlinkSync('/bin/sleep', join(tmp, 'iscsiadm'));
    holder = spawn(join(tmp, 'iscsiadm'), ['300'], { stdio: 'ignore' });
    await sleep(100);
    await leaveStaleLock();
    const taken = lstatSync(lockWrite, { bigint: true }).ctimeNs;
    const before = removals().length;

    let done = false;
    const staged = stage('held-1', iqn, 1).finally(() => { done = true; });
    await sleep(HOLD_OBSERVE_MS);
    expect(done).toBe(false);
    expect(lstatSync(lockWrite, { bigint: true }).ctimeNs).toBe(taken);
    expect(removals().length).toBe(before);
    expect(capture.lines.some((l) => /a live iscsiadm may hold it/.test(String(l.msg)) && (l.holders as number[]).includes(holder!.pid!))).toBe(true);

    // the holder finishes: it removes its lock and exits; the waiting iscsiadm goes on within a retry
    rmSync(lockWrite);
    holder.kill('SIGKILL');
    holder = undefined;
    const { ms } = await timed(staged);
    expect(ms).toBeLessThan(WITHIN_MS);
    expect(removals().length).toBe(before);
    await unstage('held-1');
    expect(await sd.host.sessions()).toEqual([]);
  });
});
