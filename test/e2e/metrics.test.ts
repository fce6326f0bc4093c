// The Prometheus endpoint as an operator meets it: the executable opens no port without
// --metrics-address and one loopback port with it; on the simulated host (real tgtd, loop devices,
// mkfs, mount) a whole volume lifecycle shows up in a scrape the way a dashboard reads it: the CSI
// calls with their codes, the commands by tool, the login and logout, the staged volume and its
// session while staged and gone after, a session the healer brought back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { CsiClient, codeOf } from '../helpers/client.js';
import { blockCapability, mountCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';
import { until } from '../helpers/until.js';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/src/cli.js');

/** One sample of a scrape: its name, labels and value. */
interface Sample { name: string; labels: Record<string, string>; value: number }

function parseScrape(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample named `name` whose labels include `labels`; undefined when there is none. */
function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value;
}

async function scrape(address: string): Promise<{ samples: Sample[]; text: string }> {
  const res = await fetch(`http://${address}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return { samples: parseScrape(text), text };
}

/** `addr:port` of every TCP socket in LISTEN state that process `pid` holds. */
function listeningTcp(pid: number): string[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const out: string[] = [];
  for (const table of ['tcp', 'tcp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A' || !inodes.has(f[9]!)) continue; // 0A: LISTEN
      const [addr, port] = f[1]!.split(':');
      out.push(`${table === 'tcp' ? hexToIpv4(addr!) : addr}:${parseInt(port!, 16)}`);
    }
  }
  return out;
}

function hexToIpv4(hex: string): string {
  return [6, 4, 2, 0].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.');
}

describe('the executable', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'metrics-cli-'));
  const initiatorFile = join(tmp, 'initiatorname.iscsi');
  writeFileSync(initiatorFile, 'InitiatorName=iqn.2026-11.dev.test:metrics-node\n');
  const configFile = join(tmp, 'config.yaml');
  writeFileSync(configFile, `host:\n  initiatorNameFile: ${initiatorFile}\nstateDir: ${tmp}/state\n`);
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    rmSync(tmp, { recursive: true, force: true });
  });

  function startCli(args: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
    const child = spawn('node', [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d) => { out += d; });
    child.stderr!.on('data', (d) => { out += d; });
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    return { child, output: () => out, exited };
  }

  it('opens no port without --metrics-address', async () => {
    const sock = join(tmp, 'off.sock');
    const run = startCli(['--mode', 'node', '--endpoint', `unix://${sock}`, '--config', configFile]);
    await until('the socket', async () => existsSync(sock));
    expect(listeningTcp(run.child.pid!)).toEqual([]);
    expect(run.output()).not.toContain('serving metrics');
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
  });

  it('serves /metrics on the loopback port it is given, and only there', async () => {
    const sock = join(tmp, 'on.sock');
    const run = startCli(['--mode', 'node', '--endpoint', `unix://${sock}`, '--config', configFile, '--metrics-address', '127.0.0.1:0']);
    const address = await until('the metrics address in the log', async () => /"msg":"serving metrics"/.test(run.output()) && /"address":"(127\.0\.0\.1:\d+)"/.exec(run.output())?.[1]);
    await until('the socket', async () => existsSync(sock));
    expect(listeningTcp(run.child.pid!)).toEqual([address]);
    const client = new CsiClient(`unix://${sock}`);
    await client.call('Identity', 'GetPluginInfo', {});
    client.close();
    const { samples } = await scrape(address);
    expect(valueOf(samples, 'csi_plugin_operations_seconds_count', { method_name: '/csi.v1.Identity/GetPluginInfo', grpc_status_code: 'OK', driver_name: 'iscsi.csi.tsdriver.dev' })).toBe(1);
    expect(valueOf(samples, 'process_start_time_seconds')).toBeGreaterThan(0);
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
  });

  it('refuses a bad address with a config error', async () => {
    const run = startCli(['--mode', 'node', '--endpoint', `unix://${join(tmp, 'bad.sock')}`, '--config', configFile, '--metrics-address', 'localhost']);
    expect(await run.exited).toBe(2);
    expect(run.output()).toContain('metricsAddress "localhost" is not an address to listen on');
  });
});

