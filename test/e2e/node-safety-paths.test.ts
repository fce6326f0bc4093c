// Paths kubelet hands over that the driver must not mount on as they are: a staging or target path
// that is a symbolic link (mount(8) would follow it: the volume would land on the link's destination,
// hiding what is there, and unpublish/unstage would not find it), or an existing entry of the wrong
// kind (a file where a filesystem is mounted, a directory where a block device is bound). Each is
// refused with FAILED_PRECONDITION naming the path before anything is mounted (for a stage: before the
// login), and what is at the destination is left as it was. And unstage never deletes a device whose
// filesystem is still mounted somewhere.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { blockCapability, mountCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';
import type { CallError } from '../helpers/client.js';

const MiB = 1024 * 1024;
let sd: SimDriver;
let work: string;
/** a stand-in for /etc: a directory holding a file the driver must never hide or touch */
let etc: string;
const PASSWD = 'root:x:0:0:root:/root:/bin/sh\n';

beforeAll(async () => {
  sd = await startSimDriver();
  work = join(sd.stateDir, 'kubelet');
  etc = join(sd.stateDir, 'etc');
  mkdirSync(work, { recursive: true });
  mkdirSync(etc, { recursive: true });
  writeFileSync(join(etc, 'passwd'), PASSWD);
});
afterAll(async () => {
  await sd?.stop();
});

function ctxFor(iqn: string, lun: number): Record<string, string> {
  return { targetPortal: sd.host.portals[0]!, iqn, lun: String(lun) };
}
function stage(volumeId: string, iqn: string, lun: number, capability: object, staging: string) {
  return sd.client.call('Node', 'NodeStageVolume', { volume_id: volumeId, staging_target_path: staging, volume_capability: capability, volume_context: ctxFor(iqn, lun) });
}
function unstage(volumeId: string, staging: string) {
  return sd.client.call('Node', 'NodeUnstageVolume', { volume_id: volumeId, staging_target_path: staging });
}
function publish(volumeId: string, staging: string, target: string, capability: object) {
  return sd.client.call('Node', 'NodePublishVolume', { volume_id: volumeId, staging_target_path: staging, target_path: target, volume_capability: capability, readonly: false });
}
function unpublish(volumeId: string, target: string) {
  return sd.client.call('Node', 'NodeUnpublishVolume', { volume_id: volumeId, target_path: target });
}
async function failure(p: Promise<unknown>): Promise<CallError> {
  return p.then(() => { throw new Error('expected the call to fail, but it answered OK'); }, (e: CallError) => e);
}
/** mount points at or under `dir` (as the kernel lists them) */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m === dir || m.startsWith(`${dir}/`));
}
function etcUntouched(): void {
  expect(mountsUnder(etc)).toEqual([]);
  expect(readdirSync(etc)).toEqual(['passwd']);
  expect(readFileSync(join(etc, 'passwd'), 'utf8')).toBe(PASSWD);
}
async function sessionsOf(iqn: string): Promise<unknown[]> {
  return (await sd.host.sessions()).filter((s) => s.target === iqn);
}

describe('a symbolic link as staging or target path', () => {
  const iqn = 'iqn.2026-11.dev.test:links';
  beforeAll(async () => {
    await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }, { lun: 2, sizeBytes: 32 * MiB }]);
  });

  it('a staging path linked to another directory is refused before the login; nothing is mounted at the destination', async () => {
    const staging = join(work, 'link-staging');
    symlinkSync(etc, staging);
    const err = await failure(stage('link-staging', iqn, 1, mountCapability('ext4'), staging));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain(`${staging} is a symbolic link`);
    expect(await sessionsOf(iqn)).toEqual([]);
    etcUntouched();
    expect(lstatSync(staging).isSymbolicLink()).toBe(true);
    // kubelet's unstage of the refused volume: OK, the link and its destination left alone
    await unstage('link-staging', staging);
    etcUntouched();
    expect(lstatSync(staging).isSymbolicLink()).toBe(true);
  });

  it('a filesystem target path linked to another volume\'s staging mount or to a directory is refused; unpublish leaves the destination alone', async () => {
    const stagingA = join(work, 'a-staging');
    const stagingB = join(work, 'b-staging');
    await stage('links-a', iqn, 1, mountCapability('ext4'), stagingA);
    await stage('links-b', iqn, 2, mountCapability('ext4'), stagingB);
    writeFileSync(join(stagingA, 'a.txt'), 'volume a');
    const toOtherVolume = join(work, 'b-target-to-a');
    const toEtc = join(work, 'b-target-to-etc');
    symlinkSync(stagingA, toOtherVolume);
    symlinkSync(etc, toEtc);
    for (const target of [toOtherVolume, toEtc]) {
      const err = await failure(publish('links-b', stagingB, target, mountCapability('ext4')));
      expect(err.code).toBe(status.FAILED_PRECONDITION);
      expect(err.details).toContain(`${target} is a symbolic link`);
      await unpublish('links-b', target);
      expect(lstatSync(target).isSymbolicLink()).toBe(true);
    }
    // volume a still shows its own filesystem, once; b is mounted only at its staging path
    expect(mountsUnder(stagingA)).toEqual([stagingA]);
    expect(readFileSync(join(stagingA, 'a.txt'), 'utf8')).toBe('volume a');
    expect(mountsUnder(stagingB)).toEqual([stagingB]);
    etcUntouched();
    await unstage('links-b', stagingB);
    await unstage('links-a', stagingA);
    expect(await sessionsOf(iqn)).toEqual([]);
  });

  it('a block target path linked to a file is refused; the file keeps its content', async () => {
    const staging = join(work, 'blk-link-staging');
    const target = join(work, 'blk-link-target');
    await stage('links-blk', iqn, 2, blockCapability(), staging);
    symlinkSync(join(etc, 'passwd'), target);
    const err = await failure(publish('links-blk', staging, target, blockCapability()));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain(`${target} is a symbolic link`);
    etcUntouched();
    await unpublish('links-blk', target);
    await unstage('links-blk', staging);
    etcUntouched();
    expect(await sessionsOf(iqn)).toEqual([]);
  });

  it('unstage refuses while the volume\'s filesystem is still mounted elsewhere (e.g. through a link by an older driver), leaving the device in place', async () => {
    const staging = join(work, 'leftover-staging');
    const elsewhere = join(work, 'leftover-elsewhere');
    mkdirSync(elsewhere);
    await stage('leftover', iqn, 1, mountCapability('ext4'), staging);
    execFileSync('mount', ['--bind', staging, elsewhere]);
    try {
      const err = await failure(unstage('leftover', staging));
      expect(err.code).toBe(status.FAILED_PRECONDITION);
      expect(err.details).toContain(elsewhere);
      // nothing was deleted under the mount: the session and the files are there
      expect(await sessionsOf(iqn)).toHaveLength(1);
      writeFileSync(join(elsewhere, 'still.txt'), 'works');
    } finally {
      execFileSync('umount', [elsewhere]);
    }
    await unstage('leftover', staging);
    expect(mountsUnder(staging)).toEqual([]);
    expect(await sessionsOf(iqn)).toEqual([]);
  });
});

