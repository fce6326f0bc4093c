// Multipath mode: dm maps over the simulated paths (holders/slaves, dm/uuid = mpath-<wwid>,
// user_friendly_names), /dev/mapper, and the fake multipath / multipathd commands.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './tgtd.js';
import { SimulatedHost } from './host.js';

const exec = promisify(execFile);
const MiB = 1 << 20;
const IQN = 'iqn.2026-11.io.example:mp';

describe.skipIf(process.getuid?.() !== 0)('simulated multipath', () => {
  let host: SimulatedHost;
  let portalA: string;
  let portalB: string;
  const iscsiadm = (...args: string[]) => host.run('iscsiadm', args);
  const mnt = () => join(host.root, 'mnt');

  beforeAll(async () => {
    host = await SimulatedHost.create({ multipath: true });
    portalA = host.tgtd.portal;
    portalB = `127.0.0.1:${await freePort()}`;
    await host.tgtadm(['--op', 'new', '--mode', 'portal', '--param', `portal=${portalB}`]);
    await host.createTarget(IQN, [{ lun: 1, sizeBytes: 64 * MiB }]);
  });

  afterAll(async () => {
    await host?.destroy();
  });

  it('one LUN seen through two portals becomes one dm map holding both paths, named and identified like multipathd does', async () => {
    for (const p of [portalA, portalB]) {
      expect((await iscsiadm('-m', 'discovery', '-t', 'st', '-p', p)).code).toBe(0);
      expect((await iscsiadm('-m', 'node', '-T', IQN, '-p', p, '--login')).code).toBe(0);
    }
    const sds = [portalA, portalB].map((p) => readlinkSync(join(host.paths.byPath, `ip-${p}-iscsi-${IQN}-lun-1`)).replace('../../', ''));
    expect(new Set(sds).size).toBe(2);
    const holders = sds.map((sd) => readdirSync(join(host.paths.sys, 'block', sd, 'holders')));
    expect(holders[0]).toEqual(holders[1]);
    expect(holders[0]).toHaveLength(1);
    const dm = holders[0]![0]!;
    expect(dm).toMatch(/^dm-\d+$/);
    const wwid = readFileSync(join(host.paths.sys, 'block', sds[0]!, 'device/wwid'), 'utf8').trim().replace(/^naa\./, '3');
    expect(readFileSync(join(host.paths.sys, 'block', dm, 'dm/uuid'), 'utf8')).toBe(`mpath-${wwid}\n`);
    expect(readFileSync(join(host.paths.sys, 'block', dm, 'dm/name'), 'utf8')).toBe('mpatha\n'); // user_friendly_names, not the WWID
    expect(readdirSync(join(host.paths.sys, 'block', dm, 'slaves')).sort()).toEqual([...sds].sort());
    expect(readlinkSync(join(host.paths.mapper, 'mpatha'))).toBe(`../${dm}`);
    const { stdout } = await exec('blockdev', ['--getsize64', join(host.paths.dev, dm)]);
    expect(Number(stdout)).toBe(64 * MiB);

    const ll = await host.run('multipath', ['-ll']);
    expect(ll.code).toBe(0);
    const lines = ll.stdout.split('\n');
    expect(lines[0]).toBe(`mpatha (${wwid}) ${dm} IET,VIRTUAL-DISK`);
    expect(lines[1]).toBe("size=64M features='0' hwhandler='0' wp=rw");
    expect(lines[2]).toBe("|-+- policy='service-time 0' prio=1 status=active");
    expect(lines[3]).toMatch(new RegExp(`^\\| \`- \\d+:0:0:1 ${sds[0]} 7:\\d+ active ready running$`));
    expect(lines[4]).toBe("`-+- policy='service-time 0' prio=1 status=enabled");
    expect(lines[5]).toMatch(new RegExp(`^  \`- \\d+:0:0:1 ${sds[1]} 7:\\d+ active ready running$`));
    const maps = await host.run('multipathd', ['show', 'maps']);
    expect(maps.stdout).toBe(`name   sysfs uuid\nmpatha ${dm.padEnd(5)} ${wwid}\n`);
  });

  it('multipath -f refuses a mounted map ("map in use", exit 1) and flushes it once unmounted', async () => {
    const dev = join(host.paths.mapper, 'mpatha');
    await exec('mkfs.ext4', ['-q', '-F', dev]);
    mkdirSync(mnt(), { recursive: true });
    await exec('mount', [dev, mnt()]);
    try {
      const busy = await host.run('multipath', ['-f', 'mpatha']);
      expect(busy.code).toBe(1);
      expect(busy.stderr).toMatch(/^\d+\.\d{6} \| mpatha: map in use\n$/);
      expect((await host.run('multipathd', ['del', 'map', 'mpatha'])).stdout).toBe('fail\n');
    } finally {
      await exec('umount', [mnt()]);
    }
    const dm = readlinkSync(dev).replace('../', '');
    const flushed = await host.run('multipath', ['-f', `/dev/${dm}`.replace('/dev', host.paths.dev)]);
    expect(flushed).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(existsSync(dev)).toBe(false);
    expect(existsSync(join(host.paths.sys, 'block', dm))).toBe(false);
    const s = await host.sessions();
    for (const d of s.flatMap((x) => x.devices).filter((d) => d.name)) {
      expect(readdirSync(join(host.paths.sys, 'block', d.name!, 'holders'))).toEqual([]);
    }
    expect((await host.run('multipath', ['-ll'])).stdout).toBe('');
  });

  it('a new path brings the map back; deleting its last path removes it', async () => {
    const s = await host.sessions();
    // delete both paths, then scan one back: multipathd sets the map up again with the same alias
    for (const x of s) for (const d of x.devices.filter((y) => y.name)) await writeFile(join(host.paths.sys, 'block', d.name!, 'device/delete'), '1');
    await host.sessions();
    await writeFile(join(host.paths.sys, 'class/scsi_host', `host${s[0]!.host}`, 'scan'), '- - -');
    const st = await host.state();
    expect(st.maps).toHaveLength(1);
    expect(st.maps[0]!.name).toBe('mpatha');
    const sd = st.maps[0]!.paths[0]!;
    await writeFile(join(host.paths.sys, 'block', sd, 'device/delete'), '1');
    expect((await host.state()).maps).toEqual([]);
    expect(readdirSync(host.paths.mapper)).toEqual([]);
  });

  it('multipathd resize map takes the size the paths report after their rescan', async () => {
    const s = await host.sessions();
    for (const x of s) await writeFile(join(host.paths.sys, 'class/scsi_host', `host${x.host}`, 'scan'), '0 0 1');
    const st = await host.state();
    const map = st.maps[0]!;
    await host.growLun(IQN, 1, 96 * MiB);
    for (const sd of map.paths) await writeFile(join(host.paths.sys, 'block', sd, 'device/rescan'), '1');
    await host.state();
    expect(readFileSync(join(host.paths.sys, 'block', map.dm, 'size'), 'utf8')).toBe(`${(64 * MiB) / 512}\n`);
    expect(await host.run('multipathd', ['resize', 'map', map.name])).toEqual({ code: 0, stdout: 'ok\n', stderr: '' });
    expect(readFileSync(join(host.paths.sys, 'block', map.dm, 'size'), 'utf8')).toBe(`${(96 * MiB) / 512}\n`);
  });
});
