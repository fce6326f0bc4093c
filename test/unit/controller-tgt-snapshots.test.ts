// The tgt backend's snapshot rules without tgtd: snapshot ids and file names, when a byte copy may be
// made, the size of a volume made from a source, the sparse byte copy itself (holes kept, bounded in
// time, cancellable, nothing left on failure), the reflink probe on a filesystem without reflinks, and
// the sweep of what a crash left in the pool.
import { afterAll, describe, expect, it } from 'vitest';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { parseContentSource, sizeForSource, sizeFromSource, toContentSource } from '../../src/controller/content-source.js';
import type { VolumeBackend } from '../../src/controller/backend.js';
import { backendOfSnapshotId, backendOfVolumeId, backingFileNameFor, snapshotFileNameFor, snapshotIdFor, volumeIdFor } from '../../src/controller/names.js';
import { controllerCapabilities, SNAPSHOT_CAPABILITIES } from '../../src/controller/service.js';
import { parseSnapshotId, toTimestamp } from '../../src/controller/snapshots.js';
import { reflinkFile, sparseCopyFile } from '../../src/controller/tgt/file-copy.js';
import { Pool } from '../../src/controller/tgt/pool.js';
import { byteCopyRefusal } from '../../src/controller/tgt/snapshot-rules.js';
import { createLogger } from '../../src/log.js';

const MiB = 1024 * 1024;
const logger = createLogger('silent');
const tmp = mkdtempSync(join(tmpdir(), 'tgt-snapshots-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function codeOf(fn: () => unknown): number | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    return (e as { code?: number }).code;
  }
}

async function asyncCodeOf(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    return (e as { code?: number }).code;
  }
}

describe('snapshot ids and files', () => {
  it('are opaque, stable per name, apart from volume ids, and never a raw path segment', () => {
    const id = snapshotIdFor('tgt', 'pvc-snap/../../etc');
    expect(id).toMatch(/^tgt:snap:[0-9a-f]{32}$/);
    expect(snapshotIdFor('tgt', 'pvc-snap/../../etc')).toBe(id);
    expect(snapshotIdFor('tgt', 'Snap')).not.toBe(snapshotIdFor('tgt', 'snap'));
    expect(backendOfSnapshotId(id)).toBe('tgt');
    expect(backendOfVolumeId(id)).toBeUndefined();
    // a snapshot and a volume of one name get different hashes, so their files never collide
    expect(id.slice('tgt:snap:'.length)).not.toBe(volumeIdFor('tgt', 'pvc-snap/../../etc').slice('tgt:'.length));
    expect(snapshotFileNameFor(id)).toMatch(/^snap-[0-9a-f]{32}\.img$/);
    for (const bad of ['../x', 'tgt:snap:../../etc/passwd', 'tgt:0123456789abcdef0123456789abcdef', 'static:snap:0123456789abcdef0123456789abcdef', '']) {
      expect(backendOfSnapshotId(bad)).toBeUndefined();
      expect(codeOf(() => snapshotFileNameFor(bad))).toBe(status.INVALID_ARGUMENT);
    }
    expect(backingFileNameFor(volumeIdFor('tgt', 'v'))).toMatch(/^[0-9a-f]{32}\.img$/);
  });

  it('are checked for form before any lookup: required, bounded, no NUL', () => {
    expect(codeOf(() => parseSnapshotId(''))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => parseSnapshotId('x'.repeat(129)))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => parseSnapshotId('a\0b'))).toBe(status.INVALID_ARGUMENT);
    expect(parseSnapshotId('none-exist-id')).toBe('none-exist-id');
  });

  it('carry creation times as protobuf timestamps', () => {
    expect(toTimestamp(new Date(1_700_000_000_123))).toEqual({ seconds: 1_700_000_000, nanos: 123_000_000 });
  });
});

describe('capabilities and content sources by backend', () => {
  const withSnapshots = { kind: 'tgt', snapshots: {} } as unknown as VolumeBackend;
  const without = { kind: 'static' } as unknown as VolumeBackend;

  it('advertises snapshots and clones only for a backend that makes them', () => {
    expect(controllerCapabilities(withSnapshots)).toEqual(expect.arrayContaining([...SNAPSHOT_CAPABILITIES]));
    expect(controllerCapabilities(without).filter((c) => SNAPSHOT_CAPABILITIES.includes(c))).toEqual([]);
  });

  it('parses volume_content_source: none, a snapshot, a volume; INVALID_ARGUMENT for an empty id or a backend without snapshots', () => {
    expect(parseContentSource(null, withSnapshots)).toBeUndefined();
    expect(parseContentSource({}, without)).toBeUndefined();
    expect(parseContentSource({ type: 'snapshot', snapshot: { snapshot_id: 'tgt:snap:x' } }, withSnapshots)).toEqual({ kind: 'snapshot', id: 'tgt:snap:x' });
    expect(parseContentSource({ type: 'volume', volume: { volume_id: 'tgt:x' } }, withSnapshots)).toEqual({ kind: 'volume', id: 'tgt:x' });
    expect(codeOf(() => parseContentSource({ type: 'snapshot', snapshot: { snapshot_id: '' } }, withSnapshots))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => parseContentSource({ type: 'volume', volume: { volume_id: '' } }, withSnapshots))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => parseContentSource({ type: 'volume', volume: { volume_id: 'tgt:x' } }, without))).toBe(status.INVALID_ARGUMENT);
    expect(toContentSource({ kind: 'snapshot', id: 's' })).toEqual({ type: 'snapshot', snapshot: { snapshot_id: 's' } });
    expect(toContentSource(undefined)).toBeNull();
  });

  it('sizes a volume made from a source: the source size by default, larger when asked, never smaller (OUT_OF_RANGE)', () => {
    expect(sizeFromSource({ required: 0, limit: 0, sourceBytes: 64 * MiB })).toEqual({ ok: true, bytes: 64 * MiB });
    expect(sizeFromSource({ required: 96 * MiB, limit: 0, sourceBytes: 64 * MiB })).toEqual({ ok: true, bytes: 96 * MiB });
    expect(sizeFromSource({ required: 0, limit: 64 * MiB, sourceBytes: 64 * MiB })).toEqual({ ok: true, bytes: 64 * MiB });
    expect(sizeFromSource({ required: 32 * MiB, limit: 0, sourceBytes: 64 * MiB }).ok).toBe(false);
    expect(sizeFromSource({ required: 0, limit: 32 * MiB, sourceBytes: 64 * MiB }).ok).toBe(false);
    expect(codeOf(() => sizeForSource({ required: 32 * MiB, limit: 0 }, 64 * MiB))).toBe(status.OUT_OF_RANGE);
  });
});

