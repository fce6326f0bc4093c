// pino JSON logs with secrets redacted everywhere: CSI `secrets` maps, CHAP keys wherever they appear,
// and Secret-wrapped command arguments (see runner.ts).
import { pino, type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

export const REDACTED = '[REDACTED]';

/** Keys whose values are never logged, whatever object they appear in. */
const SECRET_KEY_RE = /(password|passwd|secret|token|credential|chap)/i;

/**
 * A value that must never reach a log line, an error message or a file outside the protected state.
 * `toString`/`toJSON` render the placeholder; only `reveal()` yields the value.
 */
export class Secret {
  readonly #value: string;
  constructor(value: string) { this.#value = value; }
  reveal(): string { return this.#value; }
  toString(): string { return REDACTED; }
  toJSON(): string { return REDACTED; }
  [Symbol.for('nodejs.util.inspect.custom')](): string { return REDACTED; }
}

/** Longer strings are logged as their start and their length: a request never fills the log. */
export const MAX_LOGGED_STRING_CHARS = 256;
/** Entries of one list or object logged; the rest are counted. */
export const MAX_LOGGED_ENTRIES = 64;

function boundedString(s: string): string {
  return s.length > MAX_LOGGED_STRING_CHARS ? `${s.slice(0, MAX_LOGGED_STRING_CHARS)}…(${Buffer.byteLength(s)} bytes)` : s;
}

/**
 * Deep copy with every `secrets` map's values, every secret-looking key's value and every Secret
 * replaced by the placeholder, long strings and lists cut (MAX_LOGGED_*), bigints as their digits.
 * Used on request objects before they are logged.
 */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 12) return '[deep]';
  if (value instanceof Secret) return REDACTED;
  if (typeof value === 'string') return boundedString(value);
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value)) {
    const shown = value.slice(0, MAX_LOGGED_ENTRIES).map((v) => redact(v, depth + 1));
    return value.length > MAX_LOGGED_ENTRIES ? [...shown, `…${value.length - MAX_LOGGED_ENTRIES} more`] : shown;
  }
  if (value instanceof Uint8Array) return `<${value.length} bytes>`;
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    const entries = Object.entries(value);
    if (entries.length > MAX_LOGGED_ENTRIES) out['…'] = `${entries.length - MAX_LOGGED_ENTRIES} more keys`;
    for (const [rawKey, v] of entries.slice(0, MAX_LOGGED_ENTRIES)) {
      const k = boundedString(rawKey);
      if (rawKey === 'secrets' && v && typeof v === 'object') {
        out[k] = Object.fromEntries(Object.keys(v).slice(0, MAX_LOGGED_ENTRIES).map((sk) => [boundedString(sk), REDACTED]));
      } else if (SECRET_KEY_RE.test(rawKey) && (typeof v === 'string' || v instanceof Secret)) {
        out[k] = REDACTED;
      } else {
        out[k] = redact(v, depth + 1);
      }
    }
    return out;
  }
  return value;
}

export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
    redact: {
      paths: ['secrets', '*.secrets', '*.*.secrets', 'req.secrets', 'password', '*.password'],
      censor: REDACTED,
    },
  };
  return destination ? pino(options, destination) : pino(options, pino.destination({ dest: 2, sync: true }));
}
