// The simulated kernel process: owns the simulated state under R and answers the fake iscsiadm /
// multipath / multipathd commands and the host API over R/run/kernel.sock.
//   node dist/test/sim/kernel-main.js --root R [--multipath] [--tgtd CTL]... [--log-level L]
// Prints one JSON line {"ready":true,"pid":N} on stdout once it listens. It logs out every session
// and detaches its loop devices on `shutdown`, SIGTERM, SIGINT, or when its parent goes away (stdin
// closes), so a crashed test run leaves no session, device or loop behind.
import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { ISCSID_SOCKET, listensAt } from '../../src/doctor/iscsi.js';
import { SimKernel, type LogFn } from './kernel.js';
import { hangOpsOf, iscsiadm } from './iscsiadm.js';
import { multipath, multipathd } from './multipath.js';
import {
  BINARY_REQUEST_MAGIC, encodeBinaryToolReply, isTool, parseBinaryToolRequest,
  type AdminRequest, type StateReply, type ToolReply, type ToolRequest,
} from './protocol.js';
import type { HangOp } from './faults.js';

const LEVELS = ['debug', 'info', 'warn', 'error'] as const;

function parseArgs(argv: string[]): { root: string; multipath: boolean; tgtd: number[]; logLevel: string } {
  const out = { root: '', multipath: false, tgtd: [] as number[], logLevel: process.env.SIM_LOG ?? 'warn' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--root') out.root = argv[++i]!;
    else if (a === '--multipath') out.multipath = true;
    else if (a === '--tgtd') out.tgtd.push(Number(argv[++i]));
    else if (a === '--log-level') out.logLevel = argv[++i]!;
  }
  if (!out.root.startsWith('/')) throw new Error('--root /abs/path is required');
  return out;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const minLevel = Math.max(0, LEVELS.indexOf(args.logLevel as (typeof LEVELS)[number]));
  const log: LogFn = (level, msg, extra) => {
    if (LEVELS.indexOf(level) < minLevel && args.logLevel !== 'debug') return;
    process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, component: 'sim-kernel', msg, ...extra })}\n`);
  };
  const kernel = new SimKernel({ root: args.root, multipath: args.multipath, tgtdControlPorts: args.tgtd, log });
  await kernel.init();

  const handleTool = async (req: ToolRequest): Promise<ToolReply> => {
    if (!isTool(req.tool)) return { stdout: '', stderr: `sim-kernel: unknown tool ${JSON.stringify(req.tool)}\n`, code: 1 };
    const hang = kernel.faults().hang ?? [];
    const ops: HangOp[] = req.tool === 'iscsiadm' ? hangOpsOf(req.argv) : [req.tool];
    if (ops.some((op) => hang.includes(op))) {
      log('info', 'fault hang: command will never return', { tool: req.tool, ops });
      return { stdout: '', stderr: '', code: 0, hang: true };
    }
    return kernel.serial(() => (req.tool === 'iscsiadm' ? iscsiadm(kernel, req.argv) : req.tool === 'multipath' ? multipath(kernel, req.argv) : multipathd(kernel, req.argv)));
  };

  const state = (): StateReply => ({
    sessions: kernel.summaries(),
    maps: [...kernel.maps.values()].map((m) => ({ name: m.name, dm: `dm-${m.index}`, wwid: m.wwid, paths: m.paths.map((p) => p.disk!.name) })),
    loops: kernel.loopDevices(),
  });

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      server.close();
      await kernel.serial(() => kernel.shutdown()).catch((e: Error) => log('error', 'shutdown failed', { error: e.message }));
      rmSync(kernel.paths.kernelSocket, { force: true });
      log('info', 'simulated kernel stopped');
    })();
    return stopping;
  };

  // Answers one request, whichever wire form it came in: the same faults, serialisation and ordering.
  function answer(req: ToolRequest): Promise<ToolReply>;
  function answer(req: ToolRequest | AdminRequest): Promise<unknown>;
  async function answer(req: ToolRequest | AdminRequest): Promise<unknown> {
    // Control-file writes made before this request was sent are reported by the same or an earlier
    // poll round: let their callbacks queue their work first, so a request sees their effect.
    await new Promise((r) => setImmediate(r));
    try {
      if ('tool' in req) return await handleTool(req);
      if (req.admin === 'ping') return { ok: true };
      if (req.admin === 'sessions') return await kernel.serial(async () => state());
      if (req.admin === 'faults') return await kernel.serial(async () => { await kernel.applySessionFaults(); return { ok: true }; });
      if (req.admin === 'shutdown') {
        await stop();
        return { ok: true };
      }
      return { error: 'unknown request' };
    } catch (e) {
      log('error', 'request failed', { error: (e as Error).stack ?? String(e) });
      return { stdout: '', stderr: `${'tool' in req ? req.tool : 'kernel'}: internal error in the simulated kernel: ${(e as Error).message}\n`, code: 9 };
    }
  }

  const serveJson = async (sock: Socket, line: string): Promise<void> => {
    let req: ToolRequest | AdminRequest;
    try {
      req = JSON.parse(line) as ToolRequest | AdminRequest;
    } catch {
      sock.end(JSON.stringify({ stdout: '', stderr: 'bad request\n', code: 1 }) + '\n');
      return;
    }
    const reply = await answer(req);
    sock.end(JSON.stringify(reply) + '\n');
    if ('admin' in req && req.admin === 'shutdown') setImmediate(() => process.exit(0));
  };

  const serveBinary = async (sock: Socket, req: ToolRequest): Promise<void> => {
    sock.end(encodeBinaryToolReply(await answer(req)));
  };

  const BINARY_FIRST_BYTE = BINARY_REQUEST_MAGIC.charCodeAt(0);
  const NEWLINE = 0x0a;
  const server = createServer((sock) => {
    // one request per connection: bytes after it are ignored
    let buf: Buffer = Buffer.alloc(0);
    let taken = false;
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => {
      if (taken) return;
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      if (buf[0] === BINARY_FIRST_BYTE) {
        const p = parseBinaryToolRequest(buf);
        if (p.state === 'incomplete') return;
        taken = true;
        buf = Buffer.alloc(0);
        if (p.state === 'bad') sock.end(encodeBinaryToolReply({ stdout: '', stderr: `sim-kernel: bad request: ${p.error}\n`, code: 1 }));
        else void serveBinary(sock, { tool: p.tool as ToolRequest['tool'], argv: p.argv });
        return;
      }
      const nl = buf.indexOf(NEWLINE);
      if (nl >= 0) {
        taken = true;
        const line = buf.subarray(0, nl).toString('utf8');
        buf = Buffer.alloc(0);
        void serveJson(sock, line);
      }
    });
  });
  rmSync(kernel.paths.kernelSocket, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(kernel.paths.kernelSocket, resolve);
  });
  holdIscsidSocket(log);
  await iscsidSocketListed(log);

  const exitAfterStop = (): void => {
    void stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', exitAfterStop);
  process.on('SIGINT', exitAfterStop);
  // the parent holds our stdin open; when it dies, clean up and go
  process.stdin.on('end', exitAfterStop);
  process.stdin.on('close', exitAfterStop);
  process.stdin.resume();
  process.stdout.write(JSON.stringify({ ready: true, pid: process.pid }) + '\n');
}

/**
 * iscsid's control socket as a real node has it: iscsid, or systemd's iscsid.socket, listens on the
 * abstract unix socket ISCSIADM_ABSTRACT_NAMESPACE of its network namespace (exactly that name, no
 * padding), which `iscsi-csi doctor` looks for. Node binds abstract names padded with NULs to the whole
 * sun_path, which is another name, so a small perl (perl-base is essential on Debian) holds it. The fake
 * iscsiadm talks to this process over R/run/kernel.sock instead: connections there are closed at once.
 * Abstract names are per network namespace, not per root: while another simulated host (or a real
 * iscsid) holds it, the holder retries every 20 ms, so when that host stops, the name is listened on
 * again before a driver starting meanwhile looks (retrying every second left a gap a doctor check at
 * start fell into on a loaded machine). It exits when this process does (its stdin closes).
 */
const ISCSID_SOCKET_HOLDER = `
use Socket;
socket(my $s, AF_UNIX, SOCK_STREAM, 0) or exit 1;
sub parent_gone { my $r = ''; vec($r, fileno(STDIN), 1) = 1; return select($r, undef, undef, $_[0]) > 0 && sysread(STDIN, my $b, 1) == 0; }
until (bind($s, pack_sockaddr_un("\\0ISCSIADM_ABSTRACT_NAMESPACE"))) { exit 0 if parent_gone(0.02); }
listen($s, 16) or exit 1;
for (;;) {
  my $r = ''; vec($r, fileno(STDIN), 1) = 1; vec($r, fileno($s), 1) = 1;
  select(my $ready = $r, undef, undef, undef) > 0 or next;
  if (vec($ready, fileno($s), 1)) { accept(my $c, $s) and close($c); }
  if (vec($ready, fileno(STDIN), 1)) { exit 0 if sysread(STDIN, my $b, 4096) == 0; }
}
`;

function holdIscsidSocket(log: LogFn): void {
  const cannot = (e: Error) => log('warn', 'cannot hold iscsid\'s control socket (no perl?): doctor will not find iscsid', { error: e.message });
  try {
    const holder = spawn('perl', ['-e', ISCSID_SOCKET_HOLDER], { stdio: ['pipe', 'ignore', 'ignore'] });
    holder.on('error', cannot);
    holder.stdin?.on('error', () => undefined);
    holder.unref();
  } catch (e) {
    cannot(e as Error);
  }
}

const ISCSID_SOCKET_WAIT_MS = 3_000;

/**
 * The host is ready once someone listens on iscsid's control socket (its holder, or another host's
 * that holds the name): a driver started at once runs its doctor checks right after it serves.
 */
async function iscsidSocketListed(log: LogFn): Promise<void> {
  const end = Date.now() + ISCSID_SOCKET_WAIT_MS;
  while (Date.now() < end) {
    if (listensAt(readFileSync('/proc/net/unix', 'utf8'), ISCSID_SOCKET)) return;
    await sleep(10);
  }
  log('warn', 'nobody listens on iscsid\'s control socket yet: doctor may not find iscsid', {});
}

main().catch((e: Error) => {
  process.stderr.write(`sim-kernel: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
