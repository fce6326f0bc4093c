import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Devices, waitUntil } from '../../src/host/devices.js';
import { Sysfs } from '../../src/host/sysfs.js';
import { parsePortal } from '../../src/host/validate.js';

const IQN = 'iqn.2026-11.io.example:t1';
/** No poll within a test's lifetime: a wait that completes did so through the directory watch. */
const NO_POLL = { pollMs: 60_000 };
const REACTION_BUDGET_MS = 25;

let root: string;
let devRoot: string;
let sysRoot: string;
let devices: Devices;

function openWatchers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'FSEventWrap').length;
}

/** Open fs.watch handles once closing ones are gone (libuv releases a closed handle a few loop turns later). */
async function fsWatchers(expected?: number): Promise<number> {
  for (let i = 0; i < 40 && expected !== undefined && openWatchers() !== expected; i++) await sleep(5);
  return openWatchers();
}

beforeEach(async () => {
  root = await fs.mkdtemp(join(tmpdir(), 'host-devices-'));
  devRoot = join(root, 'dev');
  sysRoot = join(root, 'sys');
  await fs.mkdir(devRoot);
  await fs.mkdir(sysRoot);
  devices = new Devices(devRoot, new Sysfs(sysRoot));
});

afterEach(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('by-path names', () => {
  it('follows udev path_id: raw address, IPv6 without brackets', () => {
    expect(devices.byPathLink(parsePortal('10.240.65.24:3260'), 'iqn.2015-10.com.dell:dellemc-cyclone-49506fa0476e4db49c1832e5234e8e9a', 8))
      .toBe(join(devRoot, 'disk/by-path/ip-10.240.65.24:3260-iscsi-iqn.2015-10.com.dell:dellemc-cyclone-49506fa0476e4db49c1832e5234e8e9a-lun-8'));
    expect(devices.byPathName(parsePortal('[fd00::10]:3260'), IQN, 0)).toBe('ip-fd00::10:3260-iscsi-iqn.2026-11.io.example:t1-lun-0');
    expect(devices.byPathName(parsePortal('spitfire.storage.235.tdude.co'), IQN, 0)).toBe('ip-spitfire.storage.235.tdude.co:3260-iscsi-iqn.2026-11.io.example:t1-lun-0');
    expect(devices.devicePath('dm-3')).toBe(join(devRoot, 'dm-3'));
    expect(devices.mapperPath('mpatha')).toBe(join(devRoot, 'mapper/mpatha'));
  });
});

describe('waitForDevice', () => {
  it('returns at once for a link that already resolves', async () => {
    await fs.mkdir(join(devRoot, 'disk/by-path'), { recursive: true });
    await fs.writeFile(join(devRoot, 'sdb'), '');
    const link = devices.byPathLink(parsePortal('127.0.0.1'), IQN, 1);
    await fs.symlink('../../sdb', link);
    const r = await devices.waitForDevice(link, { deadlineMs: 1000, ...NO_POLL });
    expect(r).toMatchObject({ ok: true, device: join(devRoot, 'sdb'), link });
  });

  it('reacts to a link created after the call, within a few milliseconds, without polling', async () => {
    await fs.mkdir(join(devRoot, 'disk/by-path'), { recursive: true });
    await fs.writeFile(join(devRoot, 'sdc'), '');
    const link = devices.byPathLink(parsePortal('127.0.0.1'), IQN, 2);
    const before = await fsWatchers();
    const waiting = devices.waitForDevice(link, { deadlineMs: 5000, ...NO_POLL });
    await sleep(50);
    const created = performance.now();
    await fs.symlink('../../sdc', link);
    const r = await waiting;
    const latency = performance.now() - created;
    console.log(`waitForDevice reaction latency: ${latency.toFixed(2)} ms`);
    expect(r).toMatchObject({ ok: true, device: join(devRoot, 'sdc') });
    expect(latency).toBeLessThan(REACTION_BUDGET_MS);
    expect(await fsWatchers(before)).toBe(before);
  });

  it('also works when disk/by-path does not exist yet (watching from the nearest ancestor)', async () => {
    await fs.writeFile(join(devRoot, 'sdd'), '');
    const link = devices.byPathLink(parsePortal('[fd00::10]:3260'), IQN, 3);
    const waiting = devices.waitForDevice(link, { deadlineMs: 5000, ...NO_POLL });
    await sleep(20);
    await fs.mkdir(join(devRoot, 'disk'));
    await sleep(20);
    await fs.mkdir(join(devRoot, 'disk/by-path'));
    await sleep(20);
    const created = performance.now();
    await fs.symlink('../../sdd', link);
    const r = await waiting;
    expect(r).toMatchObject({ ok: true, device: join(devRoot, 'sdd') });
    expect(performance.now() - created).toBeLessThan(REACTION_BUDGET_MS);
  });

  it('waits for a dangling link until its device node appears', async () => {
    await fs.mkdir(join(devRoot, 'disk/by-path'), { recursive: true });
    const link = devices.byPathLink(parsePortal('127.0.0.1'), IQN, 4);
    await fs.symlink('../../sde', link);
    const waiting = devices.waitForDevice(link, { deadlineMs: 5000, ...NO_POLL });
    await sleep(30);
    await fs.writeFile(join(devRoot, 'sde'), '');
    expect(await waiting).toMatchObject({ ok: true, device: join(devRoot, 'sde') });
  });

  it('a link made before its node, after the wait began, completes when the node appears (no poll)', async () => {
    await fs.mkdir(join(devRoot, 'disk/by-path'), { recursive: true });
    const link = devices.byPathLink(parsePortal('127.0.0.1'), IQN, 5);
    const waiting = devices.waitForDevice(link, { deadlineMs: 5000, ...NO_POLL });
    await sleep(20);
    await fs.writeFile(join(devRoot, 'sdy'), ''); // another device's node: not this wait's business
    await fs.symlink('../../sdf', link);
    await sleep(20);
    const created = performance.now();
    await fs.writeFile(join(devRoot, 'sdf'), '');
    expect(await waiting).toMatchObject({ ok: true, device: join(devRoot, 'sdf') });
    expect(performance.now() - created).toBeLessThan(REACTION_BUDGET_MS);
  });

  it('times out with a typed result and releases its watchers and timers', async () => {
    await fs.mkdir(join(devRoot, 'disk/by-path'), { recursive: true });
    const before = await fsWatchers();
    const r = await devices.waitForDevice(devices.byPathLink(parsePortal('127.0.0.1'), IQN, 5), { deadlineMs: 80, pollMs: 10 });
    expect(r.ok).toBe(false);
    expect(r).toMatchObject({ ok: false, reason: 'timeout' });
    expect(r.waitedMs).toBeGreaterThanOrEqual(75);
    expect(await fsWatchers(before)).toBe(before);
  });

  it('stops when aborted', async () => {
    const ctl = new AbortController();
    const waiting = devices.waitForDevice(devices.byPathLink(parsePortal('127.0.0.1'), IQN, 6), { deadlineMs: 5000, pollMs: 10, signal: ctl.signal });
    setTimeout(() => ctl.abort(), 20);
    expect(await waiting).toMatchObject({ ok: false, reason: 'aborted' });
    const pre = new AbortController();
    pre.abort();
    expect(await devices.waitForDevice('/nonexistent', { deadlineMs: 5000, pollMs: 10, signal: pre.signal })).toMatchObject({ ok: false, reason: 'aborted' });
  });

  it('finds the fallback poll useful where no change is reported', async () => {
    // waitUntil with a check that turns true without any file-system event
    let ready = false;
    setTimeout(() => (ready = true), 30);
    const r = await waitUntil([{ dir: devRoot, root: devRoot }], async () => (ready ? 'yes' : null), { deadlineMs: 2000, pollMs: 10 });
    expect(r).toMatchObject({ ok: true, value: 'yes' });
  });
});

describe('by-path for offload transports', () => {
  it('matches the pci-<BDF>- prefixed link', async () => {
    await fs.mkdir(join(devRoot, 'disk/by-path'), { recursive: true });
    await fs.writeFile(join(devRoot, 'sdf'), '');
    const portal = parsePortal('10.0.0.1');
    expect(await devices.findByPath(portal, IQN, 7, 'bnx2i')).toBeNull();
    const waiting = devices.waitForByPath(portal, IQN, 7, { transport: 'bnx2i', deadlineMs: 5000, ...NO_POLL });
    await sleep(20);
    const name = `pci-0000:04:00.0-${devices.byPathName(portal, IQN, 7)}`;
    await fs.symlink('../../sdf', join(devRoot, 'disk/by-path', name));
    expect(await waiting).toMatchObject({ ok: true, device: join(devRoot, 'sdf'), link: join(devRoot, 'disk/by-path', name) });
    expect(await devices.findByPath(portal, IQN, 7, 'bnx2i')).toEqual({ device: join(devRoot, 'sdf'), link: join(devRoot, 'disk/by-path', name) });
    expect(await devices.findByPath(portal, IQN, 7)).toBeNull(); // tcp: no prefix expected
  });
});

describe('waitForMultipathHolder', () => {
  async function pathDevice(name: string): Promise<void> {
    await fs.mkdir(join(sysRoot, 'block', name, 'holders'), { recursive: true });
  }
  async function dmMap(dm: string, uuid: string, name: string): Promise<void> {
    await fs.mkdir(join(sysRoot, 'block', dm, 'dm'), { recursive: true });
    await fs.writeFile(join(sysRoot, 'block', dm, 'dm', 'uuid'), `${uuid}\n`);
    await fs.writeFile(join(sysRoot, 'block', dm, 'dm', 'name'), `${name}\n`);
  }

  it('resolves when the map holds the path and its /dev node exists', async () => {
    await pathDevice('sdb');
    const waiting = devices.waitForMultipathHolder('sdb', { deadlineMs: 5000, ...NO_POLL });
    await sleep(20);
    await dmMap('dm-0', 'mpath-36001405abcdef', 'mpatha');
    await fs.symlink('../../dm-0', join(sysRoot, 'block', 'sdb', 'holders', 'dm-0'));
    await sleep(20);
    const created = performance.now();
    await fs.writeFile(join(devRoot, 'dm-0'), '');
    const r = await waiting;
    expect(r).toMatchObject({ ok: true, device: join(devRoot, 'dm-0'), holder: { dm: 'dm-0', wwid: '36001405abcdef', name: 'mpatha' } });
    expect(performance.now() - created).toBeLessThan(REACTION_BUDGET_MS);
  });

  it('ignores non-multipath holders and times out', async () => {
    await pathDevice('sdc');
    await dmMap('dm-1', 'LVM-abc', 'vg-lv');
    await fs.symlink('../../dm-1', join(sysRoot, 'block', 'sdc', 'holders', 'dm-1'));
    await fs.writeFile(join(devRoot, 'dm-1'), '');
    expect(await devices.waitForMultipathHolder('sdc', { deadlineMs: 60, pollMs: 10 })).toMatchObject({ ok: false, reason: 'timeout' });
  });
});
