// Multipath on the simulated host: two live portals of one tgtd give two path devices under one dm
// map; the driver stages the dm device, data lands in the LUN's backing file, unstage flushes the map.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mountCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';

const MiB = 1024 * 1024;
let sd: SimDriver;
let second: string;

beforeAll(async () => {
  sd = await startSimDriver({ multipath: true });
  second = `127.0.0.2:${sd.host.tgtd.port}`;
  await sd.host.tgtadm(['--op', 'new', '--mode', 'portal', '--param', `portal=${second}`]);
});
afterAll(async () => {
  await sd?.stop();
});

describe('multipath', () => {
  it('stages the dm device over both paths and flushes it on unstage', async () => {
    const iqn = 'iqn.2026-11.dev.test:mpath';
    const backing = (await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 64 * MiB }])).luns[0]!.path;
    const staging = join(sd.stateDir, 'mp-staging');
    mkdirSync(staging, { recursive: true });
    await sd.client.call('Node', 'NodeStageVolume', {
      volume_id: 'mp1', staging_target_path: staging, volume_capability: mountCapability('ext4'),
      volume_context: { targetPortal: sd.host.portals[0]!, portals: JSON.stringify([second]), iqn, lun: '1' },
    });
    const sessions = (await sd.host.sessions()).filter((s) => s.target === iqn);
    expect(sessions).toHaveLength(2);
    const dms = new Set(sessions.flatMap((s) => s.devices.map((d) => d.dm)));
    expect(dms.size).toBe(1);
    const dm = [...dms][0]!;
    expect(readFileSync(join(sd.host.root, 'sys/block', dm, 'dm/uuid'), 'utf8')).toMatch(/^mpath-3/);
    expect(readdirSync(join(sd.host.root, 'sys/block', dm, 'slaves')).sort()).toEqual(sessions.flatMap((s) => s.devices.map((d) => d.name!)).sort());
    // the staged device is the dm node, not one path
    const mount = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === staging)!;
    expect(mount.split(' - ')[1]!.split(' ')[1]).toBe(join(sd.host.root, 'dev', dm));

    writeFileSync(join(staging, 'mp.txt'), 'multipath-marker-77');
    execFileSync('sync', ['-f', join(staging, 'mp.txt')]);
    expect(readFileSync(backing).includes(Buffer.from('multipath-marker-77'))).toBe(true);

    await sd.client.call('Node', 'NodeUnstageVolume', { volume_id: 'mp1', staging_target_path: staging });
    expect((await sd.host.sessions()).filter((s) => s.target === iqn)).toEqual([]);
    expect(existsSync(join(sd.host.root, 'sys/block', dm))).toBe(false);
  });

  it('with one path, waits for the map multipathd builds after the path\'s links, and stages the dm device', async () => {
    const iqn = 'iqn.2026-11.dev.test:mpath-single';
    await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }]);
    const staging = join(sd.stateDir, 'mp-single-staging');
    mkdirSync(staging, { recursive: true });
    // multipathd reacts to the uevent: the map takes the path 150 ms after udev made its links, and
    // udevd writes the path's database entry (DM_MULTIPATH_DEVICE_PATH=1) 60 ms after the links
    await sd.host.setFaults({ multipathDelayMs: 150, udevDelayMs: 60 });
    try {
      await sd.client.call('Node', 'NodeStageVolume', {
        volume_id: 'mp-single', staging_target_path: staging, volume_capability: mountCapability('ext4'),
        volume_context: { targetPortal: sd.host.portals[0]!, iqn, lun: '1' },
      });
    } finally {
      await sd.host.setFaults({});
    }
    const [session] = (await sd.host.sessions()).filter((s) => s.target === iqn);
    const dm = session!.devices[0]!.dm;
    expect(dm).toMatch(/^dm-\d+$/);
    const mount = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === staging)!;
    expect(mount.split(' - ')[1]!.split(' ')[1]).toBe(join(sd.host.root, 'dev', dm!));
    await sd.client.call('Node', 'NodeUnstageVolume', { volume_id: 'mp-single', staging_target_path: staging });
    expect((await sd.host.sessions()).filter((s) => s.target === iqn)).toEqual([]);
    expect(existsSync(join(sd.host.root, 'sys/block', dm!))).toBe(false);
  });
});
