// CreateVolume's volume_content_source: which snapshot or volume a new volume starts from, and its
// size. Argument errors (INVALID_ARGUMENT) come first; a source this backend does not have is NOT_FOUND
// (also an id it never issued: a CO may hand any id); a range that cannot hold the source is OUT_OF_RANGE.
import type { VolumeContentSource } from '../csi/types.js';
import { InvalidArgument, NotFound, OutOfRange } from '../errors.js';
import { parseVolumeId } from '../common/validate.js';
import type { ContentSource, VolumeBackend } from './backend.js';
import type { Range } from './capacity.js';
import { backendOfVolumeId } from './names.js';
import { findSnapshot, parseSnapshotId } from './snapshots.js';

/** The request's content source checked for its form only; undefined when it names none. */
export function parseContentSource(src: VolumeContentSource | null | undefined, backend: VolumeBackend): ContentSource | undefined {
  if (!src?.type) return undefined;
  if (!backend.snapshots) {
    throw new InvalidArgument(`volume_content_source (${src.type}) is not supported by the ${backend.kind} backend: it neither clones volumes nor restores snapshots`);
  }
  if (src.type === 'snapshot') return { kind: 'snapshot', id: parseSnapshotId(src.snapshot?.snapshot_id, 'volume_content_source.snapshot.snapshot_id') };
  if (!src.volume?.volume_id) throw new InvalidArgument('volume_content_source.volume.volume_id is required');
  return { kind: 'volume', id: parseVolumeId(src.volume.volume_id) };
}

/** The source's size in bytes; NOT_FOUND when the backend does not have it. */
export function sourceBytes(source: ContentSource, backend: VolumeBackend): number {
  if (source.kind === 'snapshot') {
    const snap = findSnapshot(backend, source.id);
    if (!snap) throw new NotFound(`snapshot ${source.id} (volume_content_source) does not exist`);
    return snap.sizeBytes;
  }
  const vol = backendOfVolumeId(source.id) === backend.kind ? backend.get(source.id) : undefined;
  if (!vol) throw new NotFound(`volume ${source.id} (volume_content_source) does not exist`);
  return vol.capacityBytes;
}

/** The size of a volume made from a source: the required bytes (at least the source's), else the source's. */
export function sizeForSource(range: Range, bytes: number): number {
  const r = sizeFromSource({ required: range.required, limit: range.limit, sourceBytes: bytes });
  if (!r.ok) throw new OutOfRange(r.why);
  return r.bytes;
}

/** The content_source a Volume reports. */
export function toContentSource(source: ContentSource | undefined): VolumeContentSource | null {
  if (!source) return null;
  return source.kind === 'snapshot'
    ? { type: 'snapshot', snapshot: { snapshot_id: source.id } }
    : { type: 'volume', volume: { volume_id: source.id } };
}

/** The size of a volume made from a source of `sourceBytes`: at least the source (a clone may be larger), within the range. */
export interface SourceSizing {
  required: number;
  /** 0 = no limit */
  limit: number;
  sourceBytes: number;
}

export type SizingResult = { ok: true; bytes: number } | { ok: false; why: string };

export function sizeFromSource(s: SourceSizing): SizingResult {
  if (s.required > 0 && s.required < s.sourceBytes) {
    return { ok: false, why: `capacity_range.required_bytes ${s.required} is smaller than the source's ${s.sourceBytes} bytes; a volume made from it must be at least as large` };
  }
  if (s.limit > 0 && s.limit < s.sourceBytes) {
    return { ok: false, why: `capacity_range.limit_bytes ${s.limit} is smaller than the source's ${s.sourceBytes} bytes; a volume made from it must be at least as large` };
  }
  return { ok: true, bytes: s.required > 0 ? s.required : s.sourceBytes };
}
