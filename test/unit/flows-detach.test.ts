// Detach on the in-memory host: a session is logged out only when nothing else uses it (another volume's
// record, another user's LUN), sessions are per (target, portal, iface), a `detaching` record is no user.
import { describe, expect, it } from 'vitest';
import { detach } from '../../src/flows/detach.js';
import { StepTimes } from '../../src/common/step-times.js';
import { stage, unstage } from '../../src/flows/stage.js';
import { clonedIfaceName } from '../../src/common/validate.js';
import { ResourceExhausted, Unavailable } from '../../src/errors.js';
import { FakeHost } from '../fake/host.js';
import { IQN, OWN_INITIATOR, P1, P2, stageSpec, stagingPathOf } from '../fake/specs.js';
import type { SpecOptions } from '../fake/specs.js';

function fakeWithTarget(): FakeHost {
  return new FakeHost().addTarget({ iqn: IQN, portals: [P1, P2], luns: { 0: {}, 1: {}, 2: {}, 5: {} } });
}

async function staged(fake: FakeHost, volumeId: string, o: SpecOptions): Promise<void> {
  await stage(fake.host, stageSpec(volumeId, { block: true, ...o }), null, fake.log);
}

async function unstaged(fake: FakeHost, volumeId: string): Promise<void> {
  await unstage(fake.host, fake.record(volumeId)!, fake.log);
}

describe('detach: the session is reference-counted', () => {
  it('two volumes on one target: the first unstage keeps the session, the second logs out and deletes the node record', async () => {
    const fake = fakeWithTarget();
    await staged(fake, 'vol-a', { lun: 0 });
    await staged(fake, 'vol-b', { lun: 1 });
    expect(fake.sessions()).toHaveLength(1);

    await unstaged(fake, 'vol-a');
    expect(fake.ops('iscsi.logout')).toEqual([]);
    expect(fake.ops('iscsi.deleteNode')).toEqual([]);
    expect(fake.sessions()).toHaveLength(1);
    expect(fake.deviceNames()).toEqual([fake.record('vol-b')!.devices[0]]);
    expect(fake.logs.find((l) => l.msg === 'target still used by other volumes on this node: session kept')).toMatchObject({ stillUsedBy: 1 });

    await unstaged(fake, 'vol-b');
    expect(fake.callsOf('iscsi.logout').map((c) => c.detail)).toEqual([`${P1} ${IQN} default`]);
    expect(fake.sessions()).toEqual([]);
    expect(fake.nodeRecords()).toEqual([]);
    expect(fake.recordIds()).toEqual([]);
  });

  it('the logout and record delete run under the target lock', async () => {
    const fake = fakeWithTarget();
    await staged(fake, 'vol-a', { lun: 0 });
    await unstaged(fake, 'vol-a');
    for (const op of ['metadata.listByTarget', 'iscsi.logout', 'iscsi.deleteNode']) {
      expect(fake.callsOf(op)[0]!.locks, op).toEqual([IQN]);
    }
  });

  it('a volume with its own initiator name has its own session: each volume logs out of its own', async () => {
    const fake = fakeWithTarget();
    const clone = clonedIfaceName('default', 'vol-b');
    await staged(fake, 'vol-a', { lun: 0 });
    await staged(fake, 'vol-b', { lun: 1, initiatorName: OWN_INITIATOR });
    expect(fake.sessions().map((s) => s.iface).sort()).toEqual([clone, 'default'].sort());

    await unstaged(fake, 'vol-a');
    expect(fake.callsOf('iscsi.logout').map((c) => c.detail)).toEqual([`${P1} ${IQN} default`]);
    expect(fake.sessions().map((s) => s.iface)).toEqual([clone]);

    await unstaged(fake, 'vol-b');
    expect(fake.sessions()).toEqual([]);
    expect(fake.ifaceNames()).toEqual([]);
  });

  it('a LUN someone else scanned on the session keeps it (and its node record), with a warning', async () => {
    const fake = fakeWithTarget();
    await staged(fake, 'vol-a', { lun: 0 });
    fake.scanForeignLun(IQN, P1, 5);

    await unstaged(fake, 'vol-a');
    expect(fake.ops('iscsi.logout')).toEqual([]);
    expect(fake.ops('iscsi.deleteNode')).toEqual([]);
    expect(fake.sessions()).toHaveLength(1);
    expect(fake.nodeRecords()).toEqual([`${P1} ${IQN} default`]);
    expect(fake.logs.find((l) => l.msg.startsWith('the session carries LUNs this driver did not stage'))).toMatchObject({ portal: P1, luns: [5] });
    expect(fake.recordIds()).toEqual([]);
  });

  it('a stage under way (its attaching record) counts as a user', async () => {
    const fake = fakeWithTarget();
    await staged(fake, 'vol-a', { lun: 0 });
    fake.putRecord({ ...fake.record('vol-a')!, volumeId: 'vol-b', lun: 1, phase: 'attaching', devices: [] });
    await unstaged(fake, 'vol-a');
    expect(fake.ops('iscsi.logout')).toEqual([]);
    expect(fake.sessions()).toHaveLength(1);
  });

  it('a detaching record does not count as a user: its devices are gone and it needs no session', async () => {
    const fake = fakeWithTarget();
    await staged(fake, 'vol-a', { lun: 0 });
    await staged(fake, 'vol-b', { lun: 1 });
    // vol-b's unstage stopped after its devices were removed (reading the other records failed)
    fake.fail('metadata.listByTarget', new Unavailable('state directory unreadable'), { times: 1 });
    await expect(unstaged(fake, 'vol-b')).rejects.toThrow('state directory unreadable');
    expect(fake.record('vol-b')!.phase).toBe('detaching');
    await unstaged(fake, 'vol-a');
    expect(fake.ops('iscsi.logout')).toHaveLength(1);
    expect(fake.sessions()).toEqual([]);
  });

  it('another target\'s volumes are no users of this one', async () => {
    const fake = fakeWithTarget().addTarget({ iqn: `${IQN}-other`, portals: [P1], luns: { 0: {} } });
    await staged(fake, 'vol-a', { lun: 0 });
    await staged(fake, 'vol-x', { lun: 0, iqn: `${IQN}-other` });
    await unstaged(fake, 'vol-a');
    expect(fake.sessions().map((s) => s.iqn)).toEqual([`${IQN}-other`]);
  });

  it('every volume of a target unstaged at once: one logout and one record delete, not one per volume', async () => {
    const fake = fakeWithTarget();
    for (const [i, lun] of [0, 1, 2].entries()) await staged(fake, `vol-${i}`, { lun });
    await Promise.all([0, 1, 2].map((i) => unstaged(fake, `vol-${i}`)));
    expect(fake.ops('iscsi.logout')).toHaveLength(1);
    expect(fake.ops('iscsi.deleteNode')).toHaveLength(1);
    expect(fake.sessions()).toEqual([]);
    expect(fake.nodeRecords()).toEqual([]);
    expect(fake.recordIds()).toEqual([]);
  });

  it('the node record is deleted again after a new login (the process forgets it was gone)', async () => {
    const fake = fakeWithTarget();
    await staged(fake, 'vol-a', { lun: 0 });
    await unstaged(fake, 'vol-a');
    await staged(fake, 'vol-a', { lun: 0 });
    await unstaged(fake, 'vol-a');
    expect(fake.ops('iscsi.deleteNode')).toHaveLength(2);
    expect(fake.nodeRecords()).toEqual([]);
  });
});

