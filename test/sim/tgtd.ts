// A private, real tgtd on 127.0.0.1 for tests, the demo and the simulated host: own free iSCSI port,
// own control port (`tgtadm -C N`), stopped cleanly (targets force-deleted, then the daemon).
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const TGTD_START_TIMEOUT_MS = 10_000;
const TGTADM_TIMEOUT_MS = 10_000;
const READY_POLL_MS = 20;

export interface TgtDaemon {
  /** "127.0.0.1:PORT" */
  portal: string;
  port: number;
  controlPort: number;
  pid: number;
  /** runs `tgtadm -C <controlPort> --lld iscsi …args`; resolves stdout, rejects with stderr on failure */
  tgtadm(args: string[]): Promise<string>;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1 (bind to 0, read, close). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * tgtd's control socket is an abstract/unix socket keyed by the control port number (`-C N`), which
 * is not a TCP port: pick one not used by another tgtd on this machine.
 */
function pickControlPort(): number {
  return 1000 + Math.floor(Math.random() * 30000);
}

export async function startTgtd(opts: { port?: number; host?: string } = {}): Promise<TgtDaemon> {
  const host = opts.host ?? '127.0.0.1';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = opts.port ?? (await freePort(host));
    const controlPort = pickControlPort();
    const child = spawn('tgtd', ['-f', '-C', String(controlPort), '--iscsi', `portal=${host}:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => { stderr += d.toString(); });
    const tgtadm = (args: string[]): Promise<string> =>
      execFileP('tgtadm', ['-C', String(controlPort), '--lld', 'iscsi', ...args], { timeout: TGTADM_TIMEOUT_MS })
        .then((r) => r.stdout)
        .catch((e: { stderr?: string; message: string }) => { throw new Error(`tgtadm ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`); });
    if (await waitReady(child, tgtadm)) {
      return {
        portal: `${host}:${port}`, port, controlPort, pid: child.pid!, tgtadm,
        stop: () => stopTgtd(child, tgtadm),
      };
    }
    child.kill('SIGKILL');
    if (opts.port) throw new Error(`tgtd did not start on ${host}:${opts.port}: ${stderr.trim()}`);
  }
  throw new Error('tgtd did not start after 5 attempts');
}

async function waitReady(child: ChildProcess, tgtadm: (a: string[]) => Promise<string>): Promise<boolean> {
  const deadline = Date.now() + TGTD_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) return false;
    try {
      const portals = await tgtadm(['--op', 'show', '--mode', 'portal']);
      if (portals.includes('Portal:')) return true;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, READY_POLL_MS));
  }
  return false;
}

async function stopTgtd(child: ChildProcess, tgtadm: (a: string[]) => Promise<string>): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    const show = await tgtadm(['--op', 'show', '--mode', 'target']);
    for (const m of show.matchAll(/^Target (\d+):/gm)) {
      await tgtadm(['--op', 'delete', '--force', '--mode', 'target', '--tid', m[1]!]).catch(() => undefined);
    }
    await tgtadm(['--op', 'delete', '--mode', 'system']);
  } catch {
    child.kill('SIGTERM');
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), TGTD_START_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}