describe('a volume lifecycle on the simulated host', () => {
  let sd: SimDriver;
  let address: string;
  let driverName: string;
  beforeAll(async () => {
    sd = await startSimDriver({
      mode: 'all',
      configure: (cfg) => {
        cfg.metricsAddress = '127.0.0.1:0';
        // the healer part below: passes every 200 ms; nothing half-done or orphaned is touched within the test
        cfg.node.healing = { enabled: true, intervalMs: 200, orphanGraceMs: 600_000, reapOrphans: true };
      },
    });
    address = sd.driver.metricsAddress!;
    driverName = sd.cfg.driverName;
  });
  afterAll(async () => {
    await sd?.stop();
  });

  const ops = (samples: Sample[], method: string, code = 'OK') => valueOf(samples, 'csi_plugin_operations_seconds_count', { method_name: method, grpc_status_code: code, driver_name: driverName });
  const commands = (samples: Sample[], tool: string) => samples.filter((s) => s.name === 'iscsi_csi_commands_total' && s.labels.tool === tool && s.labels.exit_code === '0').reduce((n, s) => n + s.value, 0);

  it('listens on loopback only', () => {
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(listeningTcp(process.pid)).toContain(address);
  });

  it('create, publish, stage, publish, stats, unpublish, unstage, unpublish, delete: each call, command, login and logout counted; the staged volume and its session while staged', async () => {
    const cap = mountCapability('ext4');
    const call = <T = Record<string, unknown>>(service: 'Controller' | 'Node', method: string, req: object) => sd.client.call<T>(service, method, req);
    const { volume } = await call<{ volume: { volume_id: string; volume_context: Record<string, string> } }>('Controller', 'CreateVolume', {
      name: 'metrics-vol', capacity_range: { required_bytes: 32 * MiB }, volume_capabilities: [cap], parameters: {},
    });
    const nodeId = sd.cfg.nodeId!;
    const { publish_context } = await call<{ publish_context: Record<string, string> }>('Controller', 'ControllerPublishVolume', { volume_id: volume.volume_id, node_id: nodeId, volume_capability: cap, volume_context: volume.volume_context });
    const work = join(sd.stateDir, 'kubelet');
    mkdirSync(work, { recursive: true });
    const staging = join(work, 'metrics-staging');
    const target = join(work, 'metrics-target');
    // a call that fails: counted with its code
    expect(await codeOf(call('Node', 'NodeStageVolume', { volume_id: '', staging_target_path: staging, volume_capability: cap, volume_context: volume.volume_context }))).toBe(status.INVALID_ARGUMENT);

    await call('Node', 'NodeStageVolume', { volume_id: volume.volume_id, staging_target_path: staging, volume_capability: cap, volume_context: volume.volume_context, publish_context });
    await call('Node', 'NodePublishVolume', { volume_id: volume.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap, volume_context: volume.volume_context, publish_context, readonly: false });
    await call('Node', 'NodeGetVolumeStats', { volume_id: volume.volume_id, volume_path: target });

    const staged = await scrape(address);
    expect(ops(staged.samples, '/csi.v1.Node/NodeStageVolume')).toBe(1);
    expect(ops(staged.samples, '/csi.v1.Node/NodeStageVolume', 'InvalidArgument')).toBe(1);
    expect(ops(staged.samples, '/csi.v1.Controller/CreateVolume')).toBe(1);
    expect(ops(staged.samples, '/csi.v1.Node/NodeGetVolumeStats')).toBe(1);
    expect(valueOf(staged.samples, 'iscsi_csi_node_volumes', { phase: 'staged' })).toBe(1);
    expect(valueOf(staged.samples, 'iscsi_csi_sessions', { state: 'LOGGED_IN' })).toBe(1);
    expect(valueOf(staged.samples, 'iscsi_csi_logins_total', { outcome: 'ok' })).toBe(1);
    expect(valueOf(staged.samples, 'iscsi_csi_logouts_total', { outcome: 'ok' })).toBe(0);
    expect(valueOf(staged.samples, 'iscsi_csi_device_wait_seconds_count', { outcome: 'found' })).toBe(1);
    expect(valueOf(staged.samples, 'iscsi_csi_target_lock_wait_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(commands(staged.samples, 'iscsiadm')).toBeGreaterThan(0);
    expect(commands(staged.samples, 'mkfs.ext4')).toBe(1);
    expect(commands(staged.samples, 'mount')).toBeGreaterThanOrEqual(2); // the staging mount and the bind
    expect(commands(staged.samples, 'tgtadm')).toBeGreaterThan(0);
    expect(valueOf(staged.samples, 'iscsi_csi_command_duration_seconds_count', { tool: 'mkfs.ext4' })).toBe(1);
    // no label names a volume
    expect(staged.text).not.toContain(volume.volume_id);
    expect(staged.text).not.toContain(volume.volume_context.iqn!);

    await call('Node', 'NodeUnpublishVolume', { volume_id: volume.volume_id, target_path: target });
    await call('Node', 'NodeUnstageVolume', { volume_id: volume.volume_id, staging_target_path: staging });
    await call('Controller', 'ControllerUnpublishVolume', { volume_id: volume.volume_id, node_id: nodeId });
    await call('Controller', 'DeleteVolume', { volume_id: volume.volume_id });

    const after = await scrape(address);
    expect(valueOf(after.samples, 'iscsi_csi_node_volumes', { phase: 'staged' })).toBe(0);
    expect(valueOf(after.samples, 'iscsi_csi_sessions', { state: 'LOGGED_IN' })).toBe(0);
    expect(valueOf(after.samples, 'iscsi_csi_logouts_total', { outcome: 'ok' })).toBe(1);
    expect(valueOf(after.samples, 'iscsi_csi_logins_total', { outcome: 'ok' })).toBe(1);
    expect(valueOf(after.samples, 'iscsi_csi_logins_total', { outcome: 'failed' })).toBe(0);
    for (const m of ['/csi.v1.Node/NodeUnpublishVolume', '/csi.v1.Node/NodeUnstageVolume', '/csi.v1.Controller/ControllerUnpublishVolume', '/csi.v1.Controller/DeleteVolume']) expect(ops(after.samples, m), m).toBe(1);
    expect(commands(after.samples, 'umount')).toBeGreaterThanOrEqual(2);
    expect(after.samples.filter((s) => s.name === 'iscsi_csi_command_timeouts_total')).toEqual([]);
  });

  it('a session logged out behind the driver\'s back: the healer\'s login counted as a heal event and a login', async () => {
    const iqn = 'iqn.2026-11.dev.test:metrics-heal';
    await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }]);
    const staging = join(sd.stateDir, 'kubelet', 'heal-staging');
    const before = (await scrape(address)).samples;
    const loginsBefore = valueOf(before, 'iscsi_csi_logins_total', { outcome: 'ok' })!;
    await sd.client.call('Node', 'NodeStageVolume', { volume_id: 'metrics-heal', staging_target_path: staging, volume_capability: blockCapability(), volume_context: { targetPortal: sd.host.portals[0]!, iqn, lun: '1' } });
    await sd.host.run('iscsiadm', ['-m', 'node', '-T', iqn, '-p', sd.host.portals[0]!, '--logout']);
    const healed = await until('the healer\'s login in a scrape', async () => {
      const { samples } = await scrape(address);
      return (valueOf(samples, 'iscsi_csi_heal_events_total', { action: 'session-login', outcome: 'done' }) ?? 0) >= 1 && samples;
    });
    expect(valueOf(healed, 'iscsi_csi_logins_total', { outcome: 'ok' })).toBe(loginsBefore + 2);
    expect(valueOf(healed, 'iscsi_csi_sessions', { state: 'LOGGED_IN' })).toBe(1);
    await sd.client.call('Node', 'NodeUnstageVolume', { volume_id: 'metrics-heal', staging_target_path: staging });
    expect(valueOf((await scrape(address)).samples, 'iscsi_csi_node_volumes', { phase: 'staged' })).toBe(0);
  });
});
