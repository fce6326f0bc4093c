// Sysfs against a temporary tree laid out like the kernel's (open-iscsi.md §4.1): devices under
// devices/platform/hostN, class/ and block/ entries as relative symlinks into it.
import { execFileSync } from 'node:child_process';
import { createReadStream, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InvalidArgument, NotFound } from '../../src/errors.js';
import { Sysfs, writeControlFile } from '../../src/node-host/sysfs.js';

const T1 = 'iqn.2026-11.io.example:t1';
const T2 = 'iqn.2026-11.io.example:t2';
let root: string;
let sysfs: Sysfs;

async function write(path: string, content: string): Promise<void> {
  await fs.mkdir(dirname(join(root, path)), { recursive: true });
  await fs.writeFile(join(root, path), content);
}

/** A symlink at `link` pointing (relatively, as the kernel does) to `target`, both relative to root. */
async function link(linkPath: string, target: string): Promise<void> {
  const abs = join(root, linkPath);
  await fs.mkdir(dirname(abs), { recursive: true });
  await fs.symlink(relative(dirname(abs), join(root, target)), abs);
}

interface SessionSpec {
  host: number;
  sid: number;
  iqn: string;
  state: string;
  address: string;
  port: number;
  persistentAddress: string;
  luns: { lun: number; disk?: string; sectors?: number }[];
}

async function addSession(s: SessionSpec): Promise<void> {
  const hostDir = `devices/platform/host${s.host}`;
  const sessDir = `${hostDir}/session${s.sid}`;
  await write(`${hostDir}/iscsi_host/host${s.host}/initiatorname`, 'iqn.1993-08.org.debian:01:0123456789ab\n');
  await link(`${hostDir}/iscsi_host/host${s.host}/device`, hostDir);
  await link(`class/iscsi_host/host${s.host}`, `${hostDir}/iscsi_host/host${s.host}`);
  await write(`${hostDir}/scsi_host/host${s.host}/scan`, '');
  await write(`${hostDir}/scsi_host/host${s.host}/state`, 'running\n');
  await link(`class/scsi_host/host${s.host}`, `${hostDir}/scsi_host/host${s.host}`);
  await write(`${sessDir}/iscsi_session/session${s.sid}/targetname`, `${s.iqn}\n`);
  await write(`${sessDir}/iscsi_session/session${s.sid}/state`, `${s.state}\n`);
  await link(`class/iscsi_session/session${s.sid}`, `${sessDir}/iscsi_session/session${s.sid}`);
  const conn = `${sessDir}/connection${s.sid}:0/iscsi_connection/connection${s.sid}:0`;
  await write(`${conn}/address`, `${s.address}\n`);
  await write(`${conn}/port`, `${s.port}\n`);
  await write(`${conn}/persistent_address`, `${s.persistentAddress}\n`);
  await write(`${conn}/persistent_port`, `${s.port}\n`);
  for (const l of s.luns) {
    const lunDir = `${sessDir}/target${s.host}:0:0/${s.host}:0:0:${l.lun}`;
    await write(`${lunDir}/state`, 'running\n');
    await write(`${lunDir}/delete`, '');
    await write(`${lunDir}/rescan`, '');
    // the class link as the kernel makes it, for all but host 4 (whose LUNs are then found by the walk)
    if (s.host !== 4) {
      await link(`${lunDir}/scsi_device/${s.host}:0:0:${l.lun}/device`, lunDir);
      await link(`class/scsi_device/${s.host}:0:0:${l.lun}`, `${lunDir}/scsi_device/${s.host}:0:0:${l.lun}`);
    }
    if (!l.disk) continue;
    await write(`${lunDir}/block/${l.disk}/size`, `${l.sectors ?? 131072}\n`);
    await fs.mkdir(join(root, lunDir, 'block', l.disk, 'holders'), { recursive: true });
    await link(`${lunDir}/block/${l.disk}/device`, lunDir);
    await link(`block/${l.disk}`, `${lunDir}/block/${l.disk}`);
  }
}

async function addDm(dm: string, uuid: string, name: string, slaves: string[]): Promise<void> {
  const dir = `devices/virtual/block/${dm}`;
  await write(`${dir}/dm/uuid`, `${uuid}\n`);
  await write(`${dir}/dm/name`, `${name}\n`);
  await link(`block/${dm}`, dir);
  for (const sd of slaves) {
    const sdDir = relative(root, await fs.realpath(join(root, 'block', sd)));
    await link(`${dir}/slaves/${sd}`, sdDir);
    await link(`${sdDir}/holders/${dm}`, dir);
  }
}

