// The capabilities a volume is created with, reduced to what the controller keeps, and the publish rules
// that follow from access modes (the modes' rules themselves: src/contract/access-modes.ts).
import type { AccessModeMode, VolumeCapability } from '../csi/types.js';
import { AlreadyExists, FailedPrecondition, InvalidArgument } from '../errors.js';
import type { FsType } from '../common/validate.js';
import { isSingleNodeMode, parseVolumeCapability, type AccessType } from '../contract/access-modes.js';

/** A capability reduced to what the driver acts on; stored with each volume. */
export interface CapabilitySummary {
  accessType: AccessType;
  mode: AccessModeMode;
  /** mount only, when the request names one */
  fsType?: FsType;
}

/** Checks one capability (the contract's rules) and returns what the controller keeps of it. */
export function capabilitySummary(cap: VolumeCapability | null | undefined, what = 'volume_capability'): CapabilitySummary {
  const { mountFlags: _flags, ...summary } = parseVolumeCapability(cap, what);
  return summary;
}

/** Checks a non-empty list of capabilities (CreateVolume, ValidateVolumeCapabilities). */
export function parseCapabilities(caps: VolumeCapability[] | null | undefined, field = 'volume_capabilities'): CapabilitySummary[] {
  if (!caps || caps.length === 0) throw new InvalidArgument(`${field} is required`);
  return caps.map((c, i) => capabilitySummary(c, `${field}[${i}]`));
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
