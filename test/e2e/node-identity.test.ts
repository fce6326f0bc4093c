// Data safety beyond the anchors, on the simulated host with a real tgtd: the node stages a LUN only
// when its device is the logical unit the volume names (the kernel's WWID, from tgtd's VPD page 0x83),
// and formats only a device that is empty to blkid AND zero in its first and last MiB. Every refusal
// is FAILED_PRECONDITION, leaves no device behind and the LUN's backing file byte for byte unchanged.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { blockCapability, mountCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';
import { tgtLunWwid } from '../../src/controller/tgt/wwid.js';
import { volumeKey } from '../../src/common/validate.js';

const MiB = 1024 * 1024;
const LUN_BYTES = 32 * MiB;
let sd: SimDriver;
let work: string;

beforeAll(async () => {
  sd = await startSimDriver({ mode: 'all' });
  work = join(sd.stateDir, 'kubelet');
  mkdirSync(work, { recursive: true });
});
afterAll(async () => {
  await sd?.stop();
});
afterEach(async () => {
  await sd.host.setFaults({});
});

interface Lun { iqn: string; path: string; wwid: string }

/** A target with LUN 1 carrying SCSI ids as the tgt backend sets them; its wwid as the controller computes it. */
async function lunWithIds(name: string): Promise<Lun> {
  const iqn = `iqn.2026-11.dev.test:${name}`;
  const t = await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: LUN_BYTES }]);
  const scsiId = `csi${createHash('sha256').update(name).digest('hex').slice(0, 16)}`;
  await sd.host.tgtadm(['--op', 'update', '--mode', 'logicalunit', '--tid', String(t.tid), '--lun', '1', '--params', `scsi_id=${scsiId},scsi_sn=${scsiId.slice(3)}`]);
  return { iqn, path: t.luns[0]!.path, wwid: tgtLunWwid(scsiId) };
}

function ctx(lun: Lun, extra: Record<string, string> = {}): Record<string, string> {
  return { targetPortal: sd.host.portals[0]!, iqn: lun.iqn, lun: '1', ...extra };
}

function stage(volumeId: string, context: Record<string, string>, capability: object = mountCapability('ext4')) {
  return sd.client.call('Node', 'NodeStageVolume', { volume_id: volumeId, staging_target_path: join(work, `${volumeId}-staging`), volume_capability: capability, volume_context: context });
}
function unstage(volumeId: string) {
  return sd.client.call('Node', 'NodeUnstageVolume', { volume_id: volumeId, staging_target_path: join(work, `${volumeId}-staging`) });
}
async function refusal(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  return p.then(() => { throw new Error('expected a refusal'); }, (e: { code: number; details: string }) => e);
}
function digest(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}
function kernelWwidOf(device: string): string {
  return readFileSync(join(sd.host.paths.sys, 'block', device, 'device/wwid'), 'utf8').trim();
}
async function devicesOf(iqn: string): Promise<string[]> {
  return (await sd.host.sessions()).filter((s) => s.target === iqn).flatMap((s) => s.devices.map((d) => d.name ?? d.hctl));
}
function writeAt(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  try { writeSync(fd, bytes, 0, bytes.length, offset); } finally { closeSync(fd); }
}

