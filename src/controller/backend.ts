// The small interface between the Controller service and a storage backend. The service validates
// requests and maps them to these calls; a backend owns its volumes' state (persisted under the
// driver's state dir), the storage system, and the serialisation of operations on shared state.
import type { AccessModeMode, StringMap, VolumeCondition, VolumeExpansionType } from '../csi/types.js';
import { AlreadyExists } from '../errors.js';
import { capabilitiesKey, type CapabilitySummary, type Publication } from './capabilities.js';
import { capacitySatisfies, formatBytes, type Range } from './capacity.js';
import type { BackendKind } from './names.js';

/** What the service and the CO see of a volume. */
export interface VolumeRecord {
  /** opaque, stable: `<backend>:<hash of the name>` */
  id: string;
  /** the CSI name it was created with */
  name: string;
  /** creation order; ListVolumes pages by it */
  seq: number;
  capacityBytes: number;
  capabilities: CapabilitySummary[];
  /** StorageClass parameters it was created with (never secrets) */
  parameters: StringMap;
  /** volume_context: where and how the node attaches it (never secrets) */
  context: StringMap;
  /** node id → how it is published there */
  published: Record<string, Publication>;
  condition: VolumeCondition;
  /** what it was created from (a snapshot or another volume), when anything */
  contentSource?: ContentSource;
}

/** CreateVolume's volume_content_source, validated: a snapshot or volume id this backend issued. */
export interface ContentSource {
  kind: 'snapshot' | 'volume';
  id: string;
}

/** What the service and the CO see of a snapshot. */
export interface SnapshotRecord {
  /** opaque, stable: `<backend>:snap:<hash of the name>` */
  id: string;
  name: string;
  /** creation order (shared with volumes); ListSnapshots pages by it */
  seq: number;
  sourceVolumeId: string;
  /** the source's capacity when it was taken: a volume restored from it is at least this large */
  sizeBytes: number;
  createdAt: Date;
  readyToUse: boolean;
}

/** Snapshots and clones, for backends that make them (the service advertises the capabilities only then). */
export interface SnapshotSupport {
  /** Takes a point-in-time copy of a volume, or returns the one of that name (another source: ALREADY_EXISTS). Unknown volume → NOT_FOUND. */
  createSnapshot(name: string, sourceVolumeId: string): Promise<SnapshotRecord>;
  /** Unknown id → no-op. */
  deleteSnapshot(id: string): Promise<void>;
  getSnapshot(id: string): SnapshotRecord | undefined;
  /** every snapshot, in creation order */
  listSnapshots(): SnapshotRecord[];
}

export interface CreateSpec {
  name: string;
  /** the size the service resolved from the range (or the default) */
  capacityBytes: number;
  range: Range;
  capabilities: CapabilitySummary[];
  parameters: StringMap;
  secrets: StringMap;
  /** the content to start with (a backend without `snapshots` is never given one) */
  source?: ContentSource;
}

export interface PublishSpec {
  nodeId: string;
  /** the node's initiator name (the node id, validated) */
  initiator: string;
  readonly: boolean;
  mode: AccessModeMode;
  secrets: StringMap;
}

export interface CapacityInfo {
  availableBytes: number;
  /** largest single volume that can be created now, when the backend knows it */
  maximumVolumeBytes?: number;
}

/** Each backend's kind of expansion (see VolumeBackend.expansion), for the identity service. */
export const EXPANSION_BY_BACKEND: Record<'tgt' | 'static', VolumeExpansionType> = {
  /**
   * tgtd reads a LUN's size only when it opens the backing file, and re-opening it fails the commands
   * in flight (EBADF → MEDIUM ERROR on the initiator): a LUN grows only while no initiator is logged in.
   */
  tgt: 'OFFLINE',
  /** the LUN is grown on the SAN; the backend only hands out the larger size */
  static: 'ONLINE',
};

