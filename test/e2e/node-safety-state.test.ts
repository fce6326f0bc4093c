// The node's state directory on a small tmpfs the test fills up, and a corrupted volume record: a stage
// that cannot write its record leaves nothing behind (no session, node record, device, mount, record or
// empty directory) and says the state directory is full (RESOURCE_EXHAUSTED); an unstage works on a
// full disk; an unstage over a record that cannot be trusted touches nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, ftruncateSync, fstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { mountCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';
import { MetadataStore } from '../../src/node-host/metadata.js';
import { createLogger } from '../../src/log.js';

const MiB = 1024 * 1024;
const PAGE = 4096;
/** room for a few records and the locks, small enough to fill in a moment */
const STATE_FS_BYTES = 512 * 1024;

let sd: SimDriver;
let stateFs: string;
let work: string;
let filler: number | undefined;
/** every line the driver logs */
const logLines: string[] = [];
const UNDO_ON_FULL_DISK = 'cannot mark the volume record detaching; detaching anyway';
const fillerPath = (): string => join(stateFs, 'filler');

beforeAll(async () => {
  stateFs = mkdtempSync('/tmp/iscsi-csi-statefs-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${STATE_FS_BYTES},mode=0700`, 'tmpfs', stateFs]);
  sd = await startSimDriver({ configure: (cfg) => { cfg.stateDir = join(stateFs, 'state'); }, logger: createLogger('debug', { write: (line: string) => { logLines.push(line); } }) });
  work = join(sd.stateDir, 'kubelet');
  mkdirSync(work, { recursive: true });
  await sd.host.createTarget(IQN, [{ lun: 1, sizeBytes: 32 * MiB }, { lun: 2, sizeBytes: 32 * MiB }]);
});
afterAll(async () => {
  await sd?.stop();
  if (stateFs) {
    execFileSync('umount', [stateFs]);
    rmSync(stateFs, { recursive: true, force: true });
  }
});

/** Fills the state filesystem to the last page, then frees `freePages` pages again. */
function fill(freePages = 0): void {
  filler ??= openSync(fillerPath(), 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  for (;;) {
    try {
      writeSync(filler, chunk);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
      break;
    }
  }
  for (let size = PAGE; size >= 1; size = Math.floor(size / 2)) {
    try { for (;;) writeSync(filler, chunk.subarray(0, size)); } catch { /* full at this granularity */ }
  }
  // whole pages are what tmpfs counts: cutting the file by n pages frees exactly n
  if (freePages > 0) ftruncateSync(filler, fstatSync(filler).size - freePages * PAGE);
}
function unfill(): void {
  if (filler !== undefined) closeSync(filler);
  filler = undefined;
  rmSync(fillerPath(), { force: true });
}

const IQN = 'iqn.2026-11.dev.test:statefs';
function ctx(lun: number): Record<string, string> {
  return { targetPortal: sd.host.portals[0]!, iqn: IQN, lun: String(lun) };
}
function stage(volumeId: string, lun: number, staging: string) {
  return sd.client.call('Node', 'NodeStageVolume', { volume_id: volumeId, staging_target_path: staging, volume_capability: mountCapability('ext4'), volume_context: ctx(lun) });
}
function unstage(volumeId: string, staging: string) {
  return sd.client.call('Node', 'NodeUnstageVolume', { volume_id: volumeId, staging_target_path: staging });
}
async function failure(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  return p.then(() => ({ code: status.OK, details: '' }), (e: { code: number; details: string }) => e);
}
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(dir));
}
function nodeRecords(): string[] {
  const dir = join(sd.host.root, 'var/lib/iscsi/nodes', IQN);
  return existsSync(dir) ? readdirSync(dir) : [];
}
function volumeDirs(): string[] {
  const dir = join(sd.cfg.stateDir, 'volumes');
  return existsSync(dir) ? readdirSync(dir) : [];
}
async function nothingLeft(staging: string): Promise<void> {
  expect(await sd.host.sessions()).toEqual([]);
  expect(nodeRecords()).toEqual([]);
  expect((await sd.host.state()).loops).toEqual([]);
  expect(mountsUnder(staging)).toEqual([]);
  expect(volumeDirs()).toEqual([]);
}

