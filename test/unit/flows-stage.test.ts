// The stage flow on the in-memory host: what a stage leaves, the undo at every point it can fail, an
// undo that cannot finish, and a stage that finds an unstage left half way.
import { describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import { stage, stillStaged, unstage, type StageSpec } from '../../src/flows/stage.js';
import { Internal, Unavailable } from '../../src/errors.js';
import { clonedIfaceName } from '../../src/common/validate.js';
import { FakeHost, rejectionOf } from '../fake/host.js';
import { IQN, OWN_INITIATOR, P1, P2, stageSpec, stagingPathOf } from '../fake/specs.js';

const LUN0_LINK = `/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-${IQN}-lun-0`;

function fakeWithTarget(luns: Record<number, { fs?: string }> = { 0: {}, 1: {} }): FakeHost {
  return new FakeHost().addTarget({ iqn: IQN, portals: [P1, P2], luns });
}

function stageRejects(fake: FakeHost, spec: StageSpec): Promise<Error & { code?: number }> {
  return rejectionOf(stage(fake.host, spec, null, fake.log));
}

function nothingLeft(fake: FakeHost): void {
  expect(fake.leftovers()).toEqual({ sessions: [], nodeRecords: [], discoveryRecords: [], clonedIfaces: [], devices: [], maps: [], mounts: [], records: [], marks: [], locks: [] });
}

describe('stage', () => {
  it('a filesystem volume: formats the empty LUN, mounts it at the staging path, records it staged', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);

    expect(fake.filesystemOf(IQN, 0).fs).toBe('ext4');
    expect(fake.mountPoints()).toEqual([{ source: LUN0_LINK, target: stagingPathOf('vol-a'), fsType: 'ext4', options: [] }]);
    expect(fake.record('vol-a')).toMatchObject({
      phase: 'staged', portals: [P1], iqn: IQN, lun: 0, iface: 'default', devicePath: LUN0_LINK, devices: ['sdb'],
      stagingPath: stagingPathOf('vol-a'), accessType: 'mount', fsType: 'ext4', readonly: false, publishedAt: [],
    });
    expect(fake.record('vol-a')!.stagedAt).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(fake.ops('metadata.save')).toHaveLength(2);
    expect(fake.logs.find((l) => l.msg === 'staged')).toMatchObject({ device: LUN0_LINK, paths: 1, deadPortals: 0 });
  });

  it('a block volume: no probe, mkfs or mount', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a', { block: true }), null, fake.log);
    expect(fake.ops('fs.')).toEqual([]);
    expect(fake.ops('mounts.')).toEqual([]);
    expect(fake.record('vol-a')).toMatchObject({ phase: 'staged', accessType: 'block', devicePath: LUN0_LINK });
  });

  it('a LUN that holds its filesystem already is mounted, not formatted', async () => {
    const fake = fakeWithTarget({ 0: { fs: 'xfs' } });
    await stage(fake.host, stageSpec('vol-a', { fsType: 'xfs' }), null, fake.log);
    expect(fake.ops('fs.mkfs')).toEqual([]);
    expect(fake.mountPoints()).toHaveLength(1);
  });

  it('a LUN that holds another filesystem is refused, left as it is, and nothing else is left', async () => {
    const fake = fakeWithTarget({ 0: { fs: 'xfs' } });
    const e = await stageRejects(fake, stageSpec('vol-a', { fsType: 'ext4' }));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.message).toBe(`${LUN0_LINK} already holds a xfs filesystem, not the requested ext4; refusing to reformat it (its data is left untouched)`);
    expect(fake.filesystemOf(IQN, 0).fs).toBe('xfs');
    nothingLeft(fake);
  });

  it('an empty LUN staged read-only is refused (nothing to mount) and undone', async () => {
    const fake = fakeWithTarget();
    const e = await stageRejects(fake, stageSpec('vol-a', { readonly: true }));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(fake.ops('fs.mkfs')).toEqual([]);
    nothingLeft(fake);
  });

  it('a read-only stage mounts read-only', async () => {
    const fake = fakeWithTarget({ 0: { fs: 'ext4' } });
    await stage(fake.host, stageSpec('vol-a', { readonly: true }), null, fake.log);
    expect(fake.mountPoints()[0]!.options).toEqual(['ro']);
  });

  it('a volume staged again keeps the targets it is published at', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);
    const existing = { ...fake.record('vol-a')!, publishedAt: ['/pods/p1/volume'] };
    await stage(fake.host, stageSpec('vol-a'), existing, fake.log);
    expect(fake.record('vol-a')!.publishedAt).toEqual(['/pods/p1/volume']);
  });

  it('stillStaged: true while device and mount are there, false once either is gone', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);
    const rec = fake.record('vol-a')!;
    expect(await stillStaged(fake.host, rec)).toBe(true);
    await fake.host.mounts.unmount(rec.stagingPath);
    expect(await stillStaged(fake.host, rec)).toBe(false);

    await stage(fake.host, stageSpec('vol-b', { lun: 1, block: true }), null, fake.log);
    const block = fake.record('vol-b')!;
    expect(await stillStaged(fake.host, block)).toBe(true);
    await fake.host.sysfs.deleteDevice(block.devices[0]!);
    expect(await stillStaged(fake.host, block)).toBe(false);
  });
});

