import { describe, expect, it } from 'vitest';
import { InvalidArgument } from '../../src/errors.js';
import { BOUNDED_MAP_FIELDS, checkRequestMaps, checkStringMap, REQUEST_MAP_LIMITS } from '../../src/common/request-limits.js';
import { MAX_LOGGED_ENTRIES, MAX_LOGGED_STRING_CHARS, REDACTED, redact } from '../../src/log.js';

const { keyBytes, valueBytes, entries, totalBytes } = REQUEST_MAP_LIMITS;

function refusal(fn: () => void): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('not refused');
}

describe('request map bounds', () => {
  it('has documented bounds', () => {
    expect(REQUEST_MAP_LIMITS).toEqual({ keyBytes: 256, valueBytes: 4096, entries: 64, totalBytes: 16384 });
    expect(BOUNDED_MAP_FIELDS).toEqual(['volume_context', 'publish_context', 'secrets', 'parameters', 'mutable_parameters']);
  });

  it('accepts maps up to every bound', () => {
    checkStringMap({}, 'volume_context');
    checkStringMap(undefined, 'volume_context');
    checkStringMap({ ['k'.repeat(keyBytes)]: 'v'.repeat(valueBytes) }, 'volume_context');
    checkStringMap(Object.fromEntries(Array.from({ length: entries }, (_, i) => [`k${i}`, 'v'])), 'parameters');
  });

  it('refuses a value, a key, too many entries or too many bytes, naming the field, the key and the bound, never the value', () => {
    const big = 'S3cr3t'.repeat(200_000);
    const value = refusal(() => checkRequestMaps({ secrets: { 'node.session.auth.password': big } }));
    expect(value).toBeInstanceOf(InvalidArgument);
    expect(value.message).toBe(`secrets["node.session.auth.password"] is ${big.length} bytes; at most ${valueBytes} bytes per value`);
    const key = refusal(() => checkStringMap({ [big]: 'x' }, 'volume_context'));
    expect(key.message).toContain(`volume_context has a key of ${big.length} bytes`);
    expect(key.message).toContain(`at most ${keyBytes} bytes per key`);
    expect(key.message.length).toBeLessThan(300);
    const many = refusal(() => checkStringMap(Object.fromEntries(Array.from({ length: entries + 1 }, (_, i) => [`k${i}`, 'v'])), 'publish_context'));
    expect(many.message).toBe(`publish_context has ${entries + 1} entries; at most ${entries} are accepted`);
    const total = refusal(() => checkStringMap(Object.fromEntries(Array.from({ length: 5 }, (_, i) => [`k${i}`, 'v'.repeat(valueBytes)])), 'parameters'));
    expect(total.message).toContain(`at most ${totalBytes} bytes per map`);
    for (const field of BOUNDED_MAP_FIELDS) {
      expect(refusal(() => checkRequestMaps({ [field]: { a: 'x'.repeat(valueBytes + 1) } })).message).toContain(field);
    }
    expect(refusal(() => checkStringMap({ a: 5 }, 'parameters')).message).toBe('parameters["a"] must be a string');
  });
});

describe('redact bounds what it logs', () => {
  it('cuts long strings and lists and renders bigints as digits; secrets stay redacted', () => {
    const long = 'x'.repeat(1024 * 1024);
    const out = redact({
      volume_context: { note: long, ['password'.padStart(400, 'k')]: 'hidden' },
      mount_flags: Array.from({ length: 1000 }, (_, i) => `f${i}`),
      capacity_range: { required_bytes: 2n ** 63n - 1n },
      secrets: { user: 'u' },
    }) as Record<string, Record<string, unknown>>;
    const text = JSON.stringify(out);
    expect(text.length).toBeLessThan(4000);
    expect(out.volume_context!.note).toBe(`${'x'.repeat(MAX_LOGGED_STRING_CHARS)}…(1048576 bytes)`);
    expect(text).not.toContain('hidden');
    expect((out.mount_flags as unknown as string[]).length).toBe(MAX_LOGGED_ENTRIES + 1);
    expect(out.capacity_range!.required_bytes).toBe('9223372036854775807');
    expect(out.secrets).toEqual({ user: REDACTED });
  });
});