describe('a full state directory', () => {

  it('with no space at all: the stage fails RESOURCE_EXHAUSTED before any login and leaves no empty volume directory', async () => {
    const staging = join(work, 'full-staging');
    fill(0);
    try {
      const e = await failure(stage('vol-full', 1, staging));
      expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(e.details).toContain(`state directory ${sd.cfg.stateDir} is full`);
      await nothingLeft(staging);
      expect(logLines.join('')).not.toContain(UNDO_ON_FULL_DISK); // nothing was attached, nothing undone
    } finally {
      unfill();
    }
  });

  it('nearly full (the first record fits, the staged one does not): the failed stage is undone completely', async () => {
    const staging = join(work, 'nearly-staging');
    fill(1);
    try {
      const e = await failure(stage('vol-nearly', 1, staging));
      expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
      expect(e.details).toContain(`state directory ${sd.cfg.stateDir} is full`);
      // it got as far as the mount: the staged record failed, and the undo ran on the full disk
      expect(logLines.join('')).toContain(UNDO_ON_FULL_DISK);
      await nothingLeft(staging);
    } finally {
      unfill();
    }
    // with space again, the same volume stages and unstages
    await stage('vol-nearly', 1, staging);
    expect(mountsUnder(staging)).toEqual([staging]);
    await unstage('vol-nearly', staging);
    await nothingLeft(staging);
  });

  it('an unstage works on a full state directory (removing a record needs no space)', async () => {
    const staging = join(work, 'unstage-full-staging');
    await stage('vol-u', 2, staging);
    expect((await sd.host.sessions()).length).toBe(1);
    fill(0);
    try {
      await unstage('vol-u', staging);
      await nothingLeft(staging);
    } finally {
      unfill();
    }
  });
});

describe('a corrupted volume record', () => {
  it('NodeUnstage refuses it naming the file and the field, and touches nothing: mount, device and session stay', async () => {
    const staging = join(work, 'corrupt-staging');
    await stage('vol-c', 1, staging);
    const store = new MetadataStore(sd.cfg.stateDir);
    const file = store.filePath('vol-c');
    const good = readFileSync(file, 'utf8');
    const record = JSON.parse(good) as { devicePath: string };
    const sessions = await sd.host.sessions();
    for (const over of [{ portals: [3260] }, { publishedAt: [42] }, { lun: 'one' }]) {
      writeFileSync(file, JSON.stringify({ ...JSON.parse(good), ...over }));
      const e = await failure(unstage('vol-c', staging));
      expect(e.code).toBe(status.INTERNAL);
      expect(e.details).toContain(file);
      expect(e.details).toContain(`field ${Object.keys(over)[0]}`);
      expect(e.details).not.toMatch(/TypeError|portal is required/);
      expect(mountsUnder(staging)).toEqual([staging]);
      expect(existsSync(record.devicePath)).toBe(true);
      expect(await sd.host.sessions()).toEqual(sessions);
    }
    writeFileSync(file, good);
    await unstage('vol-c', staging);
    await nothingLeft(staging);
  });
});

describe('request content is bounded', () => {
  it('a 1 MiB value under an unknown volume_context key, or in a secret, is INVALID_ARGUMENT before any command and never logged', async () => {
    const staging = join(work, 'big-staging');
    const marker = 'Zq9'.repeat(1024 * 1024 / 3);
    const sent = [
      { field: 'volume_context', req: { volume_context: { ...ctx(1), 'example.com/annotation': marker } } },
      { field: 'secrets', req: { volume_context: ctx(1), secrets: { 'node.session.auth.password': marker } } },
      { field: 'publish_context', req: { volume_context: ctx(1), publish_context: { note: marker } } },
    ];
    for (const { field, req } of sent) {
      const e = await failure(sd.client.call('Node', 'NodeStageVolume', { volume_id: 'vol-big', staging_target_path: staging, volume_capability: mountCapability('ext4'), ...req }));
      expect(e.code).toBe(status.INVALID_ARGUMENT);
      expect(e.details).toContain(field);
      expect(e.details).toContain('at most 4096 bytes');
      expect(e.details).not.toContain(marker.slice(0, 300));
    }
    await nothingLeft(staging);
    const log = logLines.join('');
    expect(log).toContain('NodeStageVolume'); // the calls were logged, their content bounded
    expect(log).not.toContain(marker.slice(0, 1000));
  });
});
