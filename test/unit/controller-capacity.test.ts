import { describe, expect, it } from 'vitest';
import { backingBytes, capacitySatisfies, parseRange, sizeForCreate, sizeForExpand } from '../../src/controller/capacity.js';

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