describe('a failed stage leaves nothing it made', () => {
  // every point a stage can fail at, with a cloned iface and two paths so that every kind of leftover is possible
  const failurePoints: { point: string; inject: (fake: FakeHost) => void; code: number }[] = [
    { point: 'the login', inject: (f) => f.fail('iscsi.login', { exit: 24 }), code: status.FAILED_PRECONDITION },
    { point: 'the scan, after the login', inject: (f) => f.fail('sysfs.scanLun', new Unavailable('scanning LUN 0 failed')), code: status.UNAVAILABLE },
    { point: 'the device wait', inject: (f) => { f.faults.noDevice.add(P1).add(P2); }, code: status.DEADLINE_EXCEEDED },
    { point: 'the multipath step, after the device wait', inject: (f) => f.fail('sysfs.multipathHolder', new Internal('reading holders failed'), { times: 1 }), code: status.INTERNAL },
    { point: 'the probe, after the device wait', inject: (f) => f.fail('fs.probe', new Unavailable('device cannot be read')), code: status.UNAVAILABLE },
    { point: 'mkfs', inject: (f) => f.fail('fs.mkfs', new Internal('creating a ext4 filesystem failed (mkfs.ext4 exit 1)')), code: status.INTERNAL },
    { point: 'the mount, after mkfs', inject: (f) => f.fail('mounts.mount', new Internal('mounting failed (mount exit 32)')), code: status.INTERNAL },
    { point: 'the staged record, after the mount', inject: (f) => f.fail('metadata.save', new Internal('disk full'), { match: 'staged' }), code: status.INTERNAL },
  ];

  for (const { point, inject, code } of failurePoints) {
    it(`failing at ${point}: no session, node record, clone, device, map, mount or record`, async () => {
      const fake = new FakeHost().addTarget({ iqn: IQN, portals: [P1, P2], luns: { 0: {} } });
      fake.faults.multipathd = 'while-waited';
      inject(fake);
      const e = await stageRejects(fake, stageSpec('vol-a', { portals: [P1, P2], initiatorName: OWN_INITIATOR }));
      expect(e.code).toBe(code);
      nothingLeft(fake);
      expect(fake.warnings()).not.toContain('cleanup after a failed stage is incomplete; the volume record is kept for unstage');
    });
  }

  it('undoes in order: unmount, devices, the record marked detaching, logout, node record, clone, record', async () => {
    const fake = fakeWithTarget().fail('metadata.save', new Internal('disk full'), { match: 'staged' });
    await stageRejects(fake, stageSpec('vol-a', { initiatorName: OWN_INITIATOR }));
    const undo = fake.calls.slice(fake.indexOf('metadata.save', 'staged') + 1).map((c) => c.op)
      .filter((op) => ['mounts.unmount', 'sysfs.deleteDevice', 'metadata.save', 'iscsi.logout', 'iscsi.deleteNode', 'iscsi.deleteIface', 'metadata.remove'].includes(op));
    expect(undo).toEqual(['mounts.unmount', 'sysfs.deleteDevice', 'metadata.save', 'iscsi.logout', 'iscsi.deleteNode', 'iscsi.deleteIface', 'metadata.remove']);
  });

  it('a failure before the record is saved changes nothing and undoes nothing', async () => {
    const fake = fakeWithTarget().fail('metadata.save', new Internal('disk full'), { match: 'attaching' });
    const e = await stageRejects(fake, stageSpec('vol-a'));
    expect(e.message).toBe('disk full');
    expect(fake.ops('iscsi.')).toEqual([]);
    expect(fake.ops('metadata.remove')).toEqual([]);
  });

  it('an undo that cannot finish (its logout fails) keeps the record, marked detaching, for unstage; the stage answers its own error', async () => {
    const fake = fakeWithTarget().fail('mounts.mount', new Internal('mounting failed (mount exit 32)')).fail('iscsi.logout', { exit: 9 });
    const e = await stageRejects(fake, stageSpec('vol-a'));
    expect(e.message).toBe('mounting failed (mount exit 32)');
    expect(fake.record('vol-a')).toMatchObject({ phase: 'detaching', portals: [P1] });
    expect(fake.sessions()).toHaveLength(1);
    expect(fake.deviceNames()).toEqual([]);
    expect(fake.warnings()).toContain('cleanup after a failed stage is incomplete; the volume record is kept for unstage');
  });

  it('a failed stage of a second volume keeps the session the first one uses', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a', { lun: 0 }), null, fake.log);
    fake.fail('fs.mkfs', new Internal('mkfs failed'));
    await stageRejects(fake, stageSpec('vol-b', { lun: 1 }));
    expect(fake.ops('iscsi.logout')).toEqual([]);
    expect(fake.sessions()).toHaveLength(1);
    expect(fake.recordIds()).toEqual(['vol-a']);
    expect(fake.deviceNames()).toHaveLength(1);
  });
});

