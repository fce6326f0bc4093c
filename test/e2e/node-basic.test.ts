// The node service on the simulated host with a real tgtd: filesystem and block volumes through the
// whole stage → publish → unpublish → unstage cycle, with the data checked in the target's backing file.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, openSync, closeSync, readFileSync, readdirSync, writeFileSync, writeSync, readSync, fsyncSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { blockCapability, mountCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';
import { codeOf } from '../helpers/client.js';

const MiB = 1024 * 1024;
let sd: SimDriver;
let work: string;

beforeAll(async () => {
  sd = await startSimDriver();
  work = join(sd.stateDir, 'kubelet');
  mkdirSync(work, { recursive: true });
});
afterAll(async () => {
  await sd?.stop();
});

function ctxFor(iqn: string, lun: number, extra: Record<string, string> = {}): Record<string, string> {
  return { targetPortal: sd.host.portals[0]!, iqn, lun: String(lun), ...extra };
}

function stage(volumeId: string, context: Record<string, string>, capability: object, staging: string, secrets: Record<string, string> = {}) {
  return sd.client.call('Node', 'NodeStageVolume', { volume_id: volumeId, staging_target_path: staging, volume_capability: capability, volume_context: context, secrets });
}
function unstage(volumeId: string, staging: string) {
  return sd.client.call('Node', 'NodeUnstageVolume', { volume_id: volumeId, staging_target_path: staging });
}
function publish(volumeId: string, staging: string, target: string, capability: object, readonly = false) {
  return sd.client.call('Node', 'NodePublishVolume', { volume_id: volumeId, staging_target_path: staging, target_path: target, volume_capability: capability, readonly });
}
function unpublish(volumeId: string, target: string) {
  return sd.client.call('Node', 'NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
}
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(dir));
}
function nodeRecords(iqn: string): string[] {
  const dir = join(sd.host.root, 'var/lib/iscsi/nodes', iqn);
  return existsSync(dir) ? readdirSync(dir) : [];
}

describe('filesystem volume', () => {
  const iqn = 'iqn.2026-11.dev.test:fs1';
  let backing: string;
  beforeAll(async () => {
    backing = (await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 64 * MiB }])).luns[0]!.path;
  });

  it('stages (formats an empty LUN), publishes, writes into the backing file, and survives unstage + restage', async () => {
    const staging = join(work, 'fs1-staging');
    const target = join(work, 'fs1-target');
    await stage('fs1', ctxFor(iqn, 1), mountCapability('ext4'), staging);
    expect(mountsUnder(staging)).toEqual([staging]);
    // idempotent: the same call again is OK and does not log in twice
    const sessionsBefore = await sd.host.sessions();
    await stage('fs1', ctxFor(iqn, 1), mountCapability('ext4'), staging);
    expect((await sd.host.sessions()).length).toBe(sessionsBefore.length);
    // another capability → ALREADY_EXISTS
    expect(await codeOf(stage('fs1', ctxFor(iqn, 1), mountCapability('xfs'), staging))).toBe(status.ALREADY_EXISTS);

    await publish('fs1', staging, target, mountCapability('ext4'));
    await publish('fs1', staging, target, mountCapability('ext4'));
    const marker = `marker-${Date.now()}-fs1`;
    writeFileSync(join(target, 'hello.txt'), marker);
    execFileSync('sync', ['-f', join(target, 'hello.txt')]);
    expect(readFileSync(backing).includes(Buffer.from(marker))).toBe(true);

    await unpublish('fs1', target);
    expect(existsSync(target)).toBe(false);
    await unpublish('fs1', target); // not published → OK
    await unstage('fs1', staging);
    expect(mountsUnder(staging)).toEqual([]);
    expect(readdirSync(staging)).toEqual([]);
    expect(await sd.host.sessions()).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
    await unstage('fs1', staging); // not staged → OK

    // restage: the filesystem is found, not reformatted, and the file is there
    await stage('fs1', ctxFor(iqn, 1), mountCapability('ext4'), staging);
    expect(readFileSync(join(staging, 'hello.txt'), 'utf8')).toBe(marker);
    await unstage('fs1', staging);
  });

  it('rejects bad input before running anything', async () => {
    const staging = join(work, 'bad-staging');
    expect(await codeOf(stage('', ctxFor(iqn, 1), mountCapability(), staging))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(stage('x', ctxFor('iqn.bad name', 1), mountCapability(), staging))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(stage('x', ctxFor(iqn, 1), mountCapability(), 'relative/path'))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(stage('x', ctxFor(iqn, 70000), mountCapability(), staging))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(stage('x', { ...ctxFor(iqn, 1), targetPortal: '127.0.0.1:0' }, mountCapability(), staging))).toBe(status.INVALID_ARGUMENT);
    expect(await sd.host.sessions()).toEqual([]);
  });
});

describe('block volume', () => {
  const iqn = 'iqn.2026-11.dev.test:blk1';
  let backing: string;
  beforeAll(async () => {
    backing = (await sd.host.createTarget(iqn, [{ lun: 2, sizeBytes: 32 * MiB }])).luns[0]!.path;
  });

  it('stages without formatting, publishes the device as a file, and writes land in the backing file', async () => {
    const staging = join(work, 'blk1-staging');
    const target = join(work, 'blk1-dev');
    await stage('blk1', ctxFor(iqn, 2), blockCapability(), staging);
    await publish('blk1', staging, target, blockCapability());
    const marker = Buffer.from(`block-marker-${Date.now()}`);
    const fd = openSync(target, 'r+');
    writeSync(fd, marker, 0, marker.length, 5 * MiB);
    fsyncSync(fd);
    closeSync(fd);
    const back = Buffer.alloc(marker.length);
    const bfd = openSync(backing, 'r');
    readSync(bfd, back, 0, back.length, 5 * MiB);
    closeSync(bfd);
    expect(back.equals(marker)).toBe(true);
    // nothing formatted it
    expect(spawnSync('blkid', ['-p', '-o', 'export', backing]).status).toBe(2);

    const stats = await sd.client.call<{ usage: { total: number; unit: string }[]; volume_condition: { abnormal: boolean } }>('Node', 'NodeGetVolumeStats', { volume_id: 'blk1', volume_path: target });
    expect(stats.usage[0]).toMatchObject({ unit: 'BYTES', total: 32 * MiB });
    expect(stats.volume_condition.abnormal).toBe(false);

    await unpublish('blk1', target);
    expect(existsSync(target)).toBe(false);
    await unstage('blk1', staging);
    expect(await sd.host.sessions()).toEqual([]);
  });
});
