// CreateSnapshot, DeleteSnapshot, ListSnapshots and GetSnapshot: CSI semantics only (argument errors
// before existence checks, ids this backend never issued treated as absent), over the backend's
// SnapshotSupport. Served only by a backend that makes snapshots; the others answer UNIMPLEMENTED.
import type {
  CreateSnapshotRequest, CreateSnapshotResponse, DeleteSnapshotRequest, GetSnapshotRequest, GetSnapshotResponse,
  ListSnapshotsRequest, ListSnapshotsResponse, Snapshot, Timestamp,
} from '../csi/types.js';
import { InvalidArgument, NotFound, Unimplemented } from '../errors.js';
import { parseVolumeId } from '../common/validate.js';
import type { ServiceImpl } from '../server/service.js';
import { unknownParameters, type SnapshotRecord, type SnapshotSupport, type VolumeBackend } from './backend.js';
import { backendOfSnapshotId, backendOfVolumeId } from './names.js';
import { page } from './pagination.js';

/** CSI's limit on names is the CO's (128 for Kubernetes); ids and names past this are no one's. */
const MAX_SNAPSHOT_ID_BYTES = 128;
const MS_PER_S = 1000;
const NS_PER_MS = 1_000_000;

export function toTimestamp(date: Date): Timestamp {
  const ms = date.getTime();
  return { seconds: Math.floor(ms / MS_PER_S), nanos: (ms % MS_PER_S) * NS_PER_MS };
}

export function toSnapshot(rec: SnapshotRecord): Snapshot {
  return {
    snapshot_id: rec.id, source_volume_id: rec.sourceVolumeId, size_bytes: rec.sizeBytes,
    creation_time: toTimestamp(rec.createdAt), ready_to_use: rec.readyToUse, group_snapshot_id: '',
  };
}

/** A snapshot id from a request: required, bounded, no NUL; whether this driver issued it is the caller's lookup. */
export function parseSnapshotId(value: unknown, field = 'snapshot_id'): string {
  if (typeof value !== 'string' || value.length === 0) throw new InvalidArgument(`${field} is required`);
  if (Buffer.byteLength(value, 'utf8') > MAX_SNAPSHOT_ID_BYTES) throw new InvalidArgument(`${field} is longer than ${MAX_SNAPSHOT_ID_BYTES} bytes`);
  if (value.includes('\0')) throw new InvalidArgument(`${field} must not contain NUL characters`);
  return value;
}

/** The snapshot if this backend issued the id and still has it. */
export function findSnapshot(backend: VolumeBackend, id: string): SnapshotRecord | undefined {
  return backend.snapshots && backendOfSnapshotId(id) === backend.kind ? backend.snapshots.getSnapshot(id) : undefined;
}

export function snapshotHandlers(backend: VolumeBackend): ServiceImpl {
  const support = (): SnapshotSupport => {
    if (!backend.snapshots) throw new Unimplemented(`the ${backend.kind} backend does not make snapshots`);
    return backend.snapshots;
  };
  return {
    CreateSnapshot: async (req: CreateSnapshotRequest): Promise<CreateSnapshotResponse> => {
      const snapshots = support();
      if (!req.name) throw new InvalidArgument('name is required');
      if (!req.source_volume_id) throw new InvalidArgument('source_volume_id is required');
      const source = parseVolumeId(req.source_volume_id);
      // the snapshotter's --extra-create-metadata keys (csi.storage.k8s.io/…) are accepted and ignored
      const unknown = unknownParameters(req.parameters ?? {}, []);
      if (unknown.length > 0) throw new InvalidArgument(`unknown VolumeSnapshotClass parameter(s) ${unknown.join(', ')}: the ${backend.kind} backend takes none`);
      if (backendOfVolumeId(source) !== backend.kind || !backend.get(source)) throw new NotFound(`source volume ${source} does not exist`);
      return { snapshot: toSnapshot(await snapshots.createSnapshot(req.name, source)) };
    },

    DeleteSnapshot: async (req: DeleteSnapshotRequest): Promise<Record<string, never>> => {
      const snapshots = support();
      const id = parseSnapshotId(req.snapshot_id);
      if (backendOfSnapshotId(id) === backend.kind) await snapshots.deleteSnapshot(id);
      return {};
    },

    ListSnapshots: async (req: ListSnapshotsRequest): Promise<ListSnapshotsResponse> => {
      const snapshots = support();
      let items = snapshots.listSnapshots();
      // filters name one snapshot or one volume; one this driver never issued matches nothing (not an error)
      if (req.snapshot_id) items = items.filter((s) => s.id === req.snapshot_id);
      if (req.source_volume_id) items = items.filter((s) => s.sourceVolumeId === req.source_volume_id);
      const { items: chosen, nextToken } = page(items, req.starting_token ?? '', req.max_entries ?? 0);
      return { entries: chosen.map((s) => ({ snapshot: toSnapshot(s) })), next_token: nextToken };
    },

    GetSnapshot: async (req: GetSnapshotRequest): Promise<GetSnapshotResponse> => {
      support();
      const id = parseSnapshotId(req.snapshot_id);
      const snap = findSnapshot(backend, id);
      if (!snap) throw new NotFound(`snapshot ${id} does not exist`);
      return { snapshot: toSnapshot(snap) };
    },
  };
}
