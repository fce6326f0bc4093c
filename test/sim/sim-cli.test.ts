// The native fake-command client (sim-cli.c) against the Node one (sim-cli.ts): R/bin/* run the
// native binary, and both clients give the same bytes on stdout and stderr and the same exit code,
// whatever the arguments hold; the binary framing of protocol.ts; daemon down; the hang fault.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { distDir, nativeClientBinary, SimulatedHost } from './host.js';
import { decodeBinaryToolReply, encodeBinaryToolReply, encodeBinaryToolRequest, parseBinaryToolRequest, type Tool } from './protocol.js';

const IQN = 'iqn.2026-11.io.example:cli';
const MiB = 1 << 20;
const NODE_CLIENT = join(distDir(), 'test/sim/sim-cli.js');
const HANG_OBSERVE_MS = 300;
const RUN_TIMEOUT_MS = 20_000;

interface RawResult { code: number | null; signal: NodeJS.Signals | null; stdout: Buffer; stderr: Buffer }

function runRaw(file: string, args: string[]): Promise<RawResult> {
  return new Promise((res) => {
    execFile(file, args, { encoding: 'buffer', timeout: RUN_TIMEOUT_MS, killSignal: 'SIGKILL', maxBuffer: 16 * MiB }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: unknown; signal?: NodeJS.Signals | null }) | null;
      res({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
    });
  });
}

/** Sends raw bytes to the kernel socket and resolves everything it answers. */
function rawKernelRequest(socket: string, bytes: Buffer): Promise<Buffer> {
  return new Promise((res, rej) => {
    const chunks: Buffer[] = [];
    const sock = connect(socket);
    sock.on('connect', () => {
      // in two pieces: the kernel must wait for the whole request
      const cut = Math.floor(bytes.length / 2);
      sock.write(bytes.subarray(0, cut));
      setTimeout(() => sock.write(bytes.subarray(cut)), 20);
    });
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', rej);
    sock.on('end', () => res(Buffer.concat(chunks)));
  });
}

describe('binary tool framing (protocol.ts)', () => {
  it('parses a request only once all of it is there, with empty and non-ASCII arguments intact', () => {
    const argv = ['-m', '', 'a b', 'x\ny', 'é日本'];
    const bytes = encodeBinaryToolRequest('iscsiadm', argv);
    expect(bytes.subarray(0, bytes.indexOf(0x0a)).toString()).toBe(`SIM1 6 8 2 0 3 3 ${Buffer.byteLength('é日本')}`);
    for (let cut = 0; cut < bytes.length; cut++) expect(parseBinaryToolRequest(bytes.subarray(0, cut)).state).toBe('incomplete');
    expect(parseBinaryToolRequest(bytes)).toEqual({ state: 'done', tool: 'iscsiadm', argv });
  });

  it('rejects malformed headers and trailing bytes', () => {
    for (const bad of ['SIM1 2 8\n', 'SIM1 1 08\niscsiadm', 'SIM1 1 -8\n', 'SIM1 0\n', 'SIM1  1 8\niscsiadm', 'SIMX 1 8\niscsiadm', 'SIM1 1 3\nabcd']) {
      expect(parseBinaryToolRequest(Buffer.from(bad)).state, JSON.stringify(bad)).toBe('bad');
    }
  });

  it('frames a reply as a header line and the raw output bytes', () => {
    const bytes = encodeBinaryToolReply({ stdout: 'ok é\n', stderr: '', code: 21 });
    expect(bytes.toString()).toBe('21 0 6 0\nok é\n');
    expect(decodeBinaryToolReply(encodeBinaryToolReply({ stdout: '', stderr: '', code: 0, hang: true }))).toEqual({ code: 0, hang: true, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) });
  });
});

