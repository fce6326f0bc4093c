import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildConfig, ConfigError, loadConfigFile, socketPathOf } from '../../src/config.js';

const tmp = mkdtempSync(join(tmpdir(), 'cfg-'));
function file(name: string, text: string): string {
  const p = join(tmp, name);
  writeFileSync(p, text);
  return p;
}

describe('config', () => {
  it('has production defaults: real host roots, commands by name, a timeout on every command', () => {
    const cfg = buildConfig(undefined);
    expect(cfg.host.sysRoot).toBe('/sys');
    expect(cfg.host.devRoot).toBe('/dev');
    expect(cfg.commands.iscsiadm.argv).toEqual(['iscsiadm']);
    for (const c of Object.values(cfg.commands)) expect(c.timeoutMs).toBeGreaterThan(0);
    expect(cfg.driverName).toMatch(/^[a-zA-Z][A-Za-z0-9-._]{0,61}[a-zA-Z]$/);
    expect(cfg.driverName).not.toBe('iscsi.csi.k8s.io');
  });

  it('reads YAML with host roots, a command prefix and per-command settings', () => {
    const cfg = buildConfig(loadConfigFile(file('a.yaml', [
      'commandPrefix: [chroot, /host]',
      'host:',
      '  sysRoot: /host/sys',
      'commands:',
      '  iscsiadm:',
      '    argv: [/usr/sbin/iscsiadm]',
      '    timeoutMs: 45000',
      '  mount:',
      '    prefix: []',
      'timeouts:',
      '  deviceWaitMs: 5000',
    ].join('\n'))));
    expect(cfg.commandPrefix).toEqual(['chroot', '/host']);
    expect(cfg.host.sysRoot).toBe('/host/sys');
    expect(cfg.host.devRoot).toBe('/dev');
    expect(cfg.commands.iscsiadm).toEqual({ argv: ['/usr/sbin/iscsiadm'], timeoutMs: 45000 });
    expect(cfg.commands.mount.prefix).toEqual([]);
    expect(cfg.timeouts.deviceWaitMs).toBe(5000);
  });

  it('reads JSON too', () => {
    const cfg = buildConfig(loadConfigFile(file('b.json', JSON.stringify({ mode: 'node', nodeId: 'iqn.2026-11.dev.test:n1', node: { maxVolumesPerNode: 7 } }))));
    expect(cfg.nodeId).toBe('iqn.2026-11.dev.test:n1');
    expect(cfg.mode).toBe('node');
    expect(cfg.node.maxVolumesPerNode).toBe(7);
  });

  it.each([
    ['hostt: {}', 'unknown key hostt'],
    ['host: {sysRoot: relative}', 'host.sysRoot must be an absolute path'],
    ['timeouts: {deviceWaitMs: soon}', 'timeouts.deviceWaitMs must be a number'],
    ['commands: {iscsiadmm: {argv: [x]}}', 'unknown command commands.iscsiadmm'],
    ['commands: {iscsiadm: {timeoutMs: 0}}', 'commands.iscsiadm.timeoutMs must be a positive integer'],
    ['mode: both', 'mode must be node, controller or all'],
    ['driverName: "-bad"', 'driverName'],
    ['endpoint: tcp://1.2.3.4:5', 'endpoint'],
    ['commands: {tgtadm: {prefix: "chroot /host"}}', 'commands.tgtadm.prefix must be a list of strings'],
    ['commandPrefix: "chroot /host"', 'commandPrefix must be a list'],
    ['node: {kubeletDir: var/lib/kubelet}', 'node.kubeletDir must be an absolute path'],
    ['node: {healing: {intervalMs: 5}}', 'node.healing.intervalMs must be an integer of at least 100'],
    ['node: {healing: {orphanGraceMs: -1}}', 'node.healing.orphanGraceMs must be a non-negative integer'],
    ['node: {healing: {enabled: "no"}}', 'node.healing.enabled must be a boolean'],
    ['controller: {tgt: {copyTimeoutMs: 0}}', 'controller.tgt.copyTimeoutMs must be a positive integer'],
    ['controller: {tgt: {copyTimeoutMs: 1.5}}', 'controller.tgt.copyTimeoutMs must be a positive integer'],
  ])('rejects %s with a message naming the key', (yaml, message) => {
    expect(() => buildConfig(loadConfigFile(file('bad.yaml', yaml)))).toThrow(ConfigError);
    expect(() => buildConfig(loadConfigFile(file('bad.yaml', yaml)))).toThrow(message);
  });

  it('node healing: on by default every 30 s with a 5 min grace for orphans; an off switch', () => {
    expect(buildConfig(undefined).node.healing).toEqual({ enabled: true, intervalMs: 30_000, orphanGraceMs: 300_000, reapOrphans: true });
    const off = buildConfig(loadConfigFile(file('heal.yaml', 'node: {healing: {enabled: false, reapOrphans: false}}')));
    expect(off.node.healing).toMatchObject({ enabled: false, reapOrphans: false, intervalMs: 30_000 });
  });

  it('bounds a byte copy of a backing file (snapshots on a pool without reflinks) at 10 min by default', () => {
    expect(buildConfig(undefined).controller.tgt.copyTimeoutMs).toBe(600_000);
    expect(buildConfig(loadConfigFile(file('copy.yaml', 'controller: {tgt: {copyTimeoutMs: 60000}}'))).controller.tgt.copyTimeoutMs).toBe(60_000);
  });

  it('says where a broken file is', () => {
    expect(() => loadConfigFile(file('broken.yaml', 'a: [1, 2'))).toThrow(/broken\.yaml is not valid YAML/);
    expect(() => loadConfigFile(join(tmp, 'missing.yaml'))).toThrow(/cannot read config file/);
  });

  it('parses unix endpoints', () => {
    expect(socketPathOf('unix:///tmp/x.sock')).toBe('/tmp/x.sock');
    expect(socketPathOf('unix:/tmp/x.sock')).toBe('/tmp/x.sock');
    expect(() => socketPathOf('unix://relative.sock')).toThrow(ConfigError);
  });
});
