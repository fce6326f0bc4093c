// Bounds on the string maps a CSI request carries (volume_context, publish_context, secrets,
// parameters, mutable_parameters): the driver's own keys and values are short (a portal list of 16
// IPv6 portals is under 1 KiB), so anything far larger is a mistake or an attack, refused with
// INVALID_ARGUMENT naming the field and the bound before any handler runs, and never logged whole.
import { InvalidArgument } from '../errors.js';

/** The bounds, per map. */
export const REQUEST_MAP_LIMITS = {
  /** bytes (UTF-8) of one key: Kubernetes' own keys (`csi.storage.k8s.io/pvc/namespace`) are < 64 */
  keyBytes: 256,
  /** bytes of one value: room for a path (PATH_MAX) or a long portal list */
  valueBytes: 4096,
  /** keys in one map */
  entries: 64,
  /** bytes of all keys and values of one map together */
  totalBytes: 16 * 1024,
} as const;

/** The request fields that are map<string, string> and checked against REQUEST_MAP_LIMITS. */
export const BOUNDED_MAP_FIELDS = ['volume_context', 'publish_context', 'secrets', 'parameters', 'mutable_parameters'] as const;

/** How much of an offending key a message quotes. */
const QUOTED_KEY_CHARS = 64;

function quoteKey(key: string): string {
  return key.length > QUOTED_KEY_CHARS ? `${JSON.stringify(key.slice(0, QUOTED_KEY_CHARS))}…` : JSON.stringify(key);
}

/** Checks one map field; the message names the field, the key (never a value) and the bound. */
export function checkStringMap(map: unknown, field: string): void {
  if (map === undefined || map === null) return;
  if (typeof map !== 'object' || Array.isArray(map)) throw new InvalidArgument(`${field} must be a map of strings`);
  const { keyBytes, valueBytes, entries, totalBytes } = REQUEST_MAP_LIMITS;
  const keys = Object.keys(map);
  if (keys.length > entries) throw new InvalidArgument(`${field} has ${keys.length} entries; at most ${entries} are accepted`);
  let total = 0;
  for (const key of keys) {
    const value = (map as Record<string, unknown>)[key];
    if (typeof value !== 'string') throw new InvalidArgument(`${field}[${quoteKey(key)}] must be a string`);
    const kb = Buffer.byteLength(key);
    if (kb > keyBytes) throw new InvalidArgument(`${field} has a key of ${kb} bytes (${quoteKey(key)}); at most ${keyBytes} bytes per key`);
    const vb = Buffer.byteLength(value);
    if (vb > valueBytes) throw new InvalidArgument(`${field}[${quoteKey(key)}] is ${vb} bytes; at most ${valueBytes} bytes per value`);
    total += kb + vb;
  }
  if (total > totalBytes) throw new InvalidArgument(`${field} is ${total} bytes in all; at most ${totalBytes} bytes per map`);
}

/** Every bounded map field of a decoded request. */
export function checkRequestMaps(req: Record<string, unknown>): void {
  for (const field of BOUNDED_MAP_FIELDS) checkStringMap(req[field], field);
}