beforeAll(async () => {
  root = await fs.mkdtemp(join(tmpdir(), 'host-sysfs-'));
  sysfs = new Sysfs(root);
  await addSession({ host: 3, sid: 1, iqn: T1, state: 'LOGGED_IN', address: '10.0.0.1', port: 3260, persistentAddress: '10.0.0.1', luns: [{ lun: 0 }, { lun: 8, disk: 'sdb', sectors: 131072 }] });
  // IPv6: the kernel prints `address` uncompressed, `persistent_address` as iscsiadm gave it
  await addSession({ host: 4, sid: 2, iqn: T1, state: 'FAILED', address: 'fd00:0000:0000:0000:0000:0000:0000:0010', port: 3260, persistentAddress: 'fd00::10', luns: [{ lun: 8, disk: 'sdc' }] });
  await addSession({ host: 5, sid: 10, iqn: T2, state: 'LOGGED_IN', address: '10.0.0.2', port: 3261, persistentAddress: 'san.example.com', luns: [{ lun: 1, disk: 'sdd' }, { lun: 2, disk: 'sde' }] });
  await addDm('dm-0', 'mpath-36001405abcdef0123456789abcdef01', 'mpatha', ['sdb', 'sdc']);
  await addDm('dm-1', 'LVM-Zq1t2rWfK9', 'vg-lv', ['sdd']);
  // partition map of a multipath device (kpartx): not a multipath map itself
  await addDm('dm-2', 'part1-mpath-36001405ffff', 'mpathb1', ['sde']);
});

afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('Sysfs topology', () => {
  it('reads every session with its connections, LUNs and disks in one walk', async () => {
    const topo = await sysfs.topology();
    expect(topo.sessions.map((s) => [s.sid, s.host, s.iqn, s.state])).toEqual([
      [1, 3, T1, 'LOGGED_IN'],
      [2, 4, T1, 'FAILED'],
      [10, 5, T2, 'LOGGED_IN'],
    ]);
    expect(topo.sessions[0]!.luns.map((l) => [l.hctl, l.devices, l.state])).toEqual([['3:0:0:0', [], 'running'], ['3:0:0:8', ['sdb'], 'running']]);
    expect(topo.sessions[2]!.portals).toEqual(['san.example.com:3261', '10.0.0.2:3261']);
  });

  it('maps portals (IPv6 bracketed and canonical) to SCSI hosts for one target', async () => {
    expect(await sysfs.portalHostMap(T1)).toEqual(new Map([['10.0.0.1:3260', 3], ['[fd00::10]:3260', 4]]));
    expect(await sysfs.portalHostMap(T2)).toEqual(new Map([['san.example.com:3261', 5], ['10.0.0.2:3261', 5]]));
    expect(await sysfs.portalHostMap('iqn.2026-11.io.example:none')).toEqual(new Map());
  });

  it('lists a target\'s sessions with portal and state', async () => {
    const sessions = (await sysfs.topology(T1)).sessionsForTarget(T1);
    expect(sessions.map((s) => ({ sid: s.sid, host: s.host, portal: s.portals[0] ?? null, state: s.state }))).toEqual([
      { sid: 1, host: 3, portal: '10.0.0.1:3260', state: 'LOGGED_IN' },
      { sid: 2, host: 4, portal: '[fd00::10]:3260', state: 'FAILED' },
    ]);
  });

  it('reads one volume\'s paths in one walk: each portal\'s session, its state and only that LUN', async () => {
    const paths = await sysfs.volumePaths(T1, 8);
    expect(paths.sessionAt('10.0.0.1:3260')).toMatchObject({ sid: 1, state: 'LOGGED_IN', luns: [{ hctl: '3:0:0:8', devices: ['sdb'], state: 'running' }] });
    expect(paths.sessionAt('[fd00::10]:3260')).toMatchObject({ sid: 2, state: 'FAILED', luns: [{ hctl: '4:0:0:8', devices: ['sdc'] }] });
    expect(paths.sessionAt('10.0.0.2:3261')).toBeUndefined(); // another target's portal
    // LUN 0: present on session 1 without a disk, absent on session 2
    const lun0 = await sysfs.volumePaths(T1, 0);
    expect(lun0.sessionAt('10.0.0.1:3260')?.luns).toEqual([{ hctl: '3:0:0:0', host: 3, channel: 0, target: 0, lun: 0, devices: [], state: 'running' }]);
    expect(lun0.sessionAt('[fd00::10]:3260')?.luns).toEqual([]);
  });

  it('reads only the sessions made through the volume\'s iface', async () => {
    const ifaceFile = (host: number, sid: number): string => join(root, `devices/platform/host${host}/session${sid}/iscsi_session/session${sid}/ifacename`);
    await fs.writeFile(ifaceFile(3, 1), 'default\n');
    await fs.writeFile(ifaceFile(4, 2), 'csi-vol-x\n');
    try {
      const own = await sysfs.volumePaths(T1, 8, 'csi-vol-x');
      expect(own.sessionAt('10.0.0.1:3260')).toBeUndefined();
      expect(own.sessionAt('[fd00::10]:3260')?.sid).toBe(2);
      expect((await sysfs.volumePaths(T1, 8, 'default')).sessionAt('10.0.0.1:3260')?.sid).toBe(1);
    } finally {
      await fs.rm(ifaceFile(3, 1));
      await fs.rm(ifaceFile(4, 2));
    }
  });

  it('finds a LUN\'s devices per host and across a target\'s paths', async () => {
    expect(await sysfs.devicesForLun(3, 8)).toEqual(['sdb']);
    expect(await sysfs.devicesForLun(3, 0)).toEqual([]);
    expect(await sysfs.devicesForLun(4, 8)).toEqual(['sdc']);
    expect(await sysfs.devicesForLun(9, 8)).toEqual([]);
    expect(await sysfs.devicesForIqnLun(T1, 8)).toEqual(['sdb', 'sdc']);
    expect(await sysfs.devicesForIqnLun(T2, 8)).toEqual([]);
    const paths = await sysfs.volumePaths(T1, 8);
    const pathAt = (portal: string) => {
      const session = paths.sessionAt(portal);
      return session && { host: session.host, sid: session.sid, portal: session.portals[0], devices: session.luns.flatMap((l) => l.devices) };
    };
    expect([pathAt('10.0.0.1:3260'), pathAt('[fd00::10]:3260')]).toEqual([
      { host: 3, sid: 1, portal: '10.0.0.1:3260', devices: ['sdb'] },
      { host: 4, sid: 2, portal: '[fd00::10]:3260', devices: ['sdc'] },
    ]);
  });

  it('reads sizes and the presence of block devices', async () => {
    expect(await sysfs.deviceSizeBytes('sdb')).toBe(131072 * 512);
    expect(await sysfs.deviceSizeBytes('sdz')).toBeNull();
    expect(await sysfs.deviceExists('sdb')).toBe(true);
    expect(await sysfs.deviceExists('sdz')).toBe(false);
  });

  it('finds the multipath holder by dm/uuid, WWID from the uuid (not the friendly name)', async () => {
    const holder = { dm: 'dm-0', uuid: 'mpath-36001405abcdef0123456789abcdef01', name: 'mpatha', wwid: '36001405abcdef0123456789abcdef01' };
    expect(await sysfs.multipathHolder('sdb')).toEqual(holder);
    expect(await sysfs.multipathHolder('sdc')).toEqual(holder);
    expect(await sysfs.multipathHolder('sdd')).toBeNull(); // LVM holder
    expect(await sysfs.multipathHolder('sde')).toBeNull(); // kpartx partition map
    expect(await sysfs.multipathHolder('sdz')).toBeNull();
  });

  it('reports an empty topology for a root without iSCSI', async () => {
    const empty = await fs.mkdtemp(join(tmpdir(), 'host-sysfs-empty-'));
    try {
      expect((await new Sysfs(empty).topology()).sessions).toEqual([]);
    } finally {
      await fs.rm(empty, { recursive: true });
    }
  });
});

