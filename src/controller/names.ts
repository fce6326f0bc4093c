// Names the controller derives from a CSI volume name. CSI names are arbitrary strings (csi-sanity
// sends 128 mixed-case characters; Kubernetes sends "pvc-<uid>"), so none of them is ever used raw in
// an IQN, a file name or a volume id: each derived name is a sanitised readable part plus a hash of the
// whole original name, which keeps names that differ only in case or punctuation apart.
import { createHash } from 'node:crypto';
import { MAX_ISCSI_NAME_BYTES, parseTargetIqn } from '../common/validate.js';
import { InvalidArgument } from '../errors.js';

/** Hex digits of SHA-256 used in volume ids and file names (128 bits: collisions are not a concern). */
const ID_HASH_HEX = 32;
/** Hex digits of SHA-256 appended to a target name (64 bits, next to a readable part of the name). */
const IQN_HASH_HEX = 16;
/** Characters RFC 3722 leaves in an IQN's ASCII part once lower-cased (":" is kept out of the derived part). */
const NOT_IQN_SAFE_RE = /[^a-z0-9.-]+/g;
/** A target name given in StorageClass parameters (the part after "<iqnPrefix>:"). */
const TARGET_SUFFIX_RE = /^[a-z0-9](?:[a-z0-9.-]{0,62}[a-z0-9])?$/;

export type BackendKind = 'tgt' | 'static';

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

/** Hash part of every name derived from one volume name. */
export function nameHash(volumeName: string): string {
  return sha256Hex(volumeName).slice(0, ID_HASH_HEX);
}

/** `<backend>:<32 hex>`: opaque, stable for a name, safe in paths and logs. */
export function volumeIdFor(backend: BackendKind, volumeName: string): string {
  return `${backend}:${nameHash(volumeName)}`;
}

/** The backend a volume id belongs to, or undefined for an id this driver never issued. */
export function backendOfVolumeId(volumeId: string): BackendKind | undefined {
  const m = /^(tgt|static):[0-9a-f]{32}$/.exec(volumeId);
  return m ? (m[1] as BackendKind) : undefined;
}

/** Backing file name in the pool directory: the id's hash only, never any part of the user's name. */
export function backingFileNameFor(volumeId: string): string {
  const hash = /^[a-z]+:([0-9a-f]{32})$/.exec(volumeId)?.[1];
  if (!hash) throw new InvalidArgument(`volume id ${JSON.stringify(volumeId)} was not issued by this driver`);
  return `${hash}${POOL_FILE_SUFFIX}`;
}

/** Checks the configured `iqn.<date>.<reversed domain>` prefix; returns it unchanged. */
export function checkIqnPrefix(iqnPrefix: string): string {
  if (iqnPrefix.includes(':')) throw new InvalidArgument(`controller.tgt.iqnPrefix ${JSON.stringify(iqnPrefix)} must not contain ":" (the driver appends ":<name>")`);
  parseTargetIqn(`${iqnPrefix}:x`);
  const room = MAX_ISCSI_NAME_BYTES - Buffer.byteLength(iqnPrefix) - 1 - 1 - IQN_HASH_HEX;
  if (room < 1) throw new InvalidArgument(`controller.tgt.iqnPrefix ${JSON.stringify(iqnPrefix)} is too long to leave room for a volume name`);
  return iqnPrefix;
}

/**
 * Target IQN of a volume that gets its own target: `<iqnPrefix>:<readable>-<16 hex>`, where readable is
 * the volume name lower-cased with every run of other characters turned into "-", cut so the whole
 * name stays within RFC 3720's 223 bytes.
 */
export function dedicatedTargetIqn(iqnPrefix: string, volumeName: string): string {
  const hash = sha256Hex(volumeName).slice(0, IQN_HASH_HEX);
  const room = MAX_ISCSI_NAME_BYTES - Buffer.byteLength(iqnPrefix) - 1 - 1 - IQN_HASH_HEX;
  const readable = volumeName
    .toLowerCase()
    .replace(NOT_IQN_SAFE_RE, '-')
    .replace(/^[-.]+/, '')
    .slice(0, Math.max(0, room))
    .replace(/[-.]+$/, '');
  return readable ? `${iqnPrefix}:${readable}-${hash}` : `${iqnPrefix}:${hash}`;
}

/** A shared target's name from configuration or the `sharedTarget` parameter, checked. */
export function sharedTargetIqn(iqnPrefix: string, suffix: string): string {
  if (!TARGET_SUFFIX_RE.test(suffix)) {
    throw new InvalidArgument(`shared target name ${JSON.stringify(suffix)} must be 1..64 characters of a-z 0-9 . - (starting and ending with a letter or digit)`);
  }
  return parseTargetIqn(`${iqnPrefix}:${suffix}`);
}

/** SCSI device identification tgtd reports for a LUN: derived from the volume id, so it survives tid changes. */
export function scsiIdsFor(volumeId: string): { scsiId: string; scsiSn: string } {
  const hash = sha256Hex(`scsi\0${volumeId}`);
  // tgtd keeps short ids (its SCSI ID field is 24 bytes): "csi" + 16 hex, and 16 hex for the serial.
  return { scsiId: `csi${hash.slice(0, 16)}`, scsiSn: hash.slice(16, 32) };
}

/** Snapshot ids: `<backend>:snap:<32 hex>` — a namespace of their own, so no snapshot id is ever a volume id. */
const SNAPSHOT_ID_RE = /^(tgt):snap:([0-9a-f]{32})$/;

/** The hash of a snapshot name: kept apart from volume names' hashes, so a snapshot and a volume of one name differ. */
function snapshotNameHash(snapshotName: string): string {
  return sha256Hex(`snapshot\0${snapshotName}`).slice(0, ID_HASH_HEX);
}

/** `<backend>:snap:<32 hex>`: opaque, stable for a name, safe in paths and logs. */
export function snapshotIdFor(backend: 'tgt', snapshotName: string): string {
  return `${backend}:snap:${snapshotNameHash(snapshotName)}`;
}

/** The backend a snapshot id belongs to, or undefined for an id this driver never issued. */
export function backendOfSnapshotId(snapshotId: string): 'tgt' | undefined {
  return SNAPSHOT_ID_RE.exec(snapshotId)?.[1] as 'tgt' | undefined;
}

/** A snapshot's file name in the pool: the id's hash only, with a prefix no volume's file has. */
export function snapshotFileNameFor(snapshotId: string): string {
  const hash = SNAPSHOT_ID_RE.exec(snapshotId)?.[2];
  if (!hash) throw new InvalidArgument(`snapshot id ${JSON.stringify(snapshotId.slice(0, 128))} was not issued by this driver`);
  return `${SNAPSHOT_FILE_PREFIX}${hash}${POOL_FILE_SUFFIX}`;
}

export const SNAPSHOT_FILE_PREFIX = 'snap-';
export const POOL_FILE_SUFFIX = '.img';
/** A file being copied into place carries this suffix until it is complete and renamed. */
export const PARTIAL_FILE_SUFFIX = '.partial';
/** Names of the files the tgt backend makes in its pool (volumes, snapshots, either being copied). */
export const POOL_FILE_RE = /^(snap-)?([0-9a-f]{32})\.img(\.partial)?$/;
