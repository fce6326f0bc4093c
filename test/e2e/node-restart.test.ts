// The driver killed in the middle of a stage (SIGKILL, no cleanup) and started again: stage and
// unstage still converge, and nothing is leaked (no session, node record, iface, record or mount).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { CsiClient } from '../helpers/client.js';
import { blockCapability, mountCapability, simDriverConfig } from '../helpers/sim-driver.js';
import { SimulatedHost, unmountUnder } from '../sim/host.js';

const MiB = 1024 * 1024;
const CLI = join(process.cwd(), 'dist/src/cli.js');
let host: SimulatedHost;
let stateDir: string;
let configFile: string;
let endpoint: string;
/** while this file exists, mount(8) (through the wrapper below) hangs once it has mounted, as a driver killed mid-mount sees it */
let mountHangFlag: string;
/** the hanging wrapper's pid (it is this test's to end) */
let mountHangPid: string;

beforeAll(async () => {
  host = await SimulatedHost.create();
  stateDir = join(host.root, 'driver-state');
  mkdirSync(stateDir, { recursive: true });
  endpoint = `unix://${stateDir}/csi.sock`;
  const cfg = simDriverConfig(host, stateDir, 'node', endpoint);
  configFile = join(stateDir, 'config.yaml');
  mountHangFlag = join(stateDir, 'mount-hangs');
  mountHangPid = join(stateDir, 'mount-hang.pid');
  const mountWrapper = join(stateDir, 'mount');
  writeFileSync(mountWrapper, [
    '#!/bin/sh',
    `[ -e '${mountHangFlag}' ] || exec mount "$@"`,
    'mount "$@" || exit $?',
    `echo $$ > '${mountHangPid}'`,
    'exec sleep 600',
    '',
  ].join('\n'));
  chmodSync(mountWrapper, 0o755);
  const mount = { ...cfg.commands.mount, argv: [mountWrapper] };
  writeFileSync(configFile, stringify({ stateDir, nodeId: cfg.nodeId, host: cfg.host, commands: { iscsiadm: cfg.commands.iscsiadm, multipath: cfg.commands.multipath, multipathd: cfg.commands.multipathd, mount }, timeouts: { deviceWaitMs: 20_000 } }));
});
const started: ChildProcess[] = [];
afterAll(async () => {
  // a failed test may leave its driver running
  for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await unmountUnder(stateDir).catch(() => undefined);
  await host?.destroy();
});

