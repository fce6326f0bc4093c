// Which volume capabilities the driver supports: one rule set for the controller (CreateVolume,
// ValidateVolumeCapabilities, publish) and the node (stage, publish).
//
// An iSCSI LUN is a plain block device, so every access mode works for raw block volumes (the
// application coordinates access, e.g. a cluster filesystem or a database with its own fencing).
// ext4/xfs/btrfs are not cluster filesystems: mounting one read-write on two nodes corrupts it, and a
// read-only mount next to a writer reads stale or torn metadata. So a filesystem volume may be shared
// between nodes only read-only (MULTI_NODE_READER_ONLY).
import type { AccessModeMode, VolumeCapability } from '../csi/types.js';
import { InvalidArgument } from '../errors.js';
import { parseFsType, type FsType } from '../common/validate.js';

export type AccessType = 'block' | 'mount';

export const SINGLE_NODE_MODES: ReadonlySet<AccessModeMode> = new Set([
  'SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER',
]);
const READ_ONLY_MODES: ReadonlySet<AccessModeMode> = new Set(['SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY']);
/** Multi-node modes with a writer: safe only for raw block volumes. */
const BLOCK_ONLY_MODES: ReadonlySet<AccessModeMode> = new Set(['MULTI_NODE_SINGLE_WRITER', 'MULTI_NODE_MULTI_WRITER']);

const MAX_MOUNT_FLAG_BYTES = 256;

/** A capability as the driver acts on it. */
export interface CapabilitySpec {
  accessType: AccessType;
  mode: AccessModeMode;
  /** mount only, when the request names one */
  fsType?: FsType;
  /** mount only: mount_flags, each comma-joined list split */
  mountFlags: string[];
}

export function isSingleNodeMode(mode: AccessModeMode): boolean {
  return SINGLE_NODE_MODES.has(mode);
}

export function isReadOnlyMode(mode: AccessModeMode): boolean {
  return READ_ONLY_MODES.has(mode);
}

/**
 * Checks one capability, or throws InvalidArgument naming what is wrong. `what` prefixes the message
 * (e.g. "volume_capabilities[1]").
 */
export function parseVolumeCapability(cap: VolumeCapability | null | undefined, what = 'volume_capability'): CapabilitySpec {
  if (!cap) throw new InvalidArgument(`${what} is required`);
  const mode = cap.access_mode?.mode;
  if (!mode || mode === 'UNKNOWN') throw new InvalidArgument(`${what}.access_mode is required`);
  if (cap.access_type === 'block') return { accessType: 'block', mode, mountFlags: [] };
  if (cap.access_type !== 'mount') throw new InvalidArgument(`${what} must set access_type block or mount`);
  if (BLOCK_ONLY_MODES.has(mode)) {
    throw new InvalidArgument(`${what}: access mode ${mode} is for raw block volumes only (volumeMode: Block): ext4, xfs and btrfs are not cluster filesystems, mounted on several nodes with a writer they get corrupted`);
  }
  const mountFlags = parseMountFlags(cap.mount?.mount_flags, what);
  const fsName = cap.mount?.fs_type;
  return fsName ? { accessType: 'mount', mode, fsType: parseFsType(fsName), mountFlags } : { accessType: 'mount', mode, mountFlags };
}

/**
 * Options mount(8) acts on instead of passing them to the filesystem: they would change what is mounted
 * or where (another source through a loop or dm-verity device, a bind, a remount, a move), the mount's
 * propagation, the mount point itself (made, chowned, chmodded, a subdirectory or an id map), or run a
 * helper program. The driver decides those itself. Matched by the name before any `=`, ignoring case.
 */
const OPERATION_FLAGS: ReadonlyMap<string, string> = new Map([
  ...['loop', 'offset', 'sizelimit', 'encryption'].map((f) => [f, 'sets up a loop device'] as const),
  ...['bind', 'rbind'].map((f) => [f, 'makes a bind mount'] as const),
  ['remount', 'remounts an existing mount'],
  ...['move', 'rmove'].map((f) => [f, 'moves a mount'] as const),
  ...['shared', 'slave', 'private', 'unbindable', 'rshared', 'rslave', 'rprivate', 'runbindable'].map((f) => [f, 'changes mount propagation'] as const),
  ...['helper', 'uhelper'].map((f) => [f, 'runs a helper program'] as const),
]);
const OPERATION_PREFIXES: readonly [string, string][] = [
  ['x-mount.', 'acts on the mount point (X-mount.mkdir, .owner, .group, .mode, .subdir, .idmap)'],
  ['verity.', 'sets up a dm-verity device'],
];

export function parseMountFlags(flags: readonly string[] | undefined, what = 'volume_capability'): string[] {
  const out: string[] = [];
  for (const flag of flags ?? []) {
    if (typeof flag !== 'string' || flag === '' || Buffer.byteLength(flag) > MAX_MOUNT_FLAG_BYTES || /[\s\0]/.test(flag)) {
      throw new InvalidArgument(`mount flag ${JSON.stringify(flag)} is not valid: no spaces, at most ${MAX_MOUNT_FLAG_BYTES} bytes`);
    }
    for (const option of flag.split(',').filter(Boolean)) {
      const operation = mountOperation(option);
      if (operation) {
        throw new InvalidArgument(`${what}: mount flag ${JSON.stringify(option)} is refused: mount(8) treats it as an operation (it ${operation}), not a filesystem option; the driver mounts the volume itself`);
      }
      out.push(option);
    }
  }
  return out;
}

/** What mount(8) would do with `option` besides passing it to the filesystem, or null. */
function mountOperation(option: string): string | null {
  const name = option.split('=', 1)[0]!.toLowerCase();
  return OPERATION_FLAGS.get(name) ?? OPERATION_PREFIXES.find(([prefix]) => name.startsWith(prefix))?.[1] ?? null;
}