describe('LUN identity', () => {
  it('the expected wwid is the device\'s: staged and formatted; the record keeps the wwid', async () => {
    const lun = await lunWithIds('id-right');
    await stage('id-right', ctx(lun, { wwid: lun.wwid }));
    const [device] = await devicesOf(lun.iqn);
    expect(kernelWwidOf(device!)).toBe(lun.wwid);
    const record = JSON.parse(readFileSync(join(sd.stateDir, 'volumes', volumeKey('id-right'), 'iscsi.json'), 'utf8')) as { wwid?: string };
    expect(record.wwid).toBe(lun.wwid);
    await unstage('id-right');
  });

  it('a wrong expected wwid: FAILED_PRECONDITION naming both, the device gone, the backing file unchanged', async () => {
    const lun = await lunWithIds('id-wrong');
    const before = digest(lun.path);
    const expected = 'naa.6000000000000c00ffffffffffffffff';
    const err = await refusal(stage('id-wrong', ctx(lun, { wwid: expected })));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain(expected);
    expect(err.details).toContain(lun.wwid);
    expect(await devicesOf(lun.iqn)).toEqual([]);
    expect(await sd.host.sessions()).toEqual([]);
    expect(digest(lun.path)).toBe(before);
  });

  it('a LUN device presenting another logical unit (a stale device): refused the same way', async () => {
    const lun = await lunWithIds('id-stale');
    const before = digest(lun.path);
    await sd.host.setFaults({ staleLu: [{ iqn: lun.iqn, lun: 1, scsiId: 'csi00000000deadbeef' }] });
    const err = await refusal(stage('id-stale', ctx(lun, { wwid: lun.wwid })));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain(tgtLunWwid('csi00000000deadbeef'));
    expect(err.details).toContain(lun.wwid);
    expect(await devicesOf(lun.iqn)).toEqual([]);
    expect(digest(lun.path)).toBe(before);
  });

  it('a malformed wwid is INVALID_ARGUMENT before any login', async () => {
    const lun = await lunWithIds('id-bad');
    const err = await refusal(stage('id-bad', ctx(lun, { wwid: 'naa.xyz' })));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(await sd.host.sessions()).toEqual([]);
  });

  it('a volume without a wwid (an old PV) stages as before; a block publish re-checks the recorded device', async () => {
    const lun = await lunWithIds('id-old');
    await stage('id-old', ctx(lun), blockCapability());
    const record = JSON.parse(readFileSync(join(sd.stateDir, 'volumes', volumeKey('id-old'), 'iscsi.json'), 'utf8')) as { wwid?: string };
    expect(record.wwid).toBe(lun.wwid);
    const target = join(work, 'id-old-target');
    await sd.client.call('Node', 'NodePublishVolume', { volume_id: 'id-old', staging_target_path: join(work, 'id-old-staging'), target_path: target, volume_capability: blockCapability(), readonly: false });
    await sd.client.call('Node', 'NodeUnpublishVolume', { volume_id: 'id-old', target_path: target });
    await unstage('id-old');
  });

  it('the controller hands out the wwid the node\'s kernel shows (CreateVolume → ControllerPublish → NodeStage)', async () => {
    const cap = mountCapability('ext4');
    const { volume } = await sd.client.call<{ volume: { volume_id: string; volume_context: Record<string, string> } }>('Controller', 'CreateVolume', {
      name: 'id-provisioned', capacity_range: { required_bytes: 16 * MiB }, volume_capabilities: [cap], parameters: {},
    });
    const nodeId = sd.cfg.nodeId!;
    const { publish_context } = await sd.client.call<{ publish_context: Record<string, string> }>('Controller', 'ControllerPublishVolume', { volume_id: volume.volume_id, node_id: nodeId, volume_capability: cap, volume_context: volume.volume_context });
    expect(publish_context.wwid).toMatch(/^naa\.6[0-9a-f]{31}$/);
    expect(volume.volume_context.wwid).toBe(publish_context.wwid);
    const staging = join(work, 'id-provisioned-staging');
    await sd.client.call('Node', 'NodeStageVolume', { volume_id: volume.volume_id, staging_target_path: staging, volume_capability: cap, volume_context: volume.volume_context, publish_context });
    const [device] = await devicesOf(volume.volume_context.iqn!);
    expect(kernelWwidOf(device!)).toBe(publish_context.wwid);
    await sd.client.call('Node', 'NodeUnstageVolume', { volume_id: volume.volume_id, staging_target_path: staging });
    await sd.client.call('Controller', 'ControllerUnpublishVolume', { volume_id: volume.volume_id, node_id: nodeId });
    await sd.client.call('Controller', 'DeleteVolume', { volume_id: volume.volume_id });
  });
});

describe('format only what is empty', () => {
  for (const where of ['first', 'last'] as const) {
    it(`random bytes in the ${where} MiB (nothing blkid knows): not formatted, FAILED_PRECONDITION, data unchanged`, async () => {
      const lun = await lunWithIds(`zero-${where}`);
      // not at offset 0 for the last MiB's case: the first MiB stays zero, so only the tail tells
      writeAt(lun.path, where === 'first' ? 4096 : LUN_BYTES - MiB + 12345, randomBytes(64 * 1024));
      const before = digest(lun.path);
      const err = await refusal(stage(`zero-${where}`, ctx(lun, { wwid: lun.wwid })));
      expect(err.code).toBe(status.FAILED_PRECONDITION);
      expect(err.details).toContain('holds data blkid does not recognise');
      expect(err.details).toContain(`${where} MiB`);
      expect(err.details).toContain('refusing to format');
      expect(await devicesOf(lun.iqn)).toEqual([]);
      expect(digest(lun.path)).toBe(before);
    });
  }

  it('a LUKS2-like header blkid does not accept (bad checksum) is data too', async () => {
    const lun = await lunWithIds('zero-luks');
    const header = Buffer.alloc(4096);
    Buffer.from('LUKS\xba\xbe', 'latin1').copy(header, 0);
    header.writeUInt16BE(2, 6); // version 2
    randomBytes(64).copy(header, 0x1c0); // checksum area: garbage
    writeAt(lun.path, 0, header);
    const before = digest(lun.path);
    const err = await refusal(stage('zero-luks', ctx(lun)));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(digest(lun.path)).toBe(before);
  });
});
