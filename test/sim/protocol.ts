// The protocols between the fake host commands, the host API (host.ts) and the simulated kernel
// process (kernel-main.ts), over the Unix socket R/run/kernel.sock. One request per connection; the
// kernel answers and closes the connection. The first byte tells the two forms apart:
//
// JSON lines (host.ts's request(), the Node client sim-cli.ts): one request line (ToolRequest or
// AdminRequest as JSON, so it starts with '{'), one reply line (ToolReply / admin reply as JSON).
//
// Binary tool framing (the native client sim-cli.c; tool requests only), binary-safe both ways:
//   request = "SIM1 <n> <len_0> … <len_n-1>\n" then the n strings' bytes back to back, no separators;
//             string 0 is the tool name, strings 1… its argv (any bytes but NUL, the empty string too);
//             <n> and <len_i> are decimal byte counts, separated by single spaces.
//   reply   = "<code> <hang> <stdoutLen> <stderrLen>\n" then stdout's bytes, then stderr's bytes;
//             <hang> is 1 when the command must block until it is killed (fault switch), else 0.
// Arguments are decoded as UTF-8 (an invalid byte becomes U+FFFD, as in Node's process.argv), the
// outputs are sent as UTF-8. A malformed request or an unknown tool gets an error reply (code 1).
import { connect } from 'node:net';
import type { SessionSummary } from './kernel.js';

export type Tool = 'iscsiadm' | 'multipath' | 'multipathd';
export const TOOLS: readonly Tool[] = ['iscsiadm', 'multipath', 'multipathd'];

export function isTool(name: unknown): name is Tool {
  return typeof name === 'string' && (TOOLS as readonly string[]).includes(name);
}

export interface ToolRequest { tool: Tool; argv: string[] }
export interface ToolReply { stdout: string; stderr: string; code: number; hang?: boolean }

export type AdminRequest = { admin: 'ping' | 'sessions' | 'faults' | 'shutdown' };

export interface StateReply {
  sessions: SessionSummary[];
  maps: { name: string; dm: string; wwid: string; paths: string[] }[];
  loops: string[];
}

export const KERNEL_REQUEST_TIMEOUT_MS = 60_000;

/** Sends one request and resolves the reply (rejects if the kernel is not there or does not answer). */
export function request<T>(socketPath: string, req: ToolRequest | AdminRequest, timeoutMs = KERNEL_REQUEST_TIMEOUT_MS): Promise<T> {
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`simulated kernel did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => { buf += d; });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf) as T);
      } catch {
        reject(new Error(`bad reply from the simulated kernel: ${buf.slice(0, 200)}`));
      }
    });
  });
}

/** Starts a binary tool request (never '{', the first byte of a JSON request). */
export const BINARY_REQUEST_MAGIC = 'SIM1 ';
/** Bounds what the kernel buffers while waiting for a binary request's header line. */
export const BINARY_MAX_HEADER_BYTES = 1 << 20;
/** Bounds the number of strings (tool + argv) of a binary request. */
export const BINARY_MAX_STRINGS = 1 << 16;
/** Bounds the argument bytes of a binary request (Linux's ARG_MAX is 2 MiB by default). */
export const BINARY_MAX_BODY_BYTES = 16 << 20;

/** Frames a tool request in the binary form (what sim-cli.c sends). */
export function encodeBinaryToolRequest(tool: string, argv: (string | Buffer)[]): Buffer {
  const parts = [Buffer.from(tool, 'utf8'), ...argv.map((a) => (typeof a === 'string' ? Buffer.from(a, 'utf8') : a))];
  const header = `${BINARY_REQUEST_MAGIC}${parts.length}${parts.map((p) => ` ${p.length}`).join('')}\n`;
  return Buffer.concat([Buffer.from(header, 'latin1'), ...parts]);
}

export type BinaryParse =
  | { state: 'incomplete' }
  | { state: 'bad'; error: string }
  | { state: 'done'; tool: string; argv: string[] };

const DECIMAL = /^(0|[1-9][0-9]{0,15})$/;

/** Parses a binary tool request from the bytes received so far. */
export function parseBinaryToolRequest(buf: Buffer): BinaryParse {
  const nl = buf.indexOf(0x0a);
  if (nl < 0) return buf.length > BINARY_MAX_HEADER_BYTES ? { state: 'bad', error: 'request header too long' } : { state: 'incomplete' };
  const header = buf.subarray(0, nl).toString('latin1');
  if (!header.startsWith(BINARY_REQUEST_MAGIC)) return { state: 'bad', error: 'not a binary request' };
  const fields = header.slice(BINARY_REQUEST_MAGIC.length).split(' ');
  if (!fields.every((f) => DECIMAL.test(f))) return { state: 'bad', error: 'malformed request header' };
  const [count, ...lengths] = fields.map(Number) as [number, ...number[]];
  if (count < 1 || count > BINARY_MAX_STRINGS || lengths.length !== count) return { state: 'bad', error: 'malformed request header' };
  const total = lengths.reduce((s, l) => s + l, 0);
  if (total > BINARY_MAX_BODY_BYTES) return { state: 'bad', error: 'request too large' };
  const body = buf.subarray(nl + 1);
  if (body.length < total) return { state: 'incomplete' };
  if (body.length > total) return { state: 'bad', error: 'trailing bytes after the request' };
  const strings: string[] = [];
  let at = 0;
  for (const l of lengths) {
    strings.push(body.subarray(at, at + l).toString('utf8'));
    at += l;
  }
  const [tool, ...argv] = strings as [string, ...string[]];
  return { state: 'done', tool, argv };
}

/** Frames a tool reply in the binary form (what sim-cli.c reads). */
export function encodeBinaryToolReply(reply: ToolReply): Buffer {
  const out = Buffer.from(reply.stdout, 'utf8');
  const err = Buffer.from(reply.stderr, 'utf8');
  return Buffer.concat([Buffer.from(`${reply.code} ${reply.hang ? 1 : 0} ${out.length} ${err.length}\n`, 'latin1'), out, err]);
}

/** Reads a binary tool reply (for tests); throws on a malformed one. */
export function decodeBinaryToolReply(buf: Buffer): { code: number; hang: boolean; stdout: Buffer; stderr: Buffer } {
  const nl = buf.indexOf(0x0a);
  const m = nl < 0 ? null : /^(-?\d+) ([01]) (\d+) (\d+)$/.exec(buf.subarray(0, nl).toString('latin1'));
  if (!m) throw new Error('malformed binary reply header');
  const outLen = Number(m[3]);
  const errLen = Number(m[4]);
  if (buf.length !== nl + 1 + outLen + errLen) throw new Error('binary reply length does not match its header');
  return { code: Number(m[1]), hang: m[2] === '1', stdout: buf.subarray(nl + 1, nl + 1 + outLen), stderr: buf.subarray(nl + 1 + outLen) };
}
