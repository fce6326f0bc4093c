// The node healer in the running driver on the simulated host (real tgtd, loop devices, mkfs, mount):
// a session logged out behind the driver's back is logged in again and its LUN scanned, with the same
// data; a portal down at stage becomes a second path of the multipath map once it answers; a session of
// the driver whose volume record was lost is logged out after the grace period while an operator's own
// session stays. Healing runs every 200 ms here (production: 30 s), the grace is 1.5 s (5 min).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeSync, fsyncSync } from 'node:fs';
import { join } from 'node:path';
import { blockCapability, mountCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';
import type { Config } from '../../src/config.js';
import { until } from '../helpers/until.js';
import { status } from '@grpc/grpc-js';

const MiB = 1024 * 1024;

function fastHealing(cfg: Config): void {
  cfg.node.healing = { enabled: true, intervalMs: 200, orphanGraceMs: 1_500, reapOrphans: true };
}

interface Stats { volume_condition: { abnormal: boolean; message: string } }

/**
 * NodeUnstageVolume as kubelet sends it: retried while it is ABORTED (the healer holds the volume for
 * the moment of a pass; the CSI spec makes ABORTED retryable).
 */
async function unstageRetrying(sd: SimDriver, volumeId: string, staging: string): Promise<void> {
  await until(`${volumeId} unstaged`, async () => {
    try {
      await sd.client.call('Node', 'NodeUnstageVolume', { volume_id: volumeId, staging_target_path: staging });
      return true;
    } catch (e) {
      if ((e as { code?: number }).code === status.ABORTED) return false;
      throw e;
    }
  });
}

function conditionOf(sd: SimDriver, volumeId: string, path: string): Promise<Stats['volume_condition']> {
  return sd.client.call<Stats>('Node', 'NodeGetVolumeStats', { volume_id: volumeId, volume_path: path }).then((s) => s.volume_condition);
}

describe('healing on one portal', () => {
  let sd: SimDriver;
  let work: string;
  beforeAll(async () => {
    sd = await startSimDriver({ configure: fastHealing });
    work = join(sd.stateDir, 'kubelet');
    mkdirSync(work, { recursive: true });
  });
  afterAll(async () => {
    await sd?.stop();
  });

  const ctx = (iqn: string): Record<string, string> => ({ targetPortal: sd.host.portals[0]!, iqn, lun: '1' });
  const devicesOf = async (iqn: string): Promise<string[]> => (await sd.host.sessions()).filter((s) => s.target === iqn).flatMap((s) => s.devices.filter((d) => d.lun === 1 && d.name).map((d) => d.name!));

  it('a session logged out behind the driver\'s back is logged in again, the LUN scanned; the data reads back and unstage leaves nothing', async () => {
    const iqn = 'iqn.2026-11.dev.test:heal-relogin';
    await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }]);
    const staging = join(work, 'relogin-staging');
    await sd.client.call('Node', 'NodeStageVolume', { volume_id: 'relogin', staging_target_path: staging, volume_capability: blockCapability(), volume_context: ctx(iqn) });
    const [before] = await devicesOf(iqn);
    const dev = join(sd.host.paths.dev, before!);
    const pattern = Buffer.from(`healing-pattern-${Date.now()}`);
    const fd = openSync(dev, 'r+');
    writeSync(fd, pattern, 0, pattern.length, 4096);
    fsyncSync(fd);
    closeSync(fd);

    await sd.host.run('iscsiadm', ['-m', 'node', '-T', iqn, '-p', sd.host.portals[0]!, '--logout']);
    expect(await devicesOf(iqn)).toEqual([]);

    const [after] = await until('a device of the LUN again', () => devicesOf(iqn).then((d) => d.length > 0 && d));
    const wwid = (name: string): string => readFileSync(join(sd.host.paths.sys, 'block', name, 'device/wwid'), 'utf8').trim();
    const record = JSON.parse(readFileSync(join(sd.stateDir, 'volumes', readdirSync(join(sd.stateDir, 'volumes'))[0]!, 'iscsi.json'), 'utf8')) as { wwid: string; devices: string[] };
    expect(wwid(after!)).toBe(record.wwid);
    const back = Buffer.alloc(pattern.length);
    const rfd = openSync(join(sd.host.paths.dev, after!), 'r');
    readSync(rfd, back, 0, back.length, 4096);
    closeSync(rfd);
    expect(back.toString()).toBe(pattern.toString());
    await until('the record names the new device', async () => {
      const r = JSON.parse(readFileSync(join(sd.stateDir, 'volumes', readdirSync(join(sd.stateDir, 'volumes'))[0]!, 'iscsi.json'), 'utf8')) as { devices: string[] };
      return r.devices.includes(after!);
    });
    expect(await conditionOf(sd, 'relogin', staging)).toEqual({ abnormal: false, message: 'healthy' });

    await unstageRetrying(sd, 'relogin', staging);
    expect((await sd.host.sessions()).filter((s) => s.target === iqn)).toEqual([]);
    expect(readdirSync(join(sd.stateDir, 'sessions'))).toEqual([]);
  });

  it('a session of the driver whose volume record was lost is logged out after the grace; an operator\'s own session stays', async () => {
    const ours = 'iqn.2026-11.dev.test:heal-orphan';
    const theirs = 'iqn.2026-11.dev.test:heal-operator';
    await sd.host.createTarget(ours, [{ lun: 1, sizeBytes: 16 * MiB }]);
    await sd.host.createTarget(theirs, [{ lun: 1, sizeBytes: 16 * MiB }]);
    const staging = join(work, 'orphan-staging');
    await sd.client.call('Node', 'NodeStageVolume', { volume_id: 'orphan', staging_target_path: staging, volume_capability: blockCapability(), volume_context: ctx(ours) });
    const portal = sd.host.portals[0]!;
    await sd.host.run('iscsiadm', ['-m', 'node', '-o', 'new', '-T', theirs, '-p', portal]);
    await sd.host.run('iscsiadm', ['-m', 'node', '-T', theirs, '-p', portal, '--login']);
    const theirDevices = await until('the operator\'s LUN', () => devicesOf(theirs).then((d) => d.length > 0 && d));

    // the state directory loses the record (a restore from an old backup, an operator's rm)
    for (const dir of readdirSync(join(sd.stateDir, 'volumes'))) rmSync(join(sd.stateDir, 'volumes', dir), { recursive: true });
    const lostAt = Date.now();
    // the reaper logs out, then deletes the node record, then its mark: wait for all three
    const nodeRecords = join(sd.host.root, 'var/lib/iscsi/nodes', ours);
    await until('the orphan session logged out, its node record and mark removed', async () =>
      (await sd.host.sessions()).every((s) => s.target !== ours)
      && (!existsSync(nodeRecords) || readdirSync(nodeRecords).length === 0)
      && readdirSync(join(sd.stateDir, 'sessions')).length === 0);
    expect(Date.now() - lostAt).toBeGreaterThanOrEqual(1_500);
    // the operator's session and its device are untouched
    expect(await devicesOf(theirs)).toEqual(theirDevices);
    await sd.host.run('iscsiadm', ['-m', 'node', '-T', theirs, '-p', portal, '--logout']);
    await sd.host.run('iscsiadm', ['-m', 'node', '-T', theirs, '-p', portal, '-o', 'delete']);
  });
});

