import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Devices, waitUntil } from '../../src/node-host/devices.js';
import { Sysfs } from '../../src/node-host/sysfs.js';
import { parsePortal } from '../../src/common/validate.js';

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
  });
});

/** What the kernel shows for a disk of LUN `lun` on SCSI host `host`: its sysfs entries, `dev` number included. */
async function kernelDisk(host: number, lun: number, disk: string, number: string): Promise<void> {
  await fs.mkdir(join(sysRoot, `class/iscsi_host/host${host}/device/session${host}/target${host}:0:0/${host}:0:0:${lun}/block/${disk}`), { recursive: true });
  await fs.mkdir(join(sysRoot, 'block', disk), { recursive: true });
  await fs.writeFile(join(sysRoot, 'block', disk, 'dev'), `${number}\n`);
}

/** What devtmpfs makes as the disk is added: its block node. */
function blockNode(disk: string, number: string): void {
  const [maj, min] = number.split(':');
  execFileSync('mknod', [join(devRoot, disk), 'b', maj!, min!]);
}

const PORTAL = parsePortal('127.0.0.1');
const NAME = { portal: PORTAL, iqn: IQN };

describe('waitForLunDevice', () => {
  it('returns at once when the kernel lists the disk and its node exists; the by-path link is its name only when it points at it', async () => {
    await kernelDisk(3, 1, 'sdb', '7:201');
    blockNode('sdb', '7:201');
    expect(await devices.waitForLunDevice(3, 1, NAME, { deadlineMs: 1000, ...NO_POLL })).toMatchObject({ ok: true, device: join(devRoot, 'sdb'), link: join(devRoot, 'sdb') });
    await fs.mkdir(join(devRoot, 'disk/by-path'), { recursive: true });
    const link = devices.byPathLink(PORTAL, IQN, 1);
    await fs.writeFile(join(devRoot, 'sdq'), '');
    await fs.symlink('../../sdq', link); // udev's link of a device this is not
    expect(await devices.waitForLunDevice(3, 1, NAME, { deadlineMs: 1000, ...NO_POLL })).toMatchObject({ ok: true, link: join(devRoot, 'sdb') });
    await fs.unlink(link);
    await fs.symlink('../../sdb', link);
    expect(await devices.waitForLunDevice(3, 1, NAME, { deadlineMs: 1000, ...NO_POLL })).toMatchObject({ ok: true, device: join(devRoot, 'sdb'), link });
  });

  it('does not wait for udev: a disk whose by-path link never comes is found by its kernel node', async () => {
    await fs.mkdir(join(devRoot, 'disk/by-path'), { recursive: true });
    const before = await fsWatchers();
    const waiting = devices.waitForLunDevice(4, 7, NAME, { deadlineMs: 5000, ...NO_POLL });
    await sleep(30);
    await kernelDisk(4, 7, 'sdm', '7:202');
    const created = performance.now();
    blockNode('sdm', '7:202'); // devtmpfs: the node comes as the disk is added; udev may take minutes
    const r = await waiting;
    const latency = performance.now() - created;
    console.log(`waitForLunDevice reaction latency: ${latency.toFixed(2)} ms`);
    expect(r).toMatchObject({ ok: true, device: join(devRoot, 'sdm'), link: join(devRoot, 'sdm') });
    expect(latency).toBeLessThan(REACTION_BUDGET_MS);
    expect(await fsWatchers(before)).toBe(before);
  });

  it('takes neither another LUN, another SCSI host, nor a node with another device number', async () => {
    await kernelDisk(5, 2, 'sdc', '7:203');
    blockNode('sdc', '7:203');
    await kernelDisk(6, 1, 'sdd', '7:204');
    blockNode('sdd', '7:204');
    await kernelDisk(5, 1, 'sde', '7:205');
    blockNode('sde', '7:206'); // a stale node left under that name
    const before = await fsWatchers();
    const r = await devices.waitForLunDevice(5, 1, NAME, { deadlineMs: 80, pollMs: 10 });
    expect(r).toMatchObject({ ok: false, reason: 'timeout' });
    expect(r.waitedMs).toBeGreaterThanOrEqual(75);
    expect(await fsWatchers(before)).toBe(before);
  });

  it('stops when aborted', async () => {
    const ctl = new AbortController();
    const waiting = devices.waitForLunDevice(7, 1, NAME, { deadlineMs: 5000, pollMs: 10, signal: ctl.signal });
    setTimeout(() => ctl.abort(), 20);
    expect(await waiting).toMatchObject({ ok: false, reason: 'aborted' });
    const pre = new AbortController();
    pre.abort();
    expect(await devices.waitForLunDevice(7, 1, NAME, { deadlineMs: 5000, pollMs: 10, signal: pre.signal })).toMatchObject({ ok: false, reason: 'aborted' });
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
  it('names the disk by the pci-<BDF>- prefixed link', async () => {
    await fs.mkdir(join(devRoot, 'disk/by-path'), { recursive: true });
    await kernelDisk(8, 7, 'sdf', '7:207');
    blockNode('sdf', '7:207');
    const portal = parsePortal('10.0.0.1');
    expect(await devices.findByPath(portal, IQN, 7, 'bnx2i')).toBeNull();
    const name = `pci-0000:04:00.0-${devices.byPathName(portal, IQN, 7)}`;
    await fs.symlink('../../sdf', join(devRoot, 'disk/by-path', name));
    const r = await devices.waitForLunDevice(8, 7, { portal, iqn: IQN, transport: 'bnx2i' }, { deadlineMs: 1000, ...NO_POLL });
    expect(r).toMatchObject({ ok: true, device: join(devRoot, 'sdf'), link: join(devRoot, 'disk/by-path', name) });
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
