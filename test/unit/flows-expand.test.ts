// Expansion on the in-memory host: rescan every path → wait for the new size → multipath resize →
// filesystem grow, and the answers when the LUN did not grow or is not attached.
import { describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import { expand } from '../../src/flows/expand.js';
import { stage } from '../../src/flows/stage.js';
import type { VolumeRecord } from '../../src/node-host/metadata.js';
import { FakeHost, rejectionOf } from '../fake/host.js';
import { IQN, P1, P2, stageSpec, type SpecOptions } from '../fake/specs.js';

const GIB = 1 << 30;

async function stagedVolume(o: SpecOptions & { multipath?: boolean } = {}): Promise<{ fake: FakeHost; record: VolumeRecord & { devicePath: string } }> {
  const fake = new FakeHost().addTarget({ iqn: IQN, portals: [P1, P2], luns: { 0: { sizeBytes: GIB } } });
  if (o.multipath) fake.faults.multipathd = 'while-waited';
  await stage(fake.host, stageSpec('vol-a', o), null, fake.log);
  const record = fake.record('vol-a')!;
  return { fake, record: { ...record, devicePath: record.devicePath! } };
}

describe('expand', () => {
  it('rescans every path, waits for the size, grows the filesystem and answers the new size', async () => {
    const { fake, record } = await stagedVolume({ portals: [P1, P2] });
    fake.growLun(IQN, 0, 2 * GIB);
    const size = await expand(fake.host, record, { requiredBytes: 2 * GIB, growFilesystem: true }, fake.log);

    expect(size).toBe(2 * GIB);
    expect(fake.callsOf('sysfs.rescanDevice').map((c) => c.detail)).toEqual(record.devices);
    expect(fake.callsOf('sizes.waitForSizes').map((c) => c.detail)).toEqual([`${record.devices.join(',')} ${2 * GIB}`]);
    expect(fake.indexOf('sizes.waitForSizes')).toBeGreaterThan(fake.indexOf('sysfs.rescanDevice', record.devices[1]));
    expect(fake.filesystemOf(IQN, 0)).toEqual({ fs: 'ext4', bytes: 2 * GIB });
    expect(fake.indexOf('fs.resize')).toBeGreaterThan(fake.indexOf('fs.blockDeviceSize'));
  });

  it('multipath: the map is resized after its paths were rescanned, before its size is read', async () => {
    const { fake, record } = await stagedVolume({ portals: [P1, P2], multipath: true });
    expect(record.devicePath).toBe('/dev/dm-0');
    fake.growLun(IQN, 0, 2 * GIB);
    const size = await expand(fake.host, record, { requiredBytes: 2 * GIB, growFilesystem: true }, fake.log);

    expect(size).toBe(2 * GIB);
    const resize = fake.indexOf('multipath.resize', 'mpatha');
    expect(resize).toBeGreaterThan(fake.indexOf('sizes.waitForSizes'));
    expect(resize).toBeLessThan(fake.indexOf('fs.blockDeviceSize', '/dev/dm-0'));
  });

  it('a LUN that did not grow: OUT_OF_RANGE, the filesystem left as it is', async () => {
    const { fake, record } = await stagedVolume();
    const e = await rejectionOf(expand(fake.host, record, { requiredBytes: 2 * GIB, growFilesystem: true }, fake.log));
    expect(e.code).toBe(status.OUT_OF_RANGE);
    expect(e.message).toBe(`the device is ${GIB} bytes after a rescan, less than the requested ${2 * GIB}: expand the LUN on the target first`);
    expect(fake.ops('fs.resize')).toEqual([]);
  });

  it('no size asked for: no wait, whatever the LUN has now', async () => {
    const { fake, record } = await stagedVolume();
    fake.growLun(IQN, 0, 3 * GIB);
    expect(await expand(fake.host, record, { requiredBytes: 0, growFilesystem: true }, fake.log)).toBe(3 * GIB);
    expect(fake.ops('sizes.waitForSizes')).toEqual([]);
  });

  it('a block volume (or a filesystem volume asked for as block) grows its device only', async () => {
    const { fake, record } = await stagedVolume();
    fake.growLun(IQN, 0, 2 * GIB);
    await expand(fake.host, record, { requiredBytes: 2 * GIB, growFilesystem: false }, fake.log);
    expect(fake.ops('fs.resize')).toEqual([]);
    expect(fake.filesystemOf(IQN, 0).bytes).toBe(GIB);
  });

  it('a LUN with no device on this node: FAILED_PRECONDITION, nothing rescanned', async () => {
    const { fake, record } = await stagedVolume({ block: true });
    await fake.host.sysfs.deleteDevice(record.devices[0]!);
    const e = await rejectionOf(expand(fake.host, record, { requiredBytes: 2 * GIB, growFilesystem: false }, fake.log));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.message).toBe(`LUN 0 of ${IQN} has no device on this node; stage it again`);
    expect(fake.ops('sysfs.rescanDevice')).toEqual([]);
  });
});
