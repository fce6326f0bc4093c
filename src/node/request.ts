// Validation of node requests: everything a NodeStage/NodePublish call carries is parsed into typed
// values here, so a bad id, path, IQN, portal, LUN or parameter is INVALID_ARGUMENT before any command
// runs. The volume context and CHAP secrets are parsed by the contract module (src/contract), which the
// controller writes them with.
import { isAbsolute, normalize } from 'node:path';
import { InvalidArgument } from '../errors.js';
import type { AccessModeMode, VolumeCapability } from '../csi/types.js';
import { parseVolumeId, type FsType } from '../common/validate.js';
import { isReadOnlyMode, parseVolumeCapability } from '../contract/access-modes.js';
import type { VolumeAccess } from '../flows/stage.js';

const MAX_PATH_BYTES = 4096;

export function parseVolumeIdField(value: unknown): string {
  if (value === undefined || value === null || value === '') throw new InvalidArgument('volume_id is required');
  return parseVolumeId(value);
}

/** An absolute, normalised path without NUL or `..` components. */
export function parsePath(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new InvalidArgument(`${field} is required`);
  if (value.includes('\0')) throw new InvalidArgument(`${field} must not contain NUL characters`);
  if (Buffer.byteLength(value) > MAX_PATH_BYTES) throw new InvalidArgument(`${field} is longer than ${MAX_PATH_BYTES} bytes`);
  if (!isAbsolute(value)) throw new InvalidArgument(`${field} ${JSON.stringify(value)} must be an absolute path`);
  if (value.split('/').includes('..')) throw new InvalidArgument(`${field} ${JSON.stringify(value)} must not contain ".." components`);
  const norm = normalize(value);
  return norm.length > 1 && norm.endsWith('/') ? norm.slice(0, -1) : norm;
}

/** The capability as the node acts on it: a mount without fs_type gets `defaultFsType`. */
export function volumeAccess(cap: VolumeCapability | null | undefined, defaultFsType: FsType): { access: VolumeAccess; accessMode: AccessModeMode; readonly: boolean } {
  const spec = parseVolumeCapability(cap);
  const access: VolumeAccess = spec.accessType === 'block'
    ? { kind: 'block' }
    : { kind: 'mount', fsType: spec.fsType ?? defaultFsType, mountFlags: spec.mountFlags };
  return { access, accessMode: spec.mode, readonly: isReadOnlyMode(spec.mode) };
}
