// The LUN's identity and the "format only what is empty" rule on the in-memory host: every path's
// WWID is compared with the expected one before anything is written, a mismatch removes the devices
// and writes nothing; an old volume without an expected WWID records its device's; a block publish
// re-checks the recorded device; a device blkid calls empty but whose first or last MiB is not zero
// is never formatted.
import { describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import { stage, type StageSpec } from '../../src/flows/stage.js';
import { checkStagedDevice, multipathWwidOf } from '../../src/flows/identity.js';
import { FakeHost, rejectionOf, type FakeLunSpec } from '../fake/host.js';
import { IQN, P1, P2, stageSpec, type SpecOptions } from '../fake/specs.js';
import { encodeLocation, parseTargetSpec, parseWwid } from '../../src/contract/volume-context.js';

const WWID = 'naa.60000000000000000e00000000010001';
const OTHER = 'naa.6000000000000c00b0f28121d0c215df';

function fakeWith(lun0: FakeLunSpec = { wwid: WWID }): FakeHost {
  return new FakeHost().addTarget({ iqn: IQN, portals: [P1, P2], luns: { 0: lun0, 1: {} } });
}

function spec(volumeId: string, wwid: string | undefined, o: SpecOptions = {}): StageSpec {
  const s = stageSpec(volumeId, o);
  return { ...s, target: { ...s.target, ...(wwid ? { wwid } : {}) } };
}

function nothingLeft(fake: FakeHost): void {
  expect(fake.leftovers()).toEqual({ sessions: [], nodeRecords: [], discoveryRecords: [], clonedIfaces: [], devices: [], maps: [], mounts: [], records: [], marks: [], locks: [] });
}

describe('the LUN identity (wwid)', () => {
  it('the expected WWID on the device: staged, the WWID recorded, checked before the probe', async () => {
    const fake = fakeWith();
    await stage(fake.host, spec('vol-a', WWID), null, fake.log);
    expect(fake.record('vol-a')).toMatchObject({ phase: 'staged', wwid: WWID });
    expect(fake.indexOf('sysfs.deviceWwid', 'sdb')).toBeGreaterThan(-1);
    expect(fake.indexOf('sysfs.deviceWwid')).toBeLessThan(fake.indexOf('fs.probe'));
  });

  it('another WWID than expected: FAILED_PRECONDITION naming both, the device removed, nothing probed or written', async () => {
    const fake = fakeWith();
    const err = await rejectionOf(stage(fake.host, spec('vol-a', OTHER), null, fake.log));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.message).toContain(WWID);
    expect(err.message).toContain(OTHER);
    expect(err.message).toContain('nothing was written');
    expect(fake.ops('fs.')).not.toContain('fs.probe');
    expect(fake.ops('fs.')).not.toContain('fs.mkfs');
    expect(fake.callsOf('mounts.mount')).toEqual([]);
    expect(fake.callsOf('sysfs.deleteDevice').map((c) => c.detail)).toEqual(['sdb']);
    expect(fake.filesystemOf(IQN, 0).fs).toBeNull();
    nothingLeft(fake);
  });

  it('the session stays when another volume uses it; only the wrong device goes', async () => {
    const fake = fakeWith();
    await stage(fake.host, spec('vol-b', undefined, { lun: 1 }), null, fake.log);
    const err = await rejectionOf(stage(fake.host, spec('vol-a', OTHER), null, fake.log));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(fake.sessions()).toHaveLength(1);
    expect(fake.deviceNames()).toEqual(['sdb']);
    expect(fake.recordIds()).toEqual(['vol-b']);
  });

  it('one path of two presents another LU (a stale device behind one portal): the whole stage is refused', async () => {
    const fake = fakeWith();
    fake.faults.staleWwid.set(P2, OTHER);
    const err = await rejectionOf(stage(fake.host, spec('vol-a', WWID, { portals: [P1, P2] }), null, fake.log));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.message).toContain(`on ${P2}`);
    expect(fake.filesystemOf(IQN, 0).fs).toBeNull();
    nothingLeft(fake);
  });

  it('no expected WWID but the paths disagree: refused, nothing written', async () => {
    const fake = fakeWith();
    fake.faults.staleWwid.set(P2, OTHER);
    const err = await rejectionOf(stage(fake.host, spec('vol-a', undefined, { portals: [P1, P2] }), null, fake.log));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.message).toContain('different logical units');
    expect(fake.ops('fs.mkfs')).toEqual([]);
    nothingLeft(fake);
  });

  it('a WWID is expected but the device has none readable: FAILED_PRECONDITION, nothing written', async () => {
    const fake = fakeWith({ wwid: null });
    const err = await rejectionOf(stage(fake.host, spec('vol-a', WWID), null, fake.log));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.message).toContain('no readable WWID');
    expect(fake.ops('fs.mkfs')).toEqual([]);
    nothingLeft(fake);
  });

  it('an old volume without an expected WWID stages as before and records the device\'s', async () => {
    const fake = fakeWith();
    await stage(fake.host, spec('vol-a', undefined), null, fake.log);
    expect(fake.record('vol-a')).toMatchObject({ phase: 'staged', wwid: WWID });
  });

  it('an old volume on a device without a WWID: staged, nothing recorded', async () => {
    const fake = fakeWith({ wwid: null });
    await stage(fake.host, spec('vol-a', undefined), null, fake.log);
    expect(fake.record('vol-a')!.wwid).toBeUndefined();
  });

  it('multipath: both paths and the map carry the identity (dm uuid mpath-3<naa>)', async () => {
    const fake = fakeWith();
    fake.faults.multipathd = 'at-once';
    await stage(fake.host, spec('vol-a', WWID, { portals: [P1, P2] }), null, fake.log);
    expect(fake.record('vol-a')).toMatchObject({ devicePath: '/dev/dm-0', wwid: WWID, multipath: { wwid: `3${WWID.slice(4)}` } });
    expect(fake.callsOf('sysfs.deviceWwid').map((c) => c.detail).sort()).toEqual(['sdb', 'sdc']);
  });

  it('multipath WWIDs of the kernel forms: NAA 3…, EUI-64 2…, others not predictable', () => {
    expect(multipathWwidOf(WWID)).toBe('360000000000000000e00000000010001');
    expect(multipathWwidOf('eui.0123456789abcdef')).toBe('20123456789abcdef');
    expect(multipathWwidOf('t10.IET     VIRTUAL-DISK')).toBeNull();
  });

  it('publish of a block volume re-checks the recorded device: a reused name with another LU is refused', async () => {
    const fake = fakeWith();
    fake.faults.byPathLinks = 'never';
    await stage(fake.host, spec('vol-a', WWID, { block: true }), null, fake.log);
    const record = fake.record('vol-a')!;
    expect(record.devicePath).toBe('/dev/sdb');
    await checkStagedDevice(fake.host, record);
    fake.presentOtherWwid('sdb', OTHER);
    const err = await rejectionOf(checkStagedDevice(fake.host, record));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.message).toContain(OTHER);
    expect(err.message).toContain(WWID);
  });

  it('publish re-check of a multipath block volume: its map still holds the LUN\'s paths', async () => {
    const fake = fakeWith();
    fake.faults.multipathd = 'at-once';
    await stage(fake.host, spec('vol-a', WWID, { block: true, portals: [P1, P2] }), null, fake.log);
    const record = fake.record('vol-a')!;
    await checkStagedDevice(fake.host, record);
    await checkStagedDevice(fake.host, { ...record, devicePath: '/dev/dm-7' }).then(() => { throw new Error('accepted a gone map'); }, (e: Error & { code?: number }) => {
      expect(e.code).toBe(status.FAILED_PRECONDITION);
    });
  });
});