async function startDriverProcess(): Promise<ChildProcess> {
  const child = spawn('node', [CLI, '--mode', 'node', '--endpoint', endpoint, '--config', configFile, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  started.push(child);
  // a SIGKILLed driver leaves its socket file: wait until the new one answers
  const probe = new CsiClient(endpoint);
  try {
    for (let i = 0; ; i++) {
      try {
        await probe.call('Identity', 'GetPluginInfo', {}, 1_000);
        return child;
      } catch (e) {
        if (i > 200 || child.exitCode !== null) throw e;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  } finally {
    probe.close();
  }
}

describe('a driver killed mid-stage', () => {
  it.each([['block', blockCapability()], ['filesystem', mountCapability('ext4')]])('converges after a restart (%s)', async (kind, capability) => {
    const iqn = `iqn.2026-11.dev.test:crash-${kind}`;
    await host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }]);
    const staging = join(stateDir, `staging-${kind}`);
    const req = { volume_id: `crash-${kind}`, staging_target_path: staging, volume_capability: capability, volume_context: { targetPortal: host.portals[0]!, iqn, lun: '1' } };

    // 1. the device will not appear: the stage logs in, then waits; kill the driver while it waits
    await host.setFaults({ noDevice: [{ iqn, lun: 1 }] });
    let driver = await startDriverProcess();
    let client = new CsiClient(endpoint);
    const pending = client.call('Node', 'NodeStageVolume', req).catch((e: Error) => e);
    for (let i = 0; i < 500 && (await host.sessions()).filter((s) => s.target === iqn).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect((await host.sessions()).filter((s) => s.target === iqn)).toHaveLength(1);
    driver.kill('SIGKILL');
    await new Promise((r) => driver.once('exit', r));
    client.close();
    await pending;
    await host.setFaults({});
    // the record of the interrupted attach is on disk, without secrets
    expect(readdirSync(join(stateDir, 'volumes'))).toHaveLength(1);

    // 2. restarted (the stale socket is replaced): kubelet retries the stage, then unstages
    driver = await startDriverProcess();
    client = new CsiClient(endpoint);
    await client.call('Node', 'NodeStageVolume', req);
    expect((await host.sessions()).filter((s) => s.target === iqn)).toHaveLength(1);
    await client.call('Node', 'NodeUnstageVolume', { volume_id: req.volume_id, staging_target_path: staging });
    expect((await host.sessions()).filter((s) => s.target === iqn)).toEqual([]);
    expect(existsSync(join(host.root, 'var/lib/iscsi/nodes', iqn))).toBe(false);
    expect(readdirSync(join(stateDir, 'volumes'))).toEqual([]);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(staging);
    client.close();
    driver.kill('SIGTERM');
    await new Promise((r) => driver.once('exit', r));
  });

  it('killed while mount(8) runs: the retried stage finds its own mount (same device, same path) and answers OK', async () => {
    const iqn = 'iqn.2026-11.dev.test:crash-mount';
    await host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }]);
    const staging = join(stateDir, 'staging-mount');
    const req = { volume_id: 'crash-mount', staging_target_path: staging, volume_capability: mountCapability('ext4'), volume_context: { targetPortal: host.portals[0]!, iqn, lun: '1' } };
    const mountsAt = (): string[] => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m === staging);

    writeFileSync(mountHangFlag, '');
    let driver = await startDriverProcess();
    let client = new CsiClient(endpoint);
    const pending = client.call('Node', 'NodeStageVolume', req).catch((e: Error) => e);
    try {
      // the filesystem is mounted, mount(8) has not returned: kill the driver now
      for (let i = 0; i < 1500 && !existsSync(mountHangPid); i++) await new Promise((r) => setTimeout(r, 20));
      expect(existsSync(mountHangPid)).toBe(true);
      expect(mountsAt()).toEqual([staging]);
      driver.kill('SIGKILL');
      await new Promise((r) => driver.once('exit', r));
      client.close();
      await pending;
    } finally {
      rmSync(mountHangFlag, { force: true });
      if (existsSync(mountHangPid)) {
        try { process.kill(Number(readFileSync(mountHangPid, 'utf8')), 'SIGKILL'); } catch { /* gone already */ }
        rmSync(mountHangPid);
      }
    }
    // the interrupted stage's record is on disk, still `attaching`
    const recordDir = readdirSync(join(stateDir, 'volumes')).find((d) => d.startsWith('crash-mount-'))!;
    expect(JSON.parse(readFileSync(join(stateDir, 'volumes', recordDir, 'iscsi.json'), 'utf8'))).toMatchObject({ phase: 'attaching' });

    driver = await startDriverProcess();
    client = new CsiClient(endpoint);
    await client.call('Node', 'NodeStageVolume', req);
    // the earlier mount is kept, not stacked on, and the volume works
    expect(mountsAt()).toEqual([staging]);
    writeFileSync(join(staging, 'after-crash.txt'), 'written');
    expect(readFileSync(join(staging, 'after-crash.txt'), 'utf8')).toBe('written');
    await client.call('Node', 'NodeStageVolume', req);
    await client.call('Node', 'NodeUnstageVolume', { volume_id: req.volume_id, staging_target_path: staging });
    expect(mountsAt()).toEqual([]);
    expect((await host.sessions()).filter((s) => s.target === iqn)).toEqual([]);
    expect(readdirSync(join(stateDir, 'volumes')).filter((d) => d.startsWith('crash-mount-'))).toEqual([]);
    client.close();
    driver.kill('SIGTERM');
    await new Promise((r) => driver.once('exit', r));
  });

  it('killed while holding the target lock (stuck in login): the restarted driver takes the lock over at once', async () => {
    const iqn = 'iqn.2026-11.dev.test:crash-in-lock';
    await host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }]);
    const staging = join(stateDir, 'staging-in-lock');
    const req = { volume_id: 'crash-in-lock', staging_target_path: staging, volume_capability: blockCapability(), volume_context: { targetPortal: host.portals[0]!, iqn, lun: '1' } };
    const lockDir = join(stateDir, 'locks');
    await host.setFaults({ hang: ['login'] });
    let driver = await startDriverProcess();
    let client = new CsiClient(endpoint);
    const pending = client.call('Node', 'NodeStageVolume', req).catch((e: Error) => e);
    const hungLogin = (): boolean => spawnSync('pgrep', ['-f', '--', `--sim-root ${host.root} .*--login`]).status === 0;
    try {
      // the login hangs inside the target lock (the portal's discovery lock is released by then)
      for (let i = 0; i < 500 && !hungLogin(); i++) await new Promise((r) => setTimeout(r, 20));
      expect(hungLogin()).toBe(true);
      driver.kill('SIGKILL');
      await new Promise((r) => driver.once('exit', r));
      client.close();
      await pending;
    } finally {
      // the orphaned fake iscsiadm would hang forever (a real one would time out inside iscsid)
      spawnSync('pkill', ['-KILL', '-f', '--', `--sim-root ${host.root} `]);
      await host.setFaults({});
    }
    // the target's lock directory and its owner record are left behind
    expect(readdirSync(lockDir).filter((f) => f.endsWith('.lock'))).toHaveLength(1);
    expect(readdirSync(lockDir).filter((f) => f.endsWith('.lock.owner'))).toHaveLength(1);

    driver = await startDriverProcess();
    client = new CsiClient(endpoint);
    // well inside the 10 s a lock takes to go stale: the dead owner's lock is taken over, not waited out
    await client.call('Node', 'NodeStageVolume', req, 5_000);
    expect((await host.sessions()).filter((s) => s.target === iqn)).toHaveLength(1);
    await client.call('Node', 'NodeUnstageVolume', { volume_id: req.volume_id, staging_target_path: staging });
    expect((await host.sessions()).filter((s) => s.target === iqn)).toEqual([]);
    expect(readdirSync(lockDir)).toEqual([]);
    expect(readdirSync(join(stateDir, 'volumes'))).toEqual([]);
    client.close();
    driver.kill('SIGTERM');
    await new Promise((r) => driver.once('exit', r));
  });

  it('unstage after a crash works from the record alone, even with the target gone', async () => {
    const iqn = 'iqn.2026-11.dev.test:gone';
    await host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }]);
    const staging = join(stateDir, 'staging-gone');
    let driver = await startDriverProcess();
    let client = new CsiClient(endpoint);
    await client.call('Node', 'NodeStageVolume', { volume_id: 'gone', staging_target_path: staging, volume_capability: blockCapability(), volume_context: { targetPortal: host.portals[0]!, iqn, lun: '1' } });
    driver.kill('SIGKILL');
    await new Promise((r) => driver.once('exit', r));
    client.close();
    await host.deleteTarget(iqn);
    await host.setFaults({ portalDown: [host.portals[0]!] });
    driver = await startDriverProcess();
    client = new CsiClient(endpoint);
    try {
      await client.call('Node', 'NodeUnstageVolume', { volume_id: 'gone', staging_target_path: staging });
    } finally {
      await host.setFaults({});
    }
    expect((await host.sessions()).filter((s) => s.target === iqn)).toEqual([]);
    expect(readdirSync(join(stateDir, 'volumes'))).toEqual([]);
    client.close();
    driver.kill('SIGTERM');
    await new Promise((r) => driver.once('exit', r));
  });
});
