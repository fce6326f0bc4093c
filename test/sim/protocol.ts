// The JSON-lines protocol between the fake host commands (sim-cli.ts), the host API (host.ts) and
// the simulated kernel process (kernel-main.ts), over the Unix socket R/run/kernel.sock:
// one request line, one reply line, then the kernel closes the connection.
import { connect } from 'node:net';
import type { SessionSummary } from './kernel.js';

export type Tool = 'iscsiadm' | 'multipath' | 'multipathd';

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
