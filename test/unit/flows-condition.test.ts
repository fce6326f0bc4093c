// The volume condition and usage on the in-memory host: the first problem an operator would find, in
// order (each path: session, LUN device, device state; then mount, I/O), with the paths that are down
// named, and the probe guard on stuck I/O.
import { describe, expect, it } from 'vitest';
import { stage } from '../../src/flows/stage.js';
import { volumeCondition, volumeHealth } from '../../src/flows/condition.js';
import { FakeHost } from '../fake/host.js';
import { IQN, P1, P2, stageSpec, stagingPathOf, type SpecOptions } from '../fake/specs.js';

const GIB = 1 << 30;
const PATH = stagingPathOf('vol-a');

async function stagedVolume(o: SpecOptions = {}, prepare: (fake: FakeHost) => void = () => undefined): Promise<FakeHost> {
  const fake = new FakeHost().addTarget({ iqn: IQN, portals: [P1, P2], luns: { 0: { sizeBytes: GIB } } });
  prepare(fake);
  await stage(fake.host, stageSpec('vol-a', o), null, fake.log);
  return fake;
}

async function conditionOf(fake: FakeHost): Promise<{ abnormal: boolean; message: string }> {
  return volumeCondition(fake.host, fake.record('vol-a')!, PATH);
}

describe('volume condition', () => {
  it('healthy: session logged in, device running, mount readable', async () => {
    const fake = await stagedVolume();
    const mapsBefore = fake.ops('sysfs.portalHostMap').length;
    expect(await conditionOf(fake)).toEqual({ abnormal: false, message: 'healthy' });
    // one walk of sysfs: the volume's sessions with their state, portals and its LUN
    expect(fake.ops('sysfs.volumePaths')).toHaveLength(1);
    expect(fake.ops('sysfs.portalHostMap')).toHaveLength(mapsBefore);
  });

  it('no session', async () => {
    const fake = await stagedVolume();
    await fake.host.iscsi.logout({ iqn: IQN, portal: { host: '10.0.0.1', port: 3260, family: 'ipv4' }, iface: 'default' });
    expect(await conditionOf(fake)).toEqual({ abnormal: true, message: `no live path to LUN 0 of ${IQN} (${P1}: no session)` });
  });

  it('a session that is not logged in', async () => {
    const fake = await stagedVolume();
    fake.setSessionState(IQN, P1, 'FAILED');
    expect(await conditionOf(fake)).toEqual({ abnormal: true, message: `no live path to LUN 0 of ${IQN} (${P1}: session FAILED)` });
  });

  it('the LUN has no device', async () => {
    const fake = await stagedVolume();
    await fake.host.sysfs.deleteDevice('sdb');
    expect(await conditionOf(fake)).toEqual({ abnormal: true, message: `no live path to LUN 0 of ${IQN} (${P1}: no device for LUN 0)` });
  });

  it('every path device offline is abnormal; one of two is not', async () => {
    const fake = await stagedVolume({ portals: [P1, P2] });
    fake.setDeviceState('sdb', 'offline');
    expect(await conditionOf(fake)).toEqual({ abnormal: false, message: `1 of 2 paths up (${P1}: sdb offline)` });
    fake.setDeviceState('sdc', 'transport-offline');
    expect(await conditionOf(fake)).toEqual({ abnormal: true, message: `no live path to LUN 0 of ${IQN} (${P1}: sdb offline; ${P2}: sdc transport-offline)` });
  });

  it('a portal down since the stage: degraded, not abnormal', async () => {
    const fake = await stagedVolume({ portals: [P1, P2] }, (f) => { f.faults.portalsDown.add(P2); });
    expect(await conditionOf(fake)).toEqual({ abnormal: false, message: `1 of 2 paths up (${P2}: no session)` });
  });

  it('one of two sessions FAILED: degraded, the failed path named', async () => {
    const fake = await stagedVolume({ portals: [P1, P2] });
    fake.setSessionState(IQN, P2, 'FAILED');
    expect(await conditionOf(fake)).toEqual({ abnormal: false, message: `1 of 2 paths up (${P2}: session FAILED)` });
  });

  it('a mount that is gone, stale, or remounted read-only by the kernel', async () => {
    const fake = await stagedVolume();
    fake.breakMount(PATH, 'remounted-ro');
    expect(await conditionOf(fake)).toEqual({ abnormal: true, message: `the filesystem at ${PATH} was remounted read-only (I/O errors?)` });
    fake.breakMount(PATH, 'stale');
    expect(await conditionOf(fake)).toEqual({ abnormal: true, message: `the mount at ${PATH} is stale (the device is gone)` });
    await fake.host.mounts.unmount(PATH);
    expect(await conditionOf(fake)).toEqual({ abnormal: true, message: `${PATH} is not mounted` });
  });

  it('a block volume is not checked for a mount', async () => {
    const fake = await stagedVolume({ block: true });
    expect(await conditionOf(fake)).toEqual({ abnormal: false, message: 'healthy' });
    expect(fake.ops('mounts.')).toEqual([]);
  });

  it('stuck I/O: abnormal within the probe time, and a second call starts no second read', async () => {
    const fake = await stagedVolume();
    fake.faults.ioHangs.add(PATH);
    const limit = fake.cfg.timeouts.volumeProbeMs;
    expect(await conditionOf(fake)).toEqual({ abnormal: true, message: `I/O on ${PATH} does not complete: reading it took longer than ${limit} ms` });
    expect(await conditionOf(fake)).toEqual({ abnormal: true, message: `I/O on ${PATH} is stuck: a read started 0 s ago has not finished` });
    expect(fake.ops('fs.readDirectory')).toHaveLength(1);

    fake.releaseIo();
    await new Promise((resolve) => setImmediate(resolve));
    expect(await conditionOf(fake)).toEqual({ abnormal: false, message: 'healthy' });
    expect(fake.ops('fs.readDirectory')).toHaveLength(2);
  });
});

