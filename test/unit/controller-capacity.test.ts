import { describe, expect, it } from 'vitest';
import { backingBytes, capacitySatisfies, parseRange, sizeForCreate, sizeForExpand } from '../../src/controller/capacity.js';
import { InvalidArgument, OutOfRange } from '../../src/errors.js';

const GiB = 1024 ** 3;
const DEFAULT = GiB;

describe('capacity_range for CreateVolume', () => {
  it('uses the default without a range', () => {
    expect(sizeForCreate(parseRange(null), DEFAULT)).toBe(DEFAULT);
    expect(sizeForCreate(parseRange({ required_bytes: 0, limit_bytes: 0 }), DEFAULT)).toBe(DEFAULT);
  });

  it('honours required == limit exactly, also for sizes that are not whole sectors', () => {
    expect(sizeForCreate(parseRange({ required_bytes: 5 * GiB, limit_bytes: 5 * GiB }), DEFAULT)).toBe(5 * GiB);
    expect(sizeForCreate(parseRange({ required_bytes: 1000, limit_bytes: 1000 }), DEFAULT)).toBe(1000);
  });

  it('uses required bytes when only they are given', () => {
    expect(sizeForCreate(parseRange({ required_bytes: 3 * GiB, limit_bytes: 0 }), DEFAULT)).toBe(3 * GiB);
  });

  it('caps the default at a lone limit', () => {
    expect(sizeForCreate(parseRange({ required_bytes: 0, limit_bytes: 100 * 1024 * 1024 }), DEFAULT)).toBe(100 * 1024 * 1024);
    expect(sizeForCreate(parseRange({ required_bytes: 0, limit_bytes: 10 * GiB }), DEFAULT)).toBe(DEFAULT);
  });

  it('rejects limit < required and negative sizes with INVALID_ARGUMENT', () => {
    expect(() => parseRange({ required_bytes: 2 * GiB, limit_bytes: GiB })).toThrow(/larger than limit_bytes/);
    expect(() => parseRange({ required_bytes: -1, limit_bytes: 0 })).toThrow(/non-negative/);
    expect(() => parseRange({ required_bytes: 0, limit_bytes: -5 })).toThrow(/non-negative/);
  });
});

describe('a repeated CreateVolume', () => {
  it('matches an existing volume only within the new range', () => {
    expect(capacitySatisfies(GiB, parseRange({ required_bytes: GiB, limit_bytes: GiB }))).toBe(true);
    expect(capacitySatisfies(GiB, parseRange({ required_bytes: 2 * GiB, limit_bytes: 2 * GiB }))).toBe(false);
    expect(capacitySatisfies(2 * GiB, parseRange({ required_bytes: GiB, limit_bytes: GiB }))).toBe(false);
    expect(capacitySatisfies(GiB, parseRange(null))).toBe(true);
  });
});

describe('capacity_range for ControllerExpandVolume', () => {
  it('takes required bytes, else the limit, and needs one of them', () => {
    expect(sizeForExpand(parseRange({ required_bytes: 2 * GiB, limit_bytes: 0 }))).toBe(2 * GiB);
    expect(sizeForExpand(parseRange({ required_bytes: 0, limit_bytes: 3 * GiB }))).toBe(3 * GiB);
    expect(() => sizeForExpand(parseRange({ required_bytes: 0, limit_bytes: 0 }))).toThrow(/required/);
  });
});

describe('backing store size', () => {
  it('rounds up to whole 512-byte sectors so the device is never smaller than reported', () => {
    expect(backingBytes(1000)).toBe(1024);
    expect(backingBytes(GiB)).toBe(GiB);
    expect(backingBytes(GiB + 1)).toBe(GiB + 512);
  });
});

describe('int64 sizes are exact', () => {
  const EiB = 2n ** 60n;
  const INT64_MAX = 2n ** 63n - 1n;
  /** 2^53 - 512: the largest whole-sector size that is a safe JS integer (MAX_BYTE_COUNT) */
  const MAX_BYTE_COUNT = 2 ** 53 - 512;

  it('a required size beyond what the driver handles is OUT_OF_RANGE with the exact digits', () => {
    for (const [value, digits] of [[EiB, '1152921504606846976'], [INT64_MAX, '9223372036854775807']] as const) {
      const e = (() => { try { parseRange({ required_bytes: value, limit_bytes: 0 }); } catch (err) { return err; } return undefined; })();
      expect(e).toBeInstanceOf(OutOfRange);
      expect((e as Error).message).toContain(digits);
      expect((e as Error).message).toContain(`largest size this driver supports (${MAX_BYTE_COUNT} bytes)`);
    }
  });

  it('the largest supported size is taken exactly; a limit of 2^63-1 limits nothing', () => {
    expect(parseRange({ required_bytes: MAX_BYTE_COUNT, limit_bytes: 0 })).toEqual({ required: MAX_BYTE_COUNT, limit: 0 });
    expect(MAX_BYTE_COUNT % 512).toBe(0);
    expect(Number.isSafeInteger(MAX_BYTE_COUNT)).toBe(true);
    expect(parseRange({ required_bytes: GiB, limit_bytes: INT64_MAX })).toEqual({ required: GiB, limit: 0 });
    expect(sizeForCreate(parseRange({ required_bytes: 0, limit_bytes: INT64_MAX }), DEFAULT)).toBe(DEFAULT);
  });

  it('compares large values exactly: required above limit is INVALID_ARGUMENT with both numbers as sent', () => {
    expect(() => parseRange({ required_bytes: INT64_MAX, limit_bytes: EiB + 1n })).toThrow(InvalidArgument);
    expect(() => parseRange({ required_bytes: INT64_MAX, limit_bytes: EiB + 1n })).toThrow('required_bytes (9223372036854775807) is larger than limit_bytes (1152921504606846977)');
    expect(() => parseRange({ required_bytes: -(2n ** 62n), limit_bytes: 0 })).toThrow('non-negative integer, got -4611686018427387904');
  });
});
