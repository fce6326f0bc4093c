// Snapshots and clones of the tgt backend, end to end on the simulated host with a real tgtd and the
// pool on a real filesystem on a loop device: data written before a snapshot is in a volume restored
// from it and data written after is not (checked through staged volumes, filesystem and raw block);
// xfs with reflinks snapshots a volume in use, ext4 (no reflinks) refuses that and copies an unused
// one sparsely; state survives a restart; every file is removed with its object.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import { codeOf } from '../helpers/client.js';
import { makePoolFs, type PoolFs, type PoolFsKind } from '../helpers/pool-fs.js';
import { blockCapability, mountCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const VOLUME_BYTES = 64 * MiB;
/** where the raw block tests write their marks */
const BEFORE_OFFSET = 4 * MiB;
const AFTER_OFFSET = 8 * MiB;

interface Vol { volume_id: string; capacity_bytes: number; volume_context: Record<string, string>; content_source: { snapshot?: { snapshot_id: string }; volume?: { volume_id: string } } | null }
interface Snap { snapshot_id: string; source_volume_id: string; size_bytes: number; ready_to_use: boolean; creation_time: { seconds: number } }
type Kind = 'mount' | 'block';

async function withDriver(kind: PoolFsKind): Promise<{ sd: SimDriver; poolFs: PoolFs; poolDir: string }> {
  const poolFs = await makePoolFs(kind);
  const poolDir = join(poolFs.mountPoint, 'pool');
  try {
    const sd = await startSimDriver({ mode: 'all', configure: (cfg) => { cfg.controller.tgt.poolDir = poolDir; } });
    return { sd, poolFs, poolDir };
  } catch (e) {
    await poolFs.destroy();
    throw e;
  }
}

function capOf(kind: Kind): object {
  return kind === 'mount' ? mountCapability('ext4') : blockCapability();
}

/** One volume on the node: staged and published to a pod path, as kubelet does. */
class Attached {
  readonly staging: string;
  readonly target: string;
  publishContext: Record<string, string> = {};
  constructor(readonly sd: SimDriver, readonly vol: Vol, readonly kind: Kind, name: string) {
    this.staging = join(sd.stateDir, 'kubelet', `${name}-staging`);
    this.target = join(sd.stateDir, 'kubelet', `${name}-target`);
  }

  async attach(): Promise<this> {
    const { client: c, cfg } = this.sd;
    const cap = capOf(this.kind);
    ({ publish_context: this.publishContext } = await c.call<{ publish_context: Record<string, string> }>('Controller', 'ControllerPublishVolume', { volume_id: this.vol.volume_id, node_id: cfg.nodeId, volume_capability: cap, readonly: false, volume_context: this.vol.volume_context }));
    const stage = { volume_id: this.vol.volume_id, staging_target_path: this.staging, volume_capability: cap, volume_context: this.vol.volume_context, publish_context: this.publishContext };
    await c.call('Node', 'NodeStageVolume', stage);
    await c.call('Node', 'NodePublishVolume', { ...stage, target_path: this.target, readonly: false });
    return this;
  }

  async detach(): Promise<void> {
    const c = this.sd.client;
    await c.call('Node', 'NodeUnpublishVolume', { volume_id: this.vol.volume_id, target_path: this.target });
    await c.call('Node', 'NodeUnstageVolume', { volume_id: this.vol.volume_id, staging_target_path: this.staging });
    await c.call('Controller', 'ControllerUnpublishVolume', { volume_id: this.vol.volume_id, node_id: this.sd.cfg.nodeId });
  }

  /** Writes a mark (a file, or bytes at an offset of the device) and flushes it to the LUN. */
  async write(mark: string, offset: number): Promise<void> {
    if (this.kind === 'mount') {
      writeFileSync(join(this.target, `${mark}.txt`), mark);
      await run('sync', ['-f', join(this.target, `${mark}.txt`)], { timeout: 30_000 });
      return;
    }
    const fd = openSync(this.target, 'r+');
    try {
      writeSync(fd, Buffer.from(mark), 0, mark.length, offset);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** The mark if it is there, else undefined. */
  read(mark: string, offset: number): string | undefined {
    if (this.kind === 'mount') {
      const file = join(this.target, `${mark}.txt`);
      return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
    }
    const fd = openSync(this.target, 'r');
    try {
      const buf = Buffer.alloc(mark.length);
      readSync(fd, buf, 0, buf.length, offset);
      return buf.toString() === mark ? mark : undefined;
    } finally {
      closeSync(fd);
    }
  }
}

function createVolume(sd: SimDriver, name: string, kind: Kind, opts: { bytes?: number; source?: object } = {}): Promise<{ volume: Vol }> {
  return sd.client.call<{ volume: Vol }>('Controller', 'CreateVolume', {
    name, capacity_range: opts.bytes === undefined ? null : { required_bytes: opts.bytes }, volume_capabilities: [capOf(kind)], parameters: {},
    ...(opts.source ? { volume_content_source: opts.source } : {}),
  });
}

const snapshotSource = (id: string) => ({ snapshot: { snapshot_id: id } });
const volumeSource = (id: string) => ({ volume: { volume_id: id } });
const createSnapshot = (sd: SimDriver, name: string, volumeId: string) => sd.client.call<{ snapshot: Snap }>('Controller', 'CreateSnapshot', { name, source_volume_id: volumeId });
const deleteSnapshot = (sd: SimDriver, id: string) => sd.client.call('Controller', 'DeleteSnapshot', { snapshot_id: id });
const deleteVolume = (sd: SimDriver, id: string) => sd.client.call('Controller', 'DeleteVolume', { volume_id: id });
const listSnapshots = (sd: SimDriver, req: object = {}) => sd.client.call<{ entries: { snapshot: Snap }[]; next_token: string }>('Controller', 'ListSnapshots', req);

describe('snapshots on a pool with reflinks (xfs -m reflink=1)', () => {
  let sd: SimDriver;
  let poolFs: PoolFs;
  let poolDir: string;
  beforeAll(async () => { ({ sd, poolFs, poolDir } = await withDriver('xfs-reflink')); });
  afterAll(async () => { await sd?.stop(); await poolFs?.destroy(); });

  for (const kind of ['mount', 'block'] as const) {
    it(`${kind}: a volume restored from a snapshot has the data written before it and not the data written after; taken while the volume is in use`, async () => {
      const { volume: src } = await createVolume(sd, `snap-src-${kind}`, kind, { bytes: VOLUME_BYTES });
      const a = await new Attached(sd, src, kind, `src-${kind}`).attach();
      await a.write(`before-${kind}`, BEFORE_OFFSET);
      const { snapshot } = await createSnapshot(sd, `snap-${kind}`, src.volume_id);
      expect(snapshot).toMatchObject({ source_volume_id: src.volume_id, size_bytes: VOLUME_BYTES, ready_to_use: true });
      expect(snapshot.snapshot_id).toMatch(/^tgt:snap:[0-9a-f]{32}$/);
      expect(Math.abs(Number(snapshot.creation_time.seconds) - Date.now() / 1000)).toBeLessThan(60);
      await a.write(`after-${kind}`, AFTER_OFFSET);

      const { volume: restored } = await createVolume(sd, `restored-${kind}`, kind, { source: snapshotSource(snapshot.snapshot_id) });
      expect(restored.capacity_bytes).toBe(VOLUME_BYTES);
      expect(restored.content_source?.snapshot?.snapshot_id).toBe(snapshot.snapshot_id);
      const b = await new Attached(sd, restored, kind, `restored-${kind}`).attach();
      expect(b.read(`before-${kind}`, BEFORE_OFFSET)).toBe(`before-${kind}`);
      expect(b.read(`after-${kind}`, AFTER_OFFSET)).toBeUndefined();
      // the source still has both
      expect(a.read(`after-${kind}`, AFTER_OFFSET)).toBe(`after-${kind}`);

      // a clone of the volume in use, larger than its source: it has everything written so far
      const { volume: clone } = await createVolume(sd, `clone-${kind}`, kind, { bytes: 2 * VOLUME_BYTES, source: volumeSource(src.volume_id) });
      expect(clone.capacity_bytes).toBe(2 * VOLUME_BYTES);
      expect(clone.content_source?.volume?.volume_id).toBe(src.volume_id);
      expect(statSync(join(poolDir, `${clone.volume_id.slice(4)}.img`)).size).toBe(2 * VOLUME_BYTES);

      await b.detach();
      await a.detach();
      for (const v of [restored, clone, src]) await deleteVolume(sd, v.volume_id);
      await deleteSnapshot(sd, snapshot.snapshot_id);
      expect(readdirSync(poolDir)).toEqual([]);
      expect(await sd.host.sessions()).toEqual([]);
    });
  }

  it('answers the CSI errors: missing sources, a name reused with another source, a clone smaller than its source', async () => {
    const { volume: v1 } = await createVolume(sd, 'err-src-1', 'block', { bytes: VOLUME_BYTES });
    const { volume: v2 } = await createVolume(sd, 'err-src-2', 'block', { bytes: VOLUME_BYTES });
    const { snapshot } = await createSnapshot(sd, 'err-snap', v1.volume_id);
    // the same name and source again: the same snapshot; another source: ALREADY_EXISTS
    expect((await createSnapshot(sd, 'err-snap', v1.volume_id)).snapshot.snapshot_id).toBe(snapshot.snapshot_id);
    expect(await codeOf(createSnapshot(sd, 'err-snap', v2.volume_id))).toBe(status.ALREADY_EXISTS);
    expect(await codeOf(createSnapshot(sd, 'err-none', 'tgt:0123456789abcdef0123456789abcdef'))).toBe(status.NOT_FOUND);
    expect(await codeOf(createSnapshot(sd, '', v1.volume_id))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(createSnapshot(sd, 'err-x', ''))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(sd.client.call('Controller', 'CreateSnapshot', { name: 'err-p', source_volume_id: v1.volume_id, parameters: { bogus: 'x' } }))).toBe(status.INVALID_ARGUMENT);

    expect(await codeOf(createVolume(sd, 'err-r1', 'block', { source: snapshotSource('tgt:snap:0123456789abcdef0123456789abcdef') }))).toBe(status.NOT_FOUND);
    expect(await codeOf(createVolume(sd, 'err-r2', 'block', { source: snapshotSource('../../etc/passwd') }))).toBe(status.NOT_FOUND);
    expect(await codeOf(createVolume(sd, 'err-r3', 'block', { source: volumeSource('tgt:0123456789abcdef0123456789abcdef') }))).toBe(status.NOT_FOUND);
    expect(await codeOf(createVolume(sd, 'err-r4', 'block', { bytes: VOLUME_BYTES / 2, source: snapshotSource(snapshot.snapshot_id) }))).toBe(status.OUT_OF_RANGE);
    expect(await codeOf(createVolume(sd, 'err-r5', 'block', { bytes: VOLUME_BYTES / 2, source: volumeSource(v1.volume_id) }))).toBe(status.OUT_OF_RANGE);
    // a name reused with another source (or none)
    await createVolume(sd, 'err-r6', 'block', { source: snapshotSource(snapshot.snapshot_id) });
    expect(await codeOf(createVolume(sd, 'err-r6', 'block', { source: snapshotSource(snapshot.snapshot_id) }))).toBe(status.OK);
    expect(await codeOf(createVolume(sd, 'err-r6', 'block', { source: volumeSource(v1.volume_id) }))).toBe(status.ALREADY_EXISTS);
    expect(await codeOf(createVolume(sd, 'err-r6', 'block', { bytes: VOLUME_BYTES }))).toBe(status.ALREADY_EXISTS);
    expect(await codeOf(createVolume(sd, 'err-src-1', 'block', { bytes: VOLUME_BYTES, source: volumeSource(v2.volume_id) }))).toBe(status.ALREADY_EXISTS);

    expect(await codeOf(deleteSnapshot(sd, ''))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(deleteSnapshot(sd, 'never-issued'))).toBe(status.OK);
    expect(await codeOf(sd.client.call('Controller', 'GetSnapshot', { snapshot_id: 'never-issued' }))).toBe(status.NOT_FOUND);

    const { volume: r6 } = await createVolume(sd, 'err-r6', 'block', { source: snapshotSource(snapshot.snapshot_id) });
    for (const v of [v1, v2, r6]) await deleteVolume(sd, v.volume_id);
    await deleteSnapshot(sd, snapshot.snapshot_id);
    expect(readdirSync(poolDir)).toEqual([]);
  });

  it('lists by snapshot id and source volume, pages with tokens; snapshots outlive their volume and a restart; a half-made copy is removed at start', async () => {
    const { volume: v1 } = await createVolume(sd, 'list-src-1', 'block', { bytes: VOLUME_BYTES });
    const { volume: v2 } = await createVolume(sd, 'list-src-2', 'block', { bytes: VOLUME_BYTES });
    const s1 = (await createSnapshot(sd, 'list-1', v1.volume_id)).snapshot;
    const s2 = (await createSnapshot(sd, 'list-2', v1.volume_id)).snapshot;
    const s3 = (await createSnapshot(sd, 'list-3', v2.volume_id)).snapshot;
    expect((await listSnapshots(sd)).entries.map((e) => e.snapshot.snapshot_id)).toEqual([s1, s2, s3].map((s) => s.snapshot_id));
    expect((await listSnapshots(sd, { snapshot_id: s2.snapshot_id })).entries.map((e) => e.snapshot.snapshot_id)).toEqual([s2.snapshot_id]);
    expect((await listSnapshots(sd, { snapshot_id: 'none-exist-id' })).entries).toEqual([]);
    expect((await listSnapshots(sd, { source_volume_id: v1.volume_id })).entries.map((e) => e.snapshot.snapshot_id)).toEqual([s1.snapshot_id, s2.snapshot_id]);
    expect((await listSnapshots(sd, { source_volume_id: 'tgt:0123456789abcdef0123456789abcdef' })).entries).toEqual([]);
    const first = await listSnapshots(sd, { max_entries: 2 });
    expect(first.entries).toHaveLength(2);
    const rest = await listSnapshots(sd, { starting_token: first.next_token });
    expect(rest.entries.map((e) => e.snapshot.snapshot_id)).toEqual([s3.snapshot_id]);
    expect(rest.next_token).toBe('');
    expect(await codeOf(listSnapshots(sd, { starting_token: 'bogus' }))).toBe(status.ABORTED);

    // the source goes; its snapshots stay and restore
    await deleteVolume(sd, v1.volume_id);
    // a crash mid-copy and between a snapshot's rename and the state's save
    const partial = join(poolDir, 'snap-00000000000000000000000000000000.img.partial');
    const stray = join(poolDir, 'snap-11111111111111111111111111111111.img');
    writeFileSync(partial, 'half');
    writeFileSync(stray, 'unrecorded');
    mkdirSync(join(poolDir, 'not-ours'));
    await sd.restart();
    expect(existsSync(partial)).toBe(false);
    expect(existsSync(stray)).toBe(false);
    expect(existsSync(join(poolDir, 'not-ours'))).toBe(true);
    expect((await listSnapshots(sd)).entries.map((e) => e.snapshot.snapshot_id)).toEqual([s1, s2, s3].map((s) => s.snapshot_id));
    const { volume: r } = await createVolume(sd, 'list-restore', 'block', { source: snapshotSource(s1.snapshot_id) });
    const g = await sd.client.call<{ snapshot: Snap }>('Controller', 'GetSnapshot', { snapshot_id: s1.snapshot_id });
    expect(g.snapshot.source_volume_id).toBe(v1.volume_id);

    for (const s of [s1, s2, s3]) await deleteSnapshot(sd, s.snapshot_id);
    for (const v of [v2, r]) await deleteVolume(sd, v.volume_id);
    expect(readdirSync(poolDir)).toEqual(['not-ours']);
  });
});

describe('a crash while a restored volume is being filled', () => {
  let sd: SimDriver;
  let poolFs: PoolFs;
  let poolDir: string;
  beforeAll(async () => { ({ sd, poolFs, poolDir } = await withDriver('xfs-reflink')); });
  afterAll(async () => { await sd?.stop(); await poolFs?.destroy(); });

  it('leaves a record that is not exported, whose partial file is removed at start, and that the retried CreateVolume completes', async () => {
    const { volume: src } = await createVolume(sd, 'crash-src', 'block', { bytes: VOLUME_BYTES });
    const a = await new Attached(sd, src, 'block', 'crash-src').attach();
    await a.write('crash-mark', BEFORE_OFFSET);
    await a.detach();
    const { snapshot } = await createSnapshot(sd, 'crash-snap', src.volume_id);
    const { volume: restored } = await createVolume(sd, 'crash-restored', 'block', { source: snapshotSource(snapshot.snapshot_id) });
    const file = join(poolDir, `${restored.volume_id.slice(4)}.img`);

    // what a controller killed mid-copy leaves: the record still pending, a partial file, no volume file
    await sd.driver.stop();
    const statePath = join(sd.stateDir, 'controller', 'tgt', 'volumes.json');
    const doc = JSON.parse(readFileSync(statePath, 'utf8')) as { volumes: Record<string, Record<string, unknown>> };
    doc.volumes[restored.volume_id]!.contentPending = true;
    doc.volumes[restored.volume_id]!.exportedBytes = 0;
    writeFileSync(statePath, JSON.stringify(doc));
    await run('rm', ['-f', file], { timeout: 10_000 });
    writeFileSync(`${file}.partial`, 'half a copy');
    await sd.host.tgtd.tgtadm(['--op', 'delete', '--mode', 'target', '--tid', (await tidOf(sd, restored.volume_context.iqn!)).toString(), '--force']);
    await sd.restart();

    expect(existsSync(`${file}.partial`)).toBe(false);
    // the reconcile at start exported the other volumes and left this one alone
    const listed = await sd.client.call<{ entries: { volume: Vol; status: { volume_condition: { abnormal: boolean; message: string } } }[] }>('Controller', 'ListVolumes', {});
    const entry = listed.entries.find((e) => e.volume.volume_id === restored.volume_id)!;
    expect(entry.status.volume_condition).toMatchObject({ abnormal: true, message: expect.stringMatching(/still being copied/) });
    expect(await codeOf(sd.client.call('Controller', 'ControllerPublishVolume', { volume_id: restored.volume_id, node_id: sd.cfg.nodeId, volume_capability: capOf('block'), readonly: false, volume_context: restored.volume_context }))).toBe(status.FAILED_PRECONDITION);

    // the provisioner retries CreateVolume: the copy is made again and the volume exported
    await createVolume(sd, 'crash-restored', 'block', { source: snapshotSource(snapshot.snapshot_id) });
    const b = await new Attached(sd, restored, 'block', 'crash-restored').attach();
    expect(b.read('crash-mark', BEFORE_OFFSET)).toBe('crash-mark');
    await b.detach();
    for (const v of [restored, src]) await deleteVolume(sd, v.volume_id);
    await deleteSnapshot(sd, snapshot.snapshot_id);
    expect(readdirSync(poolDir)).toEqual([]);
  });
});

async function tidOf(sd: SimDriver, iqn: string): Promise<number> {
  const out = await sd.host.tgtd.tgtadm(['--op', 'show', '--mode', 'target']);
  const m = new RegExp(`^Target (\\d+): ${iqn.replace(/[.]/g, '\\.')}$`, 'm').exec(out);
  if (!m) throw new Error(`target ${iqn} is not in tgtd`);
  return Number(m[1]);
}

describe('snapshots on a pool without reflinks (ext4): the byte copy', () => {
  let sd: SimDriver;
  let poolFs: PoolFs;
  let poolDir: string;
  beforeAll(async () => { ({ sd, poolFs, poolDir } = await withDriver('ext4')); });
  afterAll(async () => { await sd?.stop(); await poolFs?.destroy(); });

  it('refuses to copy a published volume (FAILED_PRECONDITION, saying what to configure), copies an unpublished one sparsely', async () => {
    const { volume: src } = await createVolume(sd, 'copy-src', 'mount', { bytes: VOLUME_BYTES });
    const a = await new Attached(sd, src, 'mount', 'copy-src').attach();
    await a.write('before', 0);
    const refused = await sd.client.call('Controller', 'CreateSnapshot', { name: 'copy-snap', source_volume_id: src.volume_id }).catch((e: { code: number; details: string }) => e);
    expect((refused as { code: number }).code).toBe(status.FAILED_PRECONDITION);
    expect((refused as { details: string }).details).toMatch(/published to .*reflink=1.*btrfs/);
    expect(await codeOf(createVolume(sd, 'copy-clone', 'mount', { source: volumeSource(src.volume_id) }))).toBe(status.FAILED_PRECONDITION);
    expect(readdirSync(poolDir).sort()).toEqual([`${src.volume_id.slice(4)}.img`]);

    await a.detach();
    const { snapshot } = await createSnapshot(sd, 'copy-snap', src.volume_id);
    expect(snapshot.ready_to_use).toBe(true);
    const snapFile = join(poolDir, `snap-${snapshot.snapshot_id.slice('tgt:snap:'.length)}.img`);
    const st = statSync(snapFile);
    expect(st.size).toBe(VOLUME_BYTES);
    // sparse: an ext4 of 64 MiB holds a few MiB of metadata
    expect(st.blocks * 512).toBeLessThan(VOLUME_BYTES / 2);

    // the source is written again after the snapshot; the restore has only what came before
    const again = await new Attached(sd, src, 'mount', 'copy-src').attach();
    await again.write('after', 0);
    await again.detach();
    const { volume: restored } = await createVolume(sd, 'copy-restored', 'mount', { bytes: VOLUME_BYTES + 8 * MiB, source: snapshotSource(snapshot.snapshot_id) });
    const b = await new Attached(sd, restored, 'mount', 'copy-restored').attach();
    expect(b.read('before', 0)).toBe('before');
    expect(b.read('after', 0)).toBeUndefined();
    await b.detach();

    for (const v of [restored, src]) await deleteVolume(sd, v.volume_id);
    await deleteSnapshot(sd, snapshot.snapshot_id);
    expect(readdirSync(poolDir)).toEqual([]);
  });
});
