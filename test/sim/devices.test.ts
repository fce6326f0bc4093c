// The simulated kernel's SCSI devices: scans (manual and auto), real loop-backed block devices with
// udev-style links, writes through a mounted filesystem that land in the target's backing file,
// and the kernel's delete / rescan / logout behaviour.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SimulatedHost } from './host.js';

const exec = promisify(execFile);
const MiB = 1 << 20;
const IQN_MANUAL = 'iqn.2026-11.io.example:manual';
const IQN_AUTO = 'iqn.2026-11.io.example:auto';
const WAIT_MS = 5_000;

/** Waits for a path to (dis)appear: fs.watch would do, a 2 ms poll keeps the test simple. */
async function waitFor(pred: () => boolean, what: string): Promise<number> {
  const started = performance.now();
  while (!pred()) {
    if (performance.now() - started > WAIT_MS) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
  return performance.now() - started;
}

async function loopsOf(file: string): Promise<string[]> {
  const { stdout } = await exec('losetup', ['-j', file]);
  return stdout.split('\n').filter(Boolean).map((l) => l.split(':')[0]!);
}

describe.skipIf(process.getuid?.() !== 0)('simulated SCSI devices on a real tgtd', () => {
  let host: SimulatedHost;
  let portal: string;
  const iscsiadm = (...args: string[]) => host.run('iscsiadm', args);
  const byPath = (iqn: string, lun: number) => join(host.paths.byPath, `ip-${portal}-iscsi-${iqn}-lun-${lun}`);
  const mnt = () => join(host.root, 'mnt');

  beforeAll(async () => {
    host = await SimulatedHost.create();
    portal = host.tgtd.portal;
    await host.createTarget(IQN_MANUAL, [1, 2, 3].map((lun) => ({ lun, sizeBytes: 64 * MiB })));
    await host.createTarget(IQN_AUTO, [1, 2].map((lun) => ({ lun, sizeBytes: 32 * MiB })));
    expect((await iscsiadm('-m', 'discovery', '-t', 'st', '-p', portal)).code).toBe(0);
  });

  afterAll(async () => {
    await host?.destroy();
  });

  it('with node.session.scan=manual, login creates no device and a "0 0 <lun>" scan creates exactly that one', async () => {
    expect((await iscsiadm('-m', 'node', '-T', IQN_MANUAL, '-p', portal, '-o', 'update', '-n', 'node.session.scan', '-v', 'manual')).code).toBe(0);
    expect((await iscsiadm('-m', 'node', '-T', IQN_MANUAL, '-p', portal, '--login')).code).toBe(0);
    const s = (await host.sessions()).find((x) => x.target === IQN_MANUAL)!;
    expect(s.devices).toEqual([]);
    const hostDir = join(host.paths.sys, 'class/iscsi_host', `host${s.host}`);
    // the portal → host map the driver builds from sysfs
    const conn = join(hostDir, 'device', `session${s.sid}`, `connection${s.sid}:0`, 'iscsi_connection', `connection${s.sid}:0`);
    expect(readFileSync(join(conn, 'address'), 'utf8')).toBe(`${portal.split(':')[0]}\n`);
    expect(readFileSync(join(conn, 'port'), 'utf8')).toBe(`${portal.split(':')[1]}\n`);
    expect(readFileSync(join(hostDir, 'device', `session${s.sid}`, 'iscsi_session', `session${s.sid}`, 'targetname'), 'utf8')).toBe(`${IQN_MANUAL}\n`);

    await writeFile(join(host.paths.sys, 'class/scsi_host', `host${s.host}`, 'scan'), '0 0 2');
    const ms = await waitFor(() => existsSync(byPath(IQN_MANUAL, 2)), 'the by-path link of LUN 2');
    console.log(`scan → by-path link: ${ms.toFixed(1)} ms`);
    expect(existsSync(byPath(IQN_MANUAL, 1))).toBe(false);
    expect(existsSync(byPath(IQN_MANUAL, 3))).toBe(false);

    const sd = readlinkSync(byPath(IQN_MANUAL, 2)).replace('../../', '');
    expect(sd).toMatch(/^sd[a-z]+$/);
    const lunDir = join(hostDir, 'device', `session${s.sid}`, `target${s.host}:0:0`, `${s.host}:0:0:2`);
    expect(readdirSync(join(lunDir, 'block'))).toEqual([sd]);
    expect(readdirSync(join(hostDir, 'device', `session${s.sid}`, `target${s.host}:0:0`))).toEqual([`${s.host}:0:0:2`]);
    expect(realpathSync(join(host.paths.sys, 'block', sd, 'device'))).toBe(realpathSync(lunDir));
    expect(readFileSync(join(host.paths.sys, 'block', sd, 'size'), 'utf8')).toBe(`${(64 * MiB) / 512}\n`);
    expect(readFileSync(join(lunDir, 'wwid'), 'utf8')).toMatch(/^naa\.60000000000000000e0000000001000[0-9a-f]\n$/);
    expect(readFileSync(join(lunDir, 'vendor'), 'utf8')).toBe('IET     \n');
    // a real block device on the LUN's backing file
    const st = statSync(join(host.paths.dev, sd));
    expect(st.isBlockDevice()).toBe(true);
    const backing = join(host.paths.backing, `${IQN_MANUAL.replace(/:/g, '_')}-lun2.img`);
    const [loop] = await loopsOf(backing);
    expect(readFileSync(`/sys/class/block/${loop!.replace('/dev/', '')}/dev`, 'utf8').trim()).toBe(readFileSync(join(host.paths.sys, 'block', sd, 'dev'), 'utf8').trim());
    const { stdout } = await exec('blockdev', ['--getsize64', byPath(IQN_MANUAL, 2)]);
    expect(Number(stdout)).toBe(64 * MiB);
  });

  it('with node.session.scan=auto, login brings every LUN (LUN 0, the controller, without a block device)', async () => {
    expect((await iscsiadm('-m', 'node', '-T', IQN_AUTO, '-p', portal, '--login')).code).toBe(0);
    expect(existsSync(byPath(IQN_AUTO, 1))).toBe(true);
    expect(existsSync(byPath(IQN_AUTO, 2))).toBe(true);
    expect(existsSync(byPath(IQN_AUTO, 0))).toBe(false);
    const s = (await host.sessions()).find((x) => x.target === IQN_AUTO)!;
    expect(s.devices.map((d) => [d.lun, !!d.name])).toEqual([[0, false], [1, true], [2, true]]);
    const tree = (await iscsiadm('-m', 'session', '-r', String(s.sid), '-P', '3')).stdout;
    expect(tree).toContain(`\t\tscsi${s.host} Channel 00 Id 0 Lun: 0\n\t\tscsi${s.host} Channel 00 Id 0 Lun: 1\n\t\t\tAttached scsi disk ${s.devices[1]!.name}\t\tState: running\n`);
  });

  it('mkfs + mount through the by-path link writes into the target\'s backing file', async () => {
    const dev = byPath(IQN_MANUAL, 2);
    await exec('mkfs.ext4', ['-q', '-F', dev]);
    const { stdout: probe } = await exec('blkid', ['-p', '-o', 'export', dev]);
    expect(probe).toContain('TYPE=ext4');
    mkdirSync(mnt(), { recursive: true });
    await exec('mount', [dev, mnt()]);
    try {
      writeFileSync(join(mnt(), 'hello.txt'), 'written through the simulated iSCSI disk\n');
    } finally {
      await exec('umount', [mnt()]);
    }
    const backing = join(host.paths.backing, `${IQN_MANUAL.replace(/:/g, '_')}-lun2.img`);
    const { stdout } = await exec('debugfs', ['-R', 'cat /hello.txt', backing]);
    expect(stdout).toBe('written through the simulated iSCSI disk\n');
  });

  it('rescan picks up a LUN grown on the target (backing file grown, LUN re-created in tgtd)', async () => {
    const sd = readlinkSync(byPath(IQN_MANUAL, 2)).replace('../../', '');
    await host.growLun(IQN_MANUAL, 2, 128 * MiB);
    const wwidBefore = readFileSync(join(host.paths.sys, 'block', sd, 'device/wwid'), 'utf8');
    await writeFile(join(host.paths.sys, 'block', sd, 'device/rescan'), '1');
    await waitFor(() => readFileSync(join(host.paths.sys, 'block', sd, 'size'), 'utf8') === `${(128 * MiB) / 512}\n`, 'the new size');
    const { stdout } = await exec('blockdev', ['--getsize64', byPath(IQN_MANUAL, 2)]);
    expect(Number(stdout)).toBe(128 * MiB);
    expect(readFileSync(join(host.paths.sys, 'block', sd, 'device/wwid'), 'utf8')).toBe(wwidBefore);
  });

  it('delete removes the device, its node and links, and detaches the loop when it was the last path', async () => {
    const sd = readlinkSync(byPath(IQN_MANUAL, 2)).replace('../../', '');
    const backing = join(host.paths.backing, `${IQN_MANUAL.replace(/:/g, '_')}-lun2.img`);
    expect(await loopsOf(backing)).toHaveLength(1);
    await writeFile(join(host.paths.sys, 'block', sd, 'device/delete'), '1');
    await waitFor(() => !existsSync(byPath(IQN_MANUAL, 2)), 'the by-path link to go');
    // the kernel answers after the removal finished (one thing at a time)
    const s = (await host.sessions()).find((x) => x.target === IQN_MANUAL)!;
    expect(s.devices).toEqual([]);
    expect(existsSync(join(host.paths.sys, 'block', sd))).toBe(false);
    expect(existsSync(join(host.paths.dev, sd))).toBe(false);
    expect(readdirSync(host.paths.byId).filter((l) => l.endsWith('00010002'))).toEqual([]);
    expect(await loopsOf(backing)).toEqual([]);
  });

  it('fault noDevice: the scan succeeds but the LUN never gets a device', async () => {
    const s = (await host.sessions()).find((x) => x.target === IQN_MANUAL)!;
    await host.setFaults({ noDevice: [{ iqn: IQN_MANUAL, lun: 3 }] });
    try {
      await writeFile(join(host.paths.sys, 'class/scsi_host', `host${s.host}`, 'scan'), '0 0 3');
      await writeFile(join(host.paths.sys, 'class/scsi_host', `host${s.host}`, 'scan'), '0 0 1');
      await waitFor(() => existsSync(byPath(IQN_MANUAL, 1)), 'LUN 1');
      expect(existsSync(byPath(IQN_MANUAL, 3))).toBe(false);
    } finally {
      await host.setFaults({});
    }
  });

  it('iscsiadm -m session --rescan rescans devices but adds no LUN to a manual-scan session', async () => {
    const r = await iscsiadm('-m', 'session', '--rescan');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Rescanning session \[sid: \d+, target: iqn\.2026-11\.io\.example:manual, portal: 127\.0\.0\.1,\d+\]$/m);
    expect(existsSync(byPath(IQN_MANUAL, 3))).toBe(false);
  });

  it('concurrent scan writes to one host (merged in the FIFO) and concurrent commands all take effect', async () => {
    const iqn = 'iqn.2026-11.io.example:concurrent';
    await host.createTarget(iqn, [4, 5, 6, 7].map((lun) => ({ lun, sizeBytes: 8 * MiB })));
    await iscsiadm('-m', 'discovery', '-t', 'st', '-p', portal);
    await iscsiadm('-m', 'node', '-T', iqn, '-p', portal, '-o', 'update', '-n', 'node.session.scan', '-v', 'manual');
    expect((await iscsiadm('-m', 'node', '-T', iqn, '-p', portal, '--login')).code).toBe(0);
    const s = (await host.sessions()).find((x) => x.target === iqn)!;
    const scan = join(host.paths.sys, 'class/scsi_host', `host${s.host}`, 'scan');
    await Promise.all([
      ...[4, 5, 6, 7].map((lun) => writeFile(scan, `0 0 ${lun}`)),
      iscsiadm('-m', 'session'), iscsiadm('-m', 'node'), iscsiadm('-m', 'session', '-P', '3'),
    ]);
    await waitFor(() => [4, 5, 6, 7].every((lun) => existsSync(byPath(iqn, lun))), 'all four LUNs');
    const names = (await host.sessions()).find((x) => x.target === iqn)!.devices.map((d) => d.name);
    expect(new Set(names).size).toBe(4);
  });

  it('logout removes sessions, devices, links and loop devices', async () => {
    const backings = readdirSync(host.paths.backing).map((f) => join(host.paths.backing, f));
    const r = await iscsiadm('-m', 'session', '-u');
    expect(r.code).toBe(0);
    expect(await host.sessions()).toEqual([]);
    expect(readdirSync(host.paths.byPath)).toEqual([]);
    expect(readdirSync(host.paths.byId)).toEqual([]);
    expect(readdirSync(join(host.paths.sys, 'block'))).toEqual([]);
    expect(readdirSync(join(host.paths.sys, 'class/iscsi_session'))).toEqual([]);
    expect(readdirSync(join(host.paths.sys, 'devices/platform'))).toEqual([]);
    expect(readdirSync(host.paths.dev).filter((f) => f.startsWith('sd'))).toEqual([]);
    for (const b of backings) expect(await loopsOf(b)).toEqual([]);
  });
});
