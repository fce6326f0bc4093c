// Byte counts from CSI requests (int64 on the wire, decoded exactly as number or bigint: see
// src/server/proto.ts). Parsed here for the controller's capacity_range and the node's expansion
// alike: a negative or fractional count is INVALID_ARGUMENT; one larger than this driver can handle
// is OUT_OF_RANGE with the exact number as sent, never a rounded one.
import type { Int64 } from '../csi/types.js';
import { InvalidArgument, OutOfRange } from '../errors.js';

/** Disks are addressed in 512-byte sectors; every size this driver makes is a whole number of them. */
const SECTOR_BYTES = 512;

/**
 * The largest size this driver handles: the largest whole-sector count of bytes that is still a
 * safe JS integer (2^53 - 512, about 8 PiB), so no size is ever rounded inside the driver.
 */
export const MAX_BYTE_COUNT = Number.MAX_SAFE_INTEGER - (Number.MAX_SAFE_INTEGER % SECTOR_BYTES);

/** The exact non-negative value of an int64 field (0 when absent); a string is read as decimal digits. */
export function exactByteCount(value: Int64 | string | null | undefined, field: string): bigint {
  const v = value ?? 0;
  if (typeof v === 'number' && !Number.isInteger(v)) throw new InvalidArgument(`${field} must be a non-negative integer, got ${v}`);
  if (typeof v === 'string' && !/^-?\d{1,20}$/.test(v)) throw new InvalidArgument(`${field} must be a non-negative integer`);
  const exact = BigInt(v);
  if (exact < 0n) throw new InvalidArgument(`${field} must be a non-negative integer, got ${exact}`);
  return exact;
}

/** A requested size as a number, at most MAX_BYTE_COUNT (else OUT_OF_RANGE with the exact digits). */
export function requiredByteCount(value: Int64 | string | null | undefined, field: string): number {
  const exact = exactByteCount(value, field);
  if (exact > BigInt(MAX_BYTE_COUNT)) throw new OutOfRange(`${field} ${exact} is larger than the largest size this driver supports (${MAX_BYTE_COUNT} bytes)`);
  return Number(exact);
}

/**
 * A size limit as a number, 0 for none: a limit above MAX_BYTE_COUNT limits nothing this driver can
 * make (2^63 - 1 is a common way of saying "no limit"), so it is none.
 */
export function limitByteCount(value: Int64 | string | null | undefined, field: string): number {
  const exact = exactByteCount(value, field);
  return exact > BigInt(MAX_BYTE_COUNT) ? 0 : Number(exact);
}
