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

/**
 * Deep copy with every `secrets` map's values, every secret-looking key's value and every Secret
 * replaced by the placeholder. Used on request objects before they are logged.
 */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 12) return '[deep]';
  if (value instanceof Secret) return REDACTED;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  if (value instanceof Uint8Array) return `<${value.length} bytes>`;
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === 'secrets' && v && typeof v === 'object') {
        out[k] = Object.fromEntries(Object.keys(v).map((sk) => [sk, REDACTED]));
      } else if (SECRET_KEY_RE.test(k) && (typeof v === 'string' || v instanceof Secret)) {
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