describe('a stage that finds an unstage left half way (a detaching record)', () => {
  /** vol-a staged through `portals`, then an unstage whose logout failed: its record is `detaching`, its session still there. */
  async function halfUnstaged(fake: FakeHost, portals: string[]): Promise<void> {
    await stage(fake.host, stageSpec('vol-a', { portals }), null, fake.log);
    fake.fail('iscsi.logout', { exit: 4 }, { times: 1 });
    await fake.host.mounts.unmount(stagingPathOf('vol-a'));
    await expect(unstage(fake.host, fake.record('vol-a')!, fake.log)).rejects.toThrow('iscsiadm exit 4');
    expect(fake.record('vol-a')!.phase).toBe('detaching');
  }

  it('finishes that unstage first: the session to a portal the new request no longer names is logged out before the new login', async () => {
    const fake = fakeWithTarget();
    await halfUnstaged(fake, [P2]);
    const before = fake.calls.length;
    await stage(fake.host, stageSpec('vol-a', { portals: [P1] }), fake.record('vol-a')!, fake.log);

    const calls = fake.calls.slice(before);
    const logout = calls.findIndex((c) => c.op === 'iscsi.logout' && c.detail.startsWith(P2));
    const login = calls.findIndex((c) => c.op === 'iscsi.login' && c.detail.startsWith(P1));
    expect(logout).toBeGreaterThanOrEqual(0);
    expect(logout).toBeLessThan(login);
    expect(fake.sessions().map((s) => s.portal)).toEqual([P1]);
    expect(fake.nodeRecords()).toEqual([`${P1} ${IQN} default`]);
    expect(fake.record('vol-a')).toMatchObject({ phase: 'staged', portals: [P1] });
  });

  it('stages anyway when finishing it fails again, with a warning', async () => {
    const fake = fakeWithTarget();
    await halfUnstaged(fake, [P2]);
    fake.fail('iscsi.logout', { exit: 4 }, { times: 1 });
    await stage(fake.host, stageSpec('vol-a', { portals: [P1] }), fake.record('vol-a')!, fake.log);
    expect(fake.warnings()).toContain('finishing the earlier unstage failed; staging anyway');
    expect(fake.record('vol-a')!.phase).toBe('staged');
  });

  it('an existing staged or attaching record is not unstaged first', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);
    const before = fake.calls.length;
    await stage(fake.host, stageSpec('vol-a'), fake.record('vol-a')!, fake.log);
    expect(fake.calls.slice(before).map((c) => c.op)).not.toContain('sysfs.deleteDevice');
  });
});

describe('unstage', () => {
  it('removes the devices, logs out, deletes node record and clone, then the record', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a', { initiatorName: OWN_INITIATOR }), null, fake.log);
    await fake.host.mounts.unmount(stagingPathOf('vol-a'));
    await unstage(fake.host, fake.record('vol-a')!, fake.log);
    nothingLeft(fake);
    expect(fake.callsOf('iscsi.deleteIface').map((c) => c.detail)).toEqual([clonedIfaceName('default', 'vol-a')]);
    expect(fake.logs.find((l) => l.msg === 'unstaged')).toMatchObject({ iqn: IQN, lun: 0 });
  });

  it('a record whose devices and session are already gone (after a reboot) is unstaged from the record alone', async () => {
    const fake = fakeWithTarget();
    fake.putRecord({
      volumeId: 'vol-a', phase: 'staged', portals: [P1], iqn: IQN, lun: 0, iface: 'default', devices: ['sdq'], devicePath: LUN0_LINK,
      stagingPath: stagingPathOf('vol-a'), accessType: 'block', readonly: false, publishedAt: [],
    });
    await unstage(fake.host, fake.record('vol-a')!, fake.log);
    expect(fake.ops('iscsi.logout')).toEqual([]);
    expect(fake.ops('iscsi.deleteNode')).toHaveLength(1);
    nothingLeft(fake);
  });

  it('a failed device removal leaves the record as it was', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a', { block: true }), null, fake.log);
    fake.fail('sysfs.deleteDevice', new Unavailable('deleting SCSI device sdb failed'));
    await expect(unstage(fake.host, fake.record('vol-a')!, fake.log)).rejects.toThrow(Unavailable);
    expect(fake.record('vol-a')!.phase).toBe('staged');
  });
});