describe('a publish found half done', () => {
  const iqn = 'iqn.2026-11.dev.test:half-publish';
  beforeAll(async () => {
    await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }]);
  });

  it('the volume already bound at the target path (a driver killed after mount --bind, before its record): the retried publish answers OK and unpublish removes it', async () => {
    const staging = join(work, 'half-staging');
    const target = join(work, 'half-target');
    await stage('half', iqn, 1, mountCapability('ext4'), staging);
    mkdirSync(target);
    execFileSync('mount', ['--bind', staging, target]);
    await publish('half', staging, target, mountCapability('ext4'));
    expect(mountsUnder(target)).toEqual([target]);
    writeFileSync(join(target, 'x.txt'), 'published');
    expect(readFileSync(join(staging, 'x.txt'), 'utf8')).toBe('published');
    await unpublish('half', target);
    expect(mountsUnder(target)).toEqual([]);
    expect(existsSync(target)).toBe(false);
    await unstage('half', staging);
    expect(await sessionsOf(iqn)).toEqual([]);
  });

  it('another filesystem bound at the target path is still refused', async () => {
    const staging = join(work, 'other-staging');
    const target = join(work, 'other-target');
    await stage('half-other', iqn, 1, mountCapability('ext4'), staging);
    mkdirSync(target);
    execFileSync('mount', ['--bind', etc, target]);
    try {
      const err = await failure(publish('half-other', staging, target, mountCapability('ext4')));
      expect(err.code).toBe(status.ALREADY_EXISTS);
    } finally {
      execFileSync('umount', [target]);
    }
    etcUntouched();
    await unstage('half-other', staging);
  });
});

describe('a path of the wrong kind', () => {
  const iqn = 'iqn.2026-11.dev.test:kinds';
  beforeAll(async () => {
    await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }, { lun: 2, sizeBytes: 32 * MiB }]);
  });

  it('a staging path that is a regular file is refused before the login', async () => {
    const staging = join(work, 'file-staging');
    writeFileSync(staging, 'not a directory');
    const err = await failure(stage('file-staging', iqn, 1, mountCapability('ext4'), staging));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain(`${staging} exists and is a regular file`);
    expect(await sessionsOf(iqn)).toEqual([]);
    expect(readFileSync(staging, 'utf8')).toBe('not a directory');
  });

  it('a filesystem volume\'s target path that is a regular file, a block volume\'s that is a directory: FAILED_PRECONDITION naming the path', async () => {
    const fsStaging = join(work, 'kind-fs-staging');
    const blkStaging = join(work, 'kind-blk-staging');
    await stage('kind-fs', iqn, 1, mountCapability('ext4'), fsStaging);
    await stage('kind-blk', iqn, 2, blockCapability(), blkStaging);

    const fileTarget = join(work, 'kind-fs-target');
    writeFileSync(fileTarget, 'a file');
    const fsErr = await failure(publish('kind-fs', fsStaging, fileTarget, mountCapability('ext4')));
    expect(fsErr.code).toBe(status.FAILED_PRECONDITION);
    expect(fsErr.details).toContain(`${fileTarget} exists and is a regular file: a filesystem volume is mounted on a directory`);
    expect(fsErr.details).not.toContain('EEXIST');
    expect(readFileSync(fileTarget, 'utf8')).toBe('a file');

    const dirTarget = join(work, 'kind-blk-target');
    mkdirSync(dirTarget);
    writeFileSync(join(dirTarget, 'keep.txt'), 'kept');
    const blkErr = await failure(publish('kind-blk', blkStaging, dirTarget, blockCapability()));
    expect(blkErr.code).toBe(status.FAILED_PRECONDITION);
    expect(blkErr.details).toContain(`${dirTarget} exists and is a directory: a block volume is bound onto a regular file`);
    expect(readFileSync(join(dirTarget, 'keep.txt'), 'utf8')).toBe('kept');
    expect(mountsUnder(fileTarget)).toEqual([]);
    expect(mountsUnder(dirTarget)).toEqual([]);

    await unstage('kind-fs', fsStaging);
    await unstage('kind-blk', blkStaging);
    expect(existsSync(fileTarget)).toBe(true);
    expect(await sessionsOf(iqn)).toEqual([]);
  });
});