describe('volume usage', () => {
  it('a filesystem: bytes and inodes from statfs', async () => {
    const fake = await stagedVolume();
    const { condition, usage } = await volumeHealth(fake.host, fake.record('vol-a')!, PATH, true);
    expect(condition.abnormal).toBe(false);
    expect(usage.map((u) => u.unit)).toEqual(['BYTES', 'INODES']);
    expect(usage[0]).toMatchObject({ total: GIB });
  });

  it('a block volume: the device size, from sysfs (no command run)', async () => {
    const fake = await stagedVolume({ block: true });
    const { usage } = await volumeHealth(fake.host, fake.record('vol-a')!, PATH, false);
    expect(usage).toEqual([{ unit: 'BYTES', total: GIB, available: 0, used: 0 }]);
    expect(fake.ops('fs.')).toEqual([]);
  });

  it('stuck I/O: the capacity from sysfs (kubelet drops a reply without usage, and its condition), no statfs piled up behind the stuck read', async () => {
    const fake = await stagedVolume();
    fake.faults.ioHangs.add(PATH);
    const { condition, usage } = await volumeHealth(fake.host, fake.record('vol-a')!, PATH, true);
    expect(condition.abnormal).toBe(true);
    expect(usage).toEqual([{ unit: 'BYTES', total: GIB, available: 0, used: 0 }]);
    expect(fake.ops('fs.statfs')).toEqual([]);
    fake.releaseIo();
  });

  it('stuck I/O after a good read: the last figures read for the path', async () => {
    const fake = await stagedVolume();
    const good = await volumeHealth(fake.host, fake.record('vol-a')!, PATH, true);
    expect(good.usage.map((u) => u.unit)).toEqual(['BYTES', 'INODES']);
    fake.faults.ioHangs.add(PATH);
    const stuck = await volumeHealth(fake.host, fake.record('vol-a')!, PATH, true);
    expect(stuck.condition.abnormal).toBe(true);
    expect(stuck.usage).toEqual(good.usage);
    expect(fake.ops('fs.statfs')).toHaveLength(1);
    fake.releaseIo();
  });

  it('a path with nothing mounted gets no statfs', async () => {
    const fake = await stagedVolume();
    const { usage } = await volumeHealth(fake.host, fake.record('vol-a')!, '/pods/p1/volume', false);
    expect(usage).toEqual([]);
    expect(fake.ops('fs.statfs')).toEqual([]);
  });
});