describe('Sysfs control files', () => {
  it('scans exactly one LUN: "0 0 <lun>" to class/scsi_host/hostN/scan', async () => {
    await sysfs.scanLun(3, 8);
    expect(await fs.readFile(join(root, 'devices/platform/host3/scsi_host/host3/scan'), 'utf8')).toBe('0 0 8');
    await expect(sysfs.scanLun(99, 1)).rejects.toThrow(NotFound);
    await expect(fs.access(join(root, 'class/scsi_host/host99/scan'))).rejects.toThrow(); // never created
  });

  it('deletes and rescans devices through block/sdX/device/{delete,rescan}', async () => {
    expect(await sysfs.deleteDevice('sdb')).toBe(true);
    expect(await fs.readFile(join(root, 'devices/platform/host3/session1/target3:0:0/3:0:0:8/delete'), 'utf8')).toBe('1');
    await sysfs.rescanDevice('sdc');
    expect(await fs.readFile(join(root, 'devices/platform/host4/session2/target4:0:0/4:0:0:8/rescan'), 'utf8')).toBe('1');
    expect(await sysfs.deleteDevice('sdz')).toBe(false); // already gone
    await expect(sysfs.rescanDevice('sdz')).rejects.toThrow(NotFound);
  });

  it('refuses device names that would leave block/', async () => {
    for (const bad of ['../etc', '..', 'a/b', '']) {
      await expect(sysfs.deleteDevice(bad)).rejects.toThrow(InvalidArgument);
      await expect(sysfs.deviceSizeBytes(bad)).rejects.toThrow(InvalidArgument);
    }
  });

  it('writes to a FIFO control file that a (simulated) kernel reads', async () => {
    const fifo = join(root, 'devices/platform/host4/scsi_host/host4/scan');
    await fs.rm(fifo);
    execFileSync('mkfifo', [fifo]);
    const received = new Promise<string>((resolve, reject) => {
      let data = '';
      createReadStream(fifo, 'utf8').on('data', (c) => (data += c)).on('end', () => resolve(data)).on('error', reject);
    });
    await sysfs.scanLun(4, 8);
    expect(await received).toBe('0 0 8');
  });

  it('waits a bounded time for a FIFO reader, then fails instead of hanging', async () => {
    const fifo = join(root, 'lonely-fifo');
    execFileSync('mkfifo', [fifo]);
    const started = Date.now();
    await expect(writeControlFile(fifo, '1', 60)).rejects.toMatchObject({ code: 'ENXIO' });
    expect(Date.now() - started).toBeLessThan(1000);
  });
});

describe('Sysfs sessions kept between calls', () => {
  const T3 = 'iqn.2026-11.io.example:t3';
  const T4 = 'iqn.2026-11.io.example:t4';
  const removeSession = async (host: number, sid: number) => {
    await fs.rm(join(root, `class/iscsi_session/session${sid}`));
    await fs.rm(join(root, `class/iscsi_host/host${host}`));
    await fs.rm(join(root, `class/scsi_host/host${host}`));
    await fs.rm(join(root, `class/scsi_device/${host}:0:0:0`));
    await fs.rm(join(root, `devices/platform/host${host}`), { recursive: true });
  };
  const session = (host: number, sid: number, iqn: string) =>
    addSession({ host, sid, iqn, state: 'LOGGED_IN', address: '10.0.0.9', port: 3260, persistentAddress: '10.0.0.9', luns: [{ lun: 0 }] });

  it('does not read another target\'s sessions again once it knows whose they are', async () => {
    const own = new Sysfs(root);
    await session(20, 30, T3);
    expect(await own.portalHostMap(T3)).toEqual(new Map([['10.0.0.9:3260', 20]]));
    // a target name never changes while its session exists: one that did would show it was re-read
    await fs.writeFile(join(root, 'devices/platform/host20/session30/iscsi_session/session30/targetname'), `${T4}\n`);
    expect(await own.portalHostMap(T4)).toEqual(new Map());
    // a fresh reader sees what the directory says now
    expect(await new Sysfs(root).portalHostMap(T4)).toEqual(new Map([['10.0.0.9:3260', 20]]));
    await removeSession(20, 30);
  });

  it('reads a session afresh when its name comes back as another session (another host or target)', async () => {
    const own = new Sysfs(root);
    await session(21, 31, T3);
    expect(await own.portalHostMap(T3)).toEqual(new Map([['10.0.0.9:3260', 21]]));
    // logged out and a new session31 made between two calls, on another SCSI host
    await removeSession(21, 31);
    await session(22, 31, T3);
    expect(await own.portalHostMap(T3)).toEqual(new Map([['10.0.0.9:3260', 22]]));
    // and again on the same host, to another target
    await removeSession(22, 31);
    await session(22, 31, T4);
    expect(await own.portalHostMap(T3)).toEqual(new Map());
    expect((await own.topology(T4)).sessions.map((s) => [s.sid, s.host, s.iqn])).toEqual([[31, 22, T4]]);
    await removeSession(22, 31);
    expect((await own.topology()).sessions.map((s) => s.sid)).toEqual([1, 2, 10]);
  });
});