describe('format only what is empty', () => {
  for (const edges of [['first MiB'], ['last MiB'], ['first MiB', 'last MiB']] as const) {
    it(`blkid finds nothing but the ${edges.join(' and ')} is not zero: FAILED_PRECONDITION, not formatted`, async () => {
      const fake = fakeWith({ wwid: WWID, edges: [...edges] });
      const err = await rejectionOf(stage(fake.host, spec('vol-a', WWID), null, fake.log));
      expect(err.code).toBe(status.FAILED_PRECONDITION);
      expect(err.message).toContain('holds data blkid does not recognise');
      expect(err.message).toContain(edges.join(' and '));
      expect(err.message).toContain('refusing to format');
      expect(fake.ops('fs.mkfs')).toEqual([]);
      expect(fake.filesystemOf(IQN, 0).fs).toBeNull();
      nothingLeft(fake);
    });
  }

  it('an empty device (zeros at both ends) is read before mkfs and formatted', async () => {
    const fake = fakeWith();
    await stage(fake.host, spec('vol-a', WWID), null, fake.log);
    expect(fake.indexOf('fs.nonZeroEdges')).toBeGreaterThan(fake.indexOf('fs.probe'));
    expect(fake.indexOf('fs.nonZeroEdges')).toBeLessThan(fake.indexOf('fs.mkfs'));
    expect(fake.filesystemOf(IQN, 0).fs).toBe('ext4');
  });

  it('a device with a filesystem is mounted without reading its ends', async () => {
    const fake = fakeWith({ wwid: WWID, fs: 'ext4', edges: ['first MiB'] });
    await stage(fake.host, spec('vol-a', WWID), null, fake.log);
    expect(fake.ops('fs.nonZeroEdges')).toEqual([]);
    expect(fake.ops('fs.mkfs')).toEqual([]);
  });
});

describe('the wwid contract key', () => {
  it('takes the kernel forms, lowercasing NAA and EUI-64 hex; anything else is INVALID_ARGUMENT', () => {
    expect(parseWwid('naa.6000000000000C00B0F28121D0C215DF')).toBe('naa.6000000000000c00b0f28121d0c215df');
    expect(parseWwid('naa.5000c500a1b2c3d4')).toBe('naa.5000c500a1b2c3d4');
    expect(parseWwid('eui.0123456789abcdef01234567')).toBe('eui.0123456789abcdef01234567');
    expect(parseWwid('t10.IET     VIRTUAL-DISK    beaf11')).toBe('t10.IET     VIRTUAL-DISK    beaf11');
    expect(parseWwid('iqn.2024-01.test:lu1')).toBe('iqn.2024-01.test:lu1');
    for (const bad of ['naa.xyz', '3600140500000000000000000000001', 'sdb', 'naa.', `t10.${'x'.repeat(300)}`, 'naa.60 00']) {
      expect(() => parseWwid(bad), bad).toThrow(/is not a WWID/);
    }
  });

  it('parseTargetSpec carries it, encodeLocation writes it', () => {
    const ctx = { ...encodeLocation({ portals: [P1], iqn: IQN, lun: 3, wwid: WWID }) };
    expect(ctx.wwid).toBe(WWID);
    expect(parseTargetSpec(ctx, {}, 'default').wwid).toBe(WWID);
    expect(parseTargetSpec({ ...ctx, wwid: '' }, {}, 'default').wwid).toBeUndefined();
    expect(() => parseTargetSpec({ ...ctx, wwid: 'bogus' }, {}, 'default')).toThrow(/is not a WWID/);
  });
});