export interface VolumeBackend {
  readonly kind: BackendKind;
  /**
   * When ControllerExpand can grow a volume: ONLINE while it is published and in use, OFFLINE only
   * while no node uses it (the plugin's VOLUME_EXPANSION capability tells the resizer which).
   */
  readonly expansion: VolumeExpansionType;
  /** snapshots and clones; undefined when the backend cannot make them */
  readonly snapshots?: SnapshotSupport;
  /** Loads state and reconciles the storage system from it. */
  start(): Promise<void>;
  /** Stops background work (the periodic reconcile). */
  stop(): Promise<void>;
  /** Makes the storage system match the state (targets, LUNs, accounts, ACLs). */
  reconcile(): Promise<void>;
  /** null when the storage system is reachable, else what is missing. */
  probe(): Promise<string | null>;
  /** Whether the storage system's daemon answered the backend's last call (undefined: not asked yet); backends that track it. */
  reachable?(): boolean | undefined;
  /** Throws InvalidArgument for StorageClass parameters (or secrets) this backend cannot use. */
  checkParameters(parameters: StringMap, secrets: StringMap): void;
  get(id: string): VolumeRecord | undefined;
  /** every volume, in creation order */
  list(): VolumeRecord[];
  /** Creates the volume, or returns the existing one of that name when compatible (else ALREADY_EXISTS). */
  create(spec: CreateSpec): Promise<VolumeRecord>;
  /** Unknown id → no-op. Published somewhere → FAILED_PRECONDITION. */
  delete(id: string): Promise<void>;
  /** Unknown id → NOT_FOUND. Returns the publish_context. */
  publish(id: string, spec: PublishSpec): Promise<StringMap>;
  /** Unknown id or node → no-op. nodeId undefined = from every node. */
  unpublish(id: string, nodeId: string | undefined): Promise<void>;
  /** Grows the volume to exactly capacityBytes (never shrinks). Unknown id → NOT_FOUND. */
  expand(id: string, capacityBytes: number): Promise<VolumeRecord>;
  capacity(parameters: StringMap): Promise<CapacityInfo>;
  /** Current health of one volume, checked against the storage system. */
  condition(id: string): Promise<VolumeCondition>;
}

export const HEALTHY: VolumeCondition = Object.freeze({ abnormal: false, message: 'volume is healthy' });

/** Parameters the external-provisioner may add (`--extra-create-metadata`); accepted by every backend. */
export const PROVISIONER_PARAMETER_PREFIX = 'csi.storage.k8s.io/';

/** Parameter selecting the backend; accepted (and checked by the service) by every backend. */
export const BACKEND_PARAMETER = 'backend';

/** Parameter keys outside `known`: reported, since a typo would otherwise be ignored silently. */
export function unknownParameters(parameters: StringMap, known: readonly string[]): string[] {
  return Object.keys(parameters).filter((k) => !known.includes(k) && k !== BACKEND_PARAMETER && !k.startsWith(PROVISIONER_PARAMETER_PREFIX));
}

/**
 * A repeated CreateVolume for an existing name is answered with that volume only when the request is
 * the same (capacity within the range, same capabilities, same parameters); otherwise ALREADY_EXISTS.
 */
export function checkSameVolume(existing: VolumeRecord, spec: CreateSpec): void {
  const why: string[] = [];
  if (!capacitySatisfies(existing.capacityBytes, spec.range)) {
    why.push(`its capacity ${formatBytes(existing.capacityBytes)} is outside the requested range (required ${spec.range.required}, limit ${spec.range.limit || 'none'})`);
  }
  if (capabilitiesKey(existing.capabilities) !== capabilitiesKey(spec.capabilities)) why.push('it was created with other volume capabilities');
  if (stableJson(existing.parameters) !== stableJson(spec.parameters)) why.push('it was created with other parameters');
  if (sourceText(existing.contentSource) !== sourceText(spec.source)) why.push(`it was created from ${sourceText(existing.contentSource)}, not ${sourceText(spec.source)}`);
  if (why.length > 0) throw new AlreadyExists(`a volume named ${JSON.stringify(existing.name)} already exists (${existing.id}) but ${why.join(' and ')}`);
}

function sourceText(source: ContentSource | undefined): string {
  return source ? `${source.kind} ${source.id}` : 'no content source';
}

function stableJson(map: StringMap): string {
  return JSON.stringify(Object.keys(map).sort().map((k) => [k, map[k]]));
}