describe('healing a multipath volume', () => {
  let sd: SimDriver;
  let second: string;
  beforeAll(async () => {
    sd = await startSimDriver({ multipath: true, configure: fastHealing });
    second = `127.0.0.2:${sd.host.tgtd.port}`;
    await sd.host.tgtadm(['--op', 'new', '--mode', 'portal', '--param', `portal=${second}`]);
  });
  afterAll(async () => {
    await sd?.stop();
  });

  it('a portal down at stage becomes the map\'s second path once it answers; the condition says which path was down', async () => {
    const iqn = 'iqn.2026-11.dev.test:heal-mpath';
    await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }]);
    const staging = join(sd.stateDir, 'heal-mp-staging');
    mkdirSync(staging, { recursive: true });
    await sd.host.setFaults({ portalDown: [second] });
    try {
      await sd.client.call('Node', 'NodeStageVolume', {
        volume_id: 'heal-mp', staging_target_path: staging, volume_capability: mountCapability('ext4'),
        volume_context: { targetPortal: sd.host.portals[0]!, portals: JSON.stringify([second]), iqn, lun: '1' },
      });
      expect(await conditionOf(sd, 'heal-mp', staging)).toEqual({ abnormal: false, message: `1 of 2 paths up (${second}: no session)` });
    } finally {
      await sd.host.setFaults({});
    }
    const sessions = await until('two sessions, both paths in one map', async () => {
      const s = (await sd.host.sessions()).filter((x) => x.target === iqn);
      const dms = new Set(s.flatMap((x) => x.devices.map((d) => d.dm)));
      // the map's slaves are listed a moment after its paths name it
      const dm = [...dms][0];
      return s.length === 2 && dms.size === 1 && dm !== undefined && readdirSync(join(sd.host.root, 'sys/block', dm, 'slaves')).length === 2 && s;
    });
    const dm = sessions[0]!.devices[0]!.dm!;
    expect(readdirSync(join(sd.host.root, 'sys/block', dm, 'slaves'))).toHaveLength(2);
    expect(await conditionOf(sd, 'heal-mp', staging)).toEqual({ abnormal: false, message: 'healthy' });
    await unstageRetrying(sd, 'heal-mp', staging);
    expect((await sd.host.sessions()).filter((s) => s.target === iqn)).toEqual([]);
  });
});
