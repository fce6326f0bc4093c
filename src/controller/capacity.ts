// CSI capacity_range rules, in one place for both backends. Sizes are honoured exactly: the capacity a
// volume reports is what was asked for; the backing store is rounded up to whole sectors underneath, so
// the device is never smaller than the reported capacity.
import type { CapacityRange } from '../csi/types.js';
import { InvalidArgument } from '../errors.js';
import { exactByteCount, limitByteCount, requiredByteCount } from '../common/byte-counts.js';

/** tgtd exposes backing files in 512-byte blocks; a file is rounded up to this so no byte is cut off. */
export const SECTOR_BYTES = 512;

export interface Range {
  /** 0 = not given; at most MAX_BYTE_COUNT */
  required: number;
  /** 0 = no limit (also a limit above MAX_BYTE_COUNT: nothing this driver makes reaches it) */
  limit: number;
}

/** Validates a request's capacity_range (null = none given): sizes exact, never rounded (src/common/byte-counts.ts). */
export function parseRange(range: CapacityRange | null | undefined): Range {
  const required = exactByteCount(range?.required_bytes, 'capacity_range.required_bytes');
  const limit = exactByteCount(range?.limit_bytes, 'capacity_range.limit_bytes');
  if (limit > 0n && required > limit) {
    throw new InvalidArgument(`capacity_range.required_bytes (${required}) is larger than limit_bytes (${limit})`);
  }
  return {
    required: requiredByteCount(range?.required_bytes, 'capacity_range.required_bytes'),
    limit: limitByteCount(range?.limit_bytes, 'capacity_range.limit_bytes'),
  };
}

/** Size of a new volume: the required bytes; with only a limit, the default capped at the limit; else the default. */
export function sizeForCreate(range: Range, defaultBytes: number): number {
  if (range.required > 0) return range.required;
  if (range.limit > 0) return Math.min(defaultBytes, range.limit);
  return defaultBytes;
}

/** Whether an existing volume's capacity satisfies a (repeated) CreateVolume's range. */
export function capacitySatisfies(capacityBytes: number, range: Range): boolean {
  return capacityBytes >= range.required && (range.limit === 0 || capacityBytes <= range.limit);
}

/** Target size of ControllerExpandVolume: required bytes, or the limit when only a limit is given. */
export function sizeForExpand(range: Range): number {
  const size = range.required > 0 ? range.required : range.limit;
  if (size === 0) throw new InvalidArgument('capacity_range with required_bytes or limit_bytes is required');
  return size;
}

/** Bytes of backing store for a capacity: whole sectors, never less than the capacity. */
export function backingBytes(capacityBytes: number): number {
  return Math.ceil(capacityBytes / SECTOR_BYTES) * SECTOR_BYTES;
}

/** 1073741824 → "1 GiB", for messages. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1 && Number.isInteger(v / 1024)) {
    v /= 1024;
    i += 1;
  }
  return `${v} ${units[i]}`;
}