describe.skipIf(process.getuid?.() !== 0)('native fake-command client', () => {
  let host: SimulatedHost;
  let portal: string;
  let emptyRoot: string;
  const native = (tool: Tool, args: string[]) => runRaw(host.bin(tool), args);
  const viaNode = (tool: Tool, args: string[]) => runRaw(process.execPath, [NODE_CLIENT, '--sim-root', host.root, '--tool', tool, ...args]);

  /** Runs args with both clients and expects the same bytes and exit code; returns the native result. */
  async function same(tool: Tool, args: string[]): Promise<RawResult> {
    const n = await native(tool, args);
    const j = await viaNode(tool, args);
    expect({ code: n.code, stdout: n.stdout.toString('hex'), stderr: n.stderr.toString('hex') }, JSON.stringify([tool, ...args]))
      .toEqual({ code: j.code, stdout: j.stdout.toString('hex'), stderr: j.stderr.toString('hex') });
    return n;
  }

  beforeAll(async () => {
    host = await SimulatedHost.create();
    portal = host.tgtd.portal;
    await host.createTarget(IQN, [{ lun: 1, sizeBytes: 16 * MiB }]);
    emptyRoot = mkdtempSync('/tmp/sim-cli-test-');
  });

  afterAll(async () => {
    await host?.destroy();
    if (emptyRoot) rmSync(emptyRoot, { recursive: true, force: true });
  });

  it('is what R/bin/* run (no Node start per call)', async () => {
    const bin = await nativeClientBinary();
    expect(bin).toBe(join(distDir(), 'test/sim/sim-cli.bin'));
    expect(host.client).toBe('native');
    for (const tool of ['iscsiadm', 'multipath', 'multipathd'] as const) {
      // exec'd under the tool's name (a link to the binary), so /proc/PID/comm is the tool's
      const named = join(host.paths.libexec, tool);
      expect(readFileSync(host.bin(tool), 'utf8')).toBe(`#!/bin/sh\nexec '${named}' '--sim-root' '${host.root}' '--tool' '${tool}' "$@"\n`);
      expect(readlinkSync(named)).toBe(bin);
    }
  });

  it('prints the same outputs and exit codes as the Node client', async () => {
    expect((await same('iscsiadm', ['-m', 'session'])).code).toBe(21);
    const disc = await same('iscsiadm', ['-m', 'discovery', '-t', 'sendtargets', '-p', portal]);
    expect(disc.stdout.toString()).toBe(`${portal},1 ${IQN}\n`);
    expect((await host.run('iscsiadm', ['-m', 'node', '-T', IQN, '-p', portal, '--login'])).code).toBe(0);
    for (const args of [
      ['--version'], ['-m', 'iface'], ['-m', 'node'], ['-m', 'node', '-T', IQN, '-p', portal, '-o', 'show'],
      ['-m', 'session'], ['-m', 'session', '-P', '3'],
      // failures: exit codes 6, 21, 15, 7
      ['-m', 'iface', '-I', 'nosuch', '-o', 'show'], ['-m', 'node', '-T', 'iqn.2026-11.io.example:nosuch', '-p', portal, '--login'],
      ['-m', 'node', '-T', IQN, '-p', portal, '--login'], ['-m'],
    ]) {
      const r = await same('iscsiadm', args);
      expect(r.stdout.length + r.stderr.length).toBeGreaterThan(0);
    }
    expect((await host.run('iscsiadm', ['-m', 'node', '-T', IQN, '-p', portal, '--logout'])).code).toBe(0);
    await same('multipath', ['-ll']);
    await same('multipathd', ['show', 'maps']);
  });

  it('passes every argument through verbatim: empty, spaces, quotes, newlines, UTF-8, its own option names, 100 KiB', async () => {
    const odd = ['', ' ', 'a b', `it's "quoted"`, 'line1\nline2\n', 'é日本🙂', '$HOME `id` \\ * ;', '-', '--sim-root', '--tool', 'x'.repeat(100 * 1024)];
    for (const o of odd) {
      const r = await same('iscsiadm', ['-m', 'node', '-o', o]);
      // the real iscsiadm echoes an unknown operation: proof the bytes arrived unchanged
      expect(r.code).toBe(7);
      expect(r.stderr.toString()).toBe(`iscsiadm: can not recognize operation: '${o}'\n`);
    }
    // a second --sim-root / a later --tool belong to the tool
    expect((await same('iscsiadm', ['-m', 'session', '--tool', 'multipath'])).stderr.toString()).toBe("iscsiadm: unrecognized option '--tool'\n");
    expect((await same('iscsiadm', ['--sim-root', '/elsewhere'])).stderr.toString()).toBe("iscsiadm: unrecognized option '--sim-root'\n");
    // a value stored and shown back
    await same('iscsiadm', ['-m', 'iface', '-I', 'odd', '-o', 'new']);
    for (const value of [`a b "c" 'd' é`, '']) {
      expect((await same('iscsiadm', ['-m', 'iface', '-I', 'odd', '-o', 'update', '-n', 'iface.initiatorname', '-v', value])).code).toBe(0);
      const shown = await same('iscsiadm', ['-m', 'iface', '-I', 'odd', '-o', 'show']);
      expect(shown.stdout.toString()).toContain(`\niface.initiatorname = ${value || '<empty>'}\n`);
    }
    // bytes that are not UTF-8 (only a shell can pass them): decoded like Node's process.argv
    const viaSh = (file: string, pre: string[]) => runRaw('/bin/sh', ['-c', 'exec "$@" -m node -o "$(printf "a\\377b\\303")"', 'sh', file, ...pre]);
    const n = await viaSh(host.bin('iscsiadm'), []);
    const j = await viaSh(process.execPath, [NODE_CLIENT, '--sim-root', host.root, '--tool', 'iscsiadm']);
    expect(n.stderr.toString()).toBe("iscsiadm: can not recognize operation: 'a\uFFFDb\uFFFD'\n");
    expect({ code: n.code, stderr: n.stderr.toString('hex') }).toEqual({ code: j.code, stderr: j.stderr.toString('hex') });
  });

  it('prints what the real tools print when the daemon cannot be reached (no socket, or nobody on it)', async () => {
    const cli = join(distDir(), 'test/sim/sim-cli.bin');
    const refused = mkdtempSync(join(emptyRoot, 'refused-'));
    mkdirSync(join(refused, 'run'));
    writeFileSync(join(refused, 'run/kernel.sock'), '');
    for (const root of [emptyRoot, refused]) {
      const cases: [Tool, number, string][] = [
        ['iscsiadm', 20, 'iscsiadm: can not connect to iSCSI daemon (111)!\n'],
        ['multipath', 1, 'ERROR: failed to connect to multipathd\n'],
        ['multipathd', 1, 'ERROR: failed to connect to multipathd\n'],
      ];
      for (const [tool, code, stderr] of cases) {
        const n = await runRaw(cli, ['--sim-root', root, '--tool', tool, '-m', 'session']);
        expect({ code: n.code, stdout: n.stdout.toString(), stderr: n.stderr.toString() }).toEqual({ code, stdout: '', stderr });
        const j = await runRaw(process.execPath, [NODE_CLIENT, '--sim-root', root, '--tool', tool, '-m', 'session']);
        expect({ code: j.code, stdout: j.stdout.toString(), stderr: j.stderr.toString() }).toEqual({ code, stdout: '', stderr });
      }
    }
  });

  it('answers an unknown tool and a malformed binary request with an error, and JSON requests still work', async () => {
    const unknown = decodeBinaryToolReply(await rawKernelRequest(host.paths.kernelSocket, encodeBinaryToolRequest('mount', ['-a'])));
    expect({ ...unknown, stdout: unknown.stdout.toString(), stderr: unknown.stderr.toString() }).toEqual({ code: 1, hang: false, stdout: '', stderr: 'sim-kernel: unknown tool "mount"\n' });
    const bad = decodeBinaryToolReply(await rawKernelRequest(host.paths.kernelSocket, Buffer.from('SIM1 x\n')));
    expect(bad.code).toBe(1);
    expect(bad.stderr.toString()).toBe('sim-kernel: bad request: malformed request header\n');
    const json = await rawKernelRequest(host.paths.kernelSocket, Buffer.from(`${JSON.stringify({ tool: 'iscsiadm', argv: ['--version'] })}\n`));
    expect(JSON.parse(json.toString())).toEqual({ stdout: 'iscsiadm version 2.1.8\n', stderr: '', code: 0 });
    expect(await host.sessions()).toEqual([]);
  });

  it('fault hang: the native client blocks until it is killed', async () => {
    await host.setFaults({ hang: ['login'] });
    try {
      const child = spawn(host.bin('iscsiadm'), ['-m', 'node', '-T', IQN, '-p', portal, '--login'], { stdio: ['ignore', 'pipe', 'pipe'] });
      const output: Buffer[] = [];
      child.stdout.on('data', (d: Buffer) => output.push(d));
      child.stderr.on('data', (d: Buffer) => output.push(d));
      const exited = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_code, signal) => r(signal)));
      await new Promise((r) => setTimeout(r, HANG_OBSERVE_MS));
      expect(child.exitCode).toBeNull();
      // the shell script exec'd the native binary: no node process behind the fake command
      expect(readlinkSync(`/proc/${child.pid}/exe`)).toBe(join(distDir(), 'test/sim/sim-cli.bin'));
      // asleep in pause(), not spinning
      expect(readFileSync(`/proc/${child.pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0]).toBe('S');
      child.kill('SIGKILL');
      expect(await exited).toBe('SIGKILL');
      expect(Buffer.concat(output).length).toBe(0);
      expect(await host.sessions()).toEqual([]);
    } finally {
      await host.setFaults({});
    }
  });
});