describe('when a byte copy is point-in-time', () => {
  const base = { volumeId: 'tgt:v', poolDir: '/pool', publishedTo: [], loggedIn: [] };
  it('allows it only while the volume is published nowhere and no initiator is logged in to its target', () => {
    expect(byteCopyRefusal(base)).toBeUndefined();
    const published = byteCopyRefusal({ ...base, publishedTo: ['iqn.2026-11.dev.test:node-a'] });
    expect(published).toMatch(/published to iqn\.2026-11\.dev\.test:node-a/);
    expect(published).toMatch(/mkfs\.xfs -m reflink=1.*btrfs/);
    // a session made before an unpublish outlives its ACL: it can still write
    expect(byteCopyRefusal({ ...base, loggedIn: ['iqn.2026-11.dev.test:node-b'] })).toMatch(/node-b logged in to its target/);
  });
});

describe('the copy of a backing file', () => {
  /** a 16 MiB sparse file with data at 0, 5 MiB and in its last bytes */
  function sparseSource(name: string): string {
    const file = join(tmp, name);
    const fd = openSync(file, 'w', 0o600);
    try {
      writeSync(fd, Buffer.from('first'), 0, 5, 0);
      writeSync(fd, Buffer.alloc(4096, 7), 0, 4096, 5 * MiB);
      writeSync(fd, Buffer.from('last'), 0, 4, 16 * MiB - 4);
    } finally {
      closeSync(fd);
    }
    return file;
  }

  it('reports a filesystem without reflinks (this tmpdir is ext4) and leaves no file behind', async () => {
    const src = sparseSource('reflink-src.img');
    const dst = join(tmp, 'reflink-dst.img');
    expect(await reflinkFile(src, dst)).toBe(false);
    expect(existsSync(dst)).toBe(false);
  });

  it('copies byte for byte, keeping holes, with the source file mode', async () => {
    const src = sparseSource('copy-src.img');
    const dst = join(tmp, 'copy-dst.img');
    const r = await sparseCopyFile(src, dst, { timeoutMs: 60_000, logger });
    expect(r).toEqual({ bytes: 16 * MiB, dataBytes: 3 * MiB });
    expect(readFileSync(dst).equals(readFileSync(src))).toBe(true);
    const st = statSync(dst);
    expect(st.size).toBe(16 * MiB);
    expect(st.blocks * 512).toBeLessThanOrEqual(3 * MiB + 64 * 1024);
    expect(st.mode & 0o777).toBe(0o600);
  });

  it('stops at its deadline (DEADLINE_EXCEEDED naming the fix) or when cancelled, and removes the partial file', async () => {
    const src = sparseSource('slow-src.img');
    const late = join(tmp, 'late.img');
    expect(await asyncCodeOf(sparseCopyFile(src, late, { timeoutMs: 0, logger }).catch(async (e) => {
      expect((e as Error).message).toMatch(/reflink=1.*controller\.tgt\.copyTimeoutMs/);
      throw e;
    }))).toBe(status.DEADLINE_EXCEEDED);
    expect(existsSync(late)).toBe(false);
    const cancelled = join(tmp, 'cancelled.img');
    const ac = new AbortController();
    ac.abort();
    expect(await asyncCodeOf(sparseCopyFile(src, cancelled, { timeoutMs: 60_000, logger, signal: ac.signal }))).toBe(status.ABORTED);
    expect(existsSync(cancelled)).toBe(false);
  });

  it('never overwrites an existing file', async () => {
    const src = sparseSource('excl-src.img');
    const dst = join(tmp, 'excl-dst.img');
    writeFileSync(dst, 'keep');
    expect(await asyncCodeOf(sparseCopyFile(src, dst, { timeoutMs: 60_000, logger }))).toBe(status.INTERNAL);
    expect(readFileSync(dst, 'utf8')).toBe('keep');
  });
});

describe('the pool sweep at start', () => {
  it('removes partial copies and unrecorded snapshot files, nothing else', async () => {
    const dir = join(tmp, 'pool');
    mkdirSync(dir);
    const pool = new Pool(dir);
    const vol = pool.fileFor(volumeIdFor('tgt', 'v'));
    const known = pool.snapshotFileFor(snapshotIdFor('tgt', 'kept'));
    const stray = pool.snapshotFileFor(snapshotIdFor('tgt', 'stray'));
    for (const f of [vol, pool.partialOf(vol), known, pool.partialOf(known), stray, join(dir, 'operator-notes.txt')]) writeFileSync(f, 'x');
    const removed = await pool.sweep(new Set([known]));
    expect(removed.sort()).toEqual([pool.partialOf(vol), pool.partialOf(known), stray].sort());
    expect(readdirSync(dir).sort()).toEqual([vol, known, join(dir, 'operator-notes.txt')].map((f) => f.slice(dir.length + 1)).sort());
  });
});
