// Which volume capabilities the driver supports, and the publish rules that follow from access modes.
//
// An iSCSI LUN is a plain block device, so every access mode works for raw block volumes (the
// application coordinates access, e.g. a cluster filesystem or a database with its own fencing).
// ext4/xfs/btrfs are not cluster filesystems: mounting one read-write on two nodes corrupts it, and a
// read-only mount next to a writer reads stale or torn metadata. So a filesystem volume may be shared
// between nodes only read-only (MULTI_NODE_READER_ONLY).
import type { AccessModeMode, VolumeCapability } from '../csi/types.js';
import { AlreadyExists, FailedPrecondition, InvalidArgument } from '../errors.js';
import { parseFsType, type FsType } from '../host/validate.js';

export type AccessType = 'block' | 'mount';

/** A capability reduced to what the driver acts on; stored with each volume. */
export interface CapabilitySummary {
  accessType: AccessType;
  mode: AccessModeMode;
  /** mount only, when the request names one */
  fsType?: FsType;
}

const SINGLE_NODE_MODES: ReadonlySet<AccessModeMode> = new Set([
  'SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER',
]);
const READ_ONLY_MODES: ReadonlySet<AccessModeMode> = new Set(['SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY']);
/** Multi-node modes that are safe only for raw block volumes. */
const BLOCK_ONLY_MODES: ReadonlySet<AccessModeMode> = new Set(['MULTI_NODE_SINGLE_WRITER', 'MULTI_NODE_MULTI_WRITER']);

export function isSingleNodeMode(mode: AccessModeMode): boolean {
  return SINGLE_NODE_MODES.has(mode);
}

export function isReadOnlyMode(mode: AccessModeMode): boolean {
  return READ_ONLY_MODES.has(mode);
}

/**
 * Checks one capability and returns its summary, or throws InvalidArgument naming what is wrong.
 * `what` prefixes the message (e.g. "volume_capabilities[1]").
 */
export function parseCapability(cap: VolumeCapability | null | undefined, what = 'volume_capability'): CapabilitySummary {
  if (!cap) throw new InvalidArgument(`${what} is required`);
  const mode = cap.access_mode?.mode;
  if (!mode || mode === 'UNKNOWN') throw new InvalidArgument(`${what}.access_mode is required`);
  if (cap.access_type === 'block') return { accessType: 'block', mode };
  if (cap.access_type !== 'mount') throw new InvalidArgument(`${what} must set access_type block or mount`);
  if (BLOCK_ONLY_MODES.has(mode)) {
    throw new InvalidArgument(`${what}: access mode ${mode} is supported only for raw block volumes (volumeMode: Block); a filesystem mounted on several nodes with a writer gets corrupted`);
  }
  const fsName = cap.mount?.fs_type;
  return fsName ? { accessType: 'mount', mode, fsType: parseFsType(fsName) } : { accessType: 'mount', mode };
}

/** Checks a non-empty list of capabilities (CreateVolume, ValidateVolumeCapabilities). */
export function parseCapabilities(caps: VolumeCapability[] | null | undefined, field = 'volume_capabilities'): CapabilitySummary[] {
  if (!caps || caps.length === 0) throw new InvalidArgument(`${field} is required`);
  return caps.map((c, i) => parseCapability(c, `${field}[${i}]`));
}

/** Stable text form of a capability set, to compare a repeated CreateVolume with the first one. */
export function capabilitiesKey(caps: CapabilitySummary[]): string {
  return caps.map((c) => `${c.accessType}/${c.mode}/${c.fsType ?? ''}`).sort().join(',');
}

/** Whether a filesystem volume needs the node to grow the filesystem after the LUN grew. */
export function needsNodeExpansion(caps: CapabilitySummary[]): boolean {
  return caps.some((c) => c.accessType === 'mount');
}

/** How a volume is published to one node (kept in the backend's state). */
export interface Publication {
  readonly: boolean;
  mode: AccessModeMode;
}

/**
 * The ControllerPublishVolume rules shared by both backends. Returns 'exists' when the volume is
 * already published to this node the same way (an idempotent repeat), 'new' when it may be published.
 */
export function checkPublish(
  volumeId: string,
  published: Record<string, Publication>,
  nodeId: string,
  wanted: Publication,
): 'exists' | 'new' {
  const same = published[nodeId];
  if (same) {
    if (same.readonly !== wanted.readonly) {
      throw new AlreadyExists(`volume ${volumeId} is already published to node ${nodeId} with readonly=${same.readonly}; unpublish it first to publish with readonly=${wanted.readonly}`);
    }
    return 'exists';
  }
  for (const [other, pub] of Object.entries(published)) {
    if (isSingleNodeMode(wanted.mode) || isSingleNodeMode(pub.mode)) {
      throw new FailedPrecondition(`volume ${volumeId} is published to node ${other} and access mode ${isSingleNodeMode(pub.mode) ? pub.mode : wanted.mode} allows one node at a time; unpublish it from ${other} first`);
    }
    if (wanted.mode === 'MULTI_NODE_SINGLE_WRITER' && !wanted.readonly && !pub.readonly) {
      throw new FailedPrecondition(`volume ${volumeId} is published read-write to node ${other} and access mode MULTI_NODE_SINGLE_WRITER allows one writer; publish readonly or unpublish it from ${other} first`);
    }
  }
  return 'new';
}
