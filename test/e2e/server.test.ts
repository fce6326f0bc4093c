// The foundation as a user meets it: the executable serves on a socket, refuses to share a live
// socket, shuts down cleanly on SIGTERM; calls are guarded per volume; secrets never reach a log line.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, watch, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { status } from '@grpc/grpc-js';
import { CsiClient, codeOf } from '../helpers/client.js';
import { buildConfig } from '../../src/config.js';
import { startDriver } from '../../src/driver.js';
import { createLogger } from '../../src/log.js';
import { CsiServer } from '../../src/server/server.js';
import { loadCsiPackage } from '../../src/server/proto.js';
import { ProcessRunner } from '../../src/runner.js';
import { Secret } from '../../src/log.js';

const CLI = join(process.cwd(), 'dist/src/cli.js');
const tmp = mkdtempSync(join(tmpdir(), 'srv-'));
const initiatorFile = join(tmp, 'initiatorname.iscsi');
writeFileSync(initiatorFile, 'InitiatorName=iqn.2026-11.dev.test:node-1\n');
const configFile = join(tmp, 'config.yaml');
writeFileSync(configFile, `host:\n  initiatorNameFile: ${initiatorFile}\nstateDir: ${tmp}/state\n`);

function startCli(args: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn('node', [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, output: () => out, exited };
}

async function waitFor(cond: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

class Capture extends Writable {
  lines: string[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.lines.push(...chunk.toString().split('\n').filter(Boolean));
    cb();
  }
}

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('the executable', () => {
  const sock = join(tmp, 'a.sock');
  let first: ReturnType<typeof startCli>;

  beforeAll(async () => {
    first = startCli(['--mode', 'node', '--endpoint', `unix://${sock}`, '--config', configFile]);
    await waitFor(() => existsSync(sock));
  });

  it('serves on the socket with mode 0600 and answers Identity', async () => {
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    const client = new CsiClient(`unix://${sock}`);
    const info = await client.call<{ name: string; vendor_version: string }>('Identity', 'GetPluginInfo', {});
    expect(info.name).toMatch(/^[a-zA-Z][A-Za-z0-9-._]{0,61}[a-zA-Z]$/);
    expect(info.vendor_version).toBe(JSON.parse(await import('node:fs').then((f) => f.readFileSync('package.json', 'utf8'))).version);
    const caps = await client.call<{ capabilities: unknown[] }>('Identity', 'GetPluginCapabilities', {});
    expect(JSON.stringify(caps.capabilities)).not.toContain('CONTROLLER_SERVICE');
    client.close();
  });

  it('refuses a second start on the same live socket with a clear message', async () => {
    const second = startCli(['--mode', 'node', '--endpoint', `unix://${sock}`, '--config', configFile]);
    const code = await second.exited;
    expect(code).toBe(1);
    expect(second.output()).toContain(`another server is already listening on ${sock}`);
    expect(existsSync(sock)).toBe(true);
  });

  it('removes the socket and exits 0 on SIGTERM', async () => {
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    expect(existsSync(sock)).toBe(false);
  });

  it('stops cleanly on a SIGTERM that arrives the moment the socket appears, before start-up has finished', async () => {
    // kubelet may delete the pod while the driver is still starting: the signal must not kill it
    // with the socket left behind. The directory is watched, so the signal follows the bind at once.
    const dir = mkdtempSync(join(tmp, 'early-'));
    const early = join(dir, 'e.sock');
    const watcher = watch(dir);
    const bound = new Promise<void>((r) => watcher.on('change', () => { if (existsSync(early)) r(); }));
    const run = startCli(['--mode', 'node', '--endpoint', `unix://${early}`, '--config', configFile]);
    await bound;
    watcher.close();
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    expect(existsSync(early)).toBe(false);
    expect(run.output()).toContain('"stopped"');
  });

  it('replaces a stale socket file left by a crash', async () => {
    const crashed = startCli(['--mode', 'node', '--endpoint', `unix://${sock}`, '--config', configFile]);
    await waitFor(() => existsSync(sock));
    crashed.child.kill('SIGKILL');
    await crashed.exited;
    expect(existsSync(sock)).toBe(true);
    const again = startCli(['--mode', 'node', '--endpoint', `unix://${sock}`, '--config', configFile]);
    await waitFor(() => again.output().includes('"serving"'));
    again.child.kill('SIGINT');
    expect(await again.exited).toBe(0);
  });

  it.each([
    [['--mode', 'sideways'], 'mode must be node, controller or all'],
    [['--bogus'], "Unknown option '--bogus'"],
    [['--config', '/nonexistent.yaml'], 'cannot read config file /nonexistent.yaml'],
    [['--endpoint', 'tcp://0.0.0.0:1'], 'endpoint'],
  ])('exits 2 with one line for bad input %j', async (args, message) => {
    const run = startCli(args);
    expect(await run.exited).toBe(2);
    const lines = run.output().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(message);
  });

  it('prints its version', async () => {
    const run = startCli(['--version']);
    expect(await run.exited).toBe(0);
    expect(run.output()).toMatch(/^iscsi-csi \d+\.\d+\.\d+\n$/);
  });
});

describe('Probe', () => {
  it('is ready when iscsiadm runs and the initiator name is readable', async () => {
    const cfg = buildConfig(undefined, { mode: 'node', endpoint: `unix://${tmp}/p1.sock`, host: { ...buildConfig(undefined).host, initiatorNameFile: initiatorFile }, commands: { ...buildConfig(undefined).commands, iscsiadm: { argv: ['true'], timeoutMs: 1000 } } });
    const d = await startDriver(cfg, createLogger('silent'));
    const client = new CsiClient(cfg.endpoint);
    const res = await client.call<{ ready: { value: boolean } }>('Identity', 'Probe', {});
    expect(res.ready.value).toBe(true);
    client.close();
    await d.stop();
  });

  it('answers FAILED_PRECONDITION naming what is missing, within about a second', async () => {
    const base = buildConfig(undefined);
    const cfg = buildConfig(undefined, { mode: 'node', nodeId: 'iqn.2026-11.dev.test:n', endpoint: `unix://${tmp}/p2.sock`, host: { ...base.host, initiatorNameFile: join(tmp, 'none') }, commands: { ...base.commands, iscsiadm: { argv: ['/nonexistent/iscsiadm'], timeoutMs: 1000 } } });
    const d = await startDriver(cfg, createLogger('silent'));
    const client = new CsiClient(cfg.endpoint);
    const started = Date.now();
    const err = await client.call('Identity', 'Probe', {}).catch((e: { code: number; details: string }) => e);
    expect(Date.now() - started).toBeLessThan(1500);
    expect((err as { code: number }).code).toBe(status.FAILED_PRECONDITION);
    expect((err as { details: string }).details).toContain('cannot run iscsiadm');
    expect((err as { details: string }).details).toContain(join(tmp, 'none'));
    client.close();
    await d.stop();
  });
});

describe('calls', () => {
  it('answers UNIMPLEMENTED for RPCs the driver lacks, and ABORTED for a concurrent operation on one volume', async () => {
    const csi = loadCsiPackage();
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const sockPath = join(tmp, 'g.sock');
    const server = new CsiServer({ socketPath: sockPath, socketMode: 0o600, shutdownGraceMs: 5000, logger: createLogger('silent') }, [
      { name: 'Node', definition: csi.Node.service, impl: { NodeUnstageVolume: async () => { await gate; return {}; } } },
    ]);
    await server.listen();
    const client = new CsiClient(`unix://${sockPath}`);
    expect(await codeOf(client.call('Node', 'NodeGetInfo', {}))).toBe(status.UNIMPLEMENTED);
    const slow = client.call('Node', 'NodeUnstageVolume', { volume_id: 'vol-1', staging_target_path: '/x' });
    await waitFor(() => server.inFlight === 1);
    const dup = await client.call('Node', 'NodeUnstageVolume', { volume_id: 'vol-1', staging_target_path: '/x' }).catch((e: { code: number; details: string }) => e);
    expect((dup as { code: number }).code).toBe(status.ABORTED);
    expect((dup as { details: string }).details).toBe('an operation on volume vol-1 is already in progress (NodeUnstageVolume)');
    // another volume is not blocked
    const other = client.call('Node', 'NodeUnstageVolume', { volume_id: 'vol-2', staging_target_path: '/x' });
    release();
    await slow;
    await other;
    // the key was released: the same volume works again
    await client.call('Node', 'NodeUnstageVolume', { volume_id: 'vol-1', staging_target_path: '/x' });
    // and it is released on a failing path too
    client.close();
    await server.stop();
  });
});

describe('secrets', () => {
  it('a CHAP password passed in secrets appears in no log line, even at trace level', async () => {
    const password = 'Sup3r-s3cret-CHAP-pw';
    const capture = new Capture();
    const logger = createLogger('trace', capture);
    const cfg = buildConfig(undefined, { mode: 'all', endpoint: `unix://${tmp}/s.sock`, nodeId: 'iqn.2026-11.dev.test:n', logLevel: 'trace' });
    const d = await startDriver(cfg, logger, new ProcessRunner(cfg.commands, [], logger));
    const client = new CsiClient(cfg.endpoint);
    await codeOf(client.call('Node', 'NodeStageVolume', {
      volume_id: 'v1', staging_target_path: '/tmp/none',
      volume_capability: { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } },
      secrets: { 'node.session.auth.username': 'alice', 'node.session.auth.password': password },
      volume_context: { targetPortal: '127.0.0.1:3260', iqn: 'iqn.2026-11.dev.test:t', lun: '1' },
    }));
    await codeOf(client.call('Controller', 'CreateVolume', { name: 'n1', secrets: { password }, parameters: { chapPassword: password } }));
    // a command whose argv carries the secret (as `iscsiadm -o update -n …password -v X` does)
    const runner = new ProcessRunner({ ...cfg.commands, iscsiadm: { argv: ['echo'], timeoutMs: 1000 } }, [], logger);
    const r = await runner.run('iscsiadm', ['-m', 'node', '-o', 'update', '-n', 'node.session.auth.password', '-v', new Secret(password)]);
    expect(r.stdout).toContain(password); // the command itself got the real value
    expect(r.argv.join(' ')).not.toContain(password);
    client.close();
    await d.stop();
    expect(capture.lines.length).toBeGreaterThan(3);
    expect(capture.lines.some((l) => l.includes('"method":"NodeStageVolume"'))).toBe(true);
    expect(capture.lines.some((l) => l.includes('node.session.auth.password'))).toBe(true);
    for (const line of capture.lines) expect(line).not.toContain(password);
  });
});