describe('detach: devices', () => {
  it('flushes and removes the multipath map before its path devices, then logs out of every portal', async () => {
    const fake = fakeWithTarget();
    fake.faults.multipathd = 'while-waited';
    await stage(fake.host, stageSpec('vol-a', { portals: [P1, P2] }), null, fake.log);
    await fake.host.mounts.unmount(stagingPathOf('vol-a'));
    await unstaged(fake, 'vol-a');

    const flush = fake.indexOf('multipath.flush', 'dm-0');
    const deletes = fake.callsOf('sysfs.deleteDevice');
    expect(flush).toBeGreaterThanOrEqual(0);
    expect(deletes).toHaveLength(2);
    expect(flush).toBeLessThan(fake.indexOf('sysfs.deleteDevice'));
    expect(fake.indexOf('fs.flushBuffers', '/dev/dm-0')).toBeLessThan(flush);
    expect(fake.callsOf('iscsi.logout').map((c) => c.detail.split(' ')[0]).sort()).toEqual([P1, P2]);
    expect(fake.mapNames()).toEqual([]);
    expect(fake.deviceNames()).toEqual([]);
  });

  it('removes the devices of today (by target and LUN), not the names saved in the record', async () => {
    const fake = fakeWithTarget();
    await staged(fake, 'vol-a', { lun: 0 });
    const rec = { ...fake.record('vol-a')!, devices: ['sdz'] };
    await detach(fake.host, rec, fake.log, new StepTimes());
    expect(fake.callsOf('sysfs.deleteDevice').map((c) => c.detail)).toEqual(['sdb']);
  });

  it('marks the record detaching once the devices are gone and before the logout', async () => {
    const fake = fakeWithTarget();
    await staged(fake, 'vol-a', { lun: 0 });
    await detach(fake.host, fake.record('vol-a')!, fake.log, new StepTimes());
    const marked = fake.indexOf('metadata.save', 'vol-a detaching');
    expect(fake.indexOf('sysfs.deleteDevice')).toBeLessThan(marked);
    expect(marked).toBeLessThan(fake.indexOf('iscsi.logout'));
    expect(fake.record('vol-a')!.phase).toBe('detaching');
  });

  it('a full state directory (the mark cannot be written) does not stop the unstage: logout, node record and record removal go on', async () => {
    const fake = fakeWithTarget();
    await staged(fake, 'vol-a', { lun: 0 });
    fake.fail('metadata.save', new ResourceExhausted('the state directory /var/lib/iscsi-csi is full'), { match: 'detaching' });
    await unstaged(fake, 'vol-a');
    expect(fake.sessions()).toEqual([]);
    expect(fake.ops('iscsi.deleteNode')).toHaveLength(1);
    expect(fake.record('vol-a')).toBeUndefined();
    expect(fake.warnings()).toContain('cannot mark the volume record detaching; detaching anyway');
  });
});
