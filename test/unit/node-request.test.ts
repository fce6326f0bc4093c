import { describe, expect, it } from 'vitest';
import { InvalidArgument } from '../../src/errors.js';
import { parsePath, volumeAccess } from '../../src/node/request.js';
import { parsePortals, parseTargetSpec } from '../../src/contract/volume-context.js';
import { parseMountFlags } from '../../src/contract/access-modes.js';
import type { VolumeCapability } from '../../src/csi/types.js';

const mountCap = (fs_type = '', mode = 'SINGLE_NODE_WRITER', flags: string[] = []): VolumeCapability =>
  ({ access_type: 'mount', mount: { fs_type, mount_flags: flags, volume_mount_group: '' }, access_mode: { mode } }) as unknown as VolumeCapability;
const blockCap = (mode = 'SINGLE_NODE_WRITER'): VolumeCapability =>
  ({ access_type: 'block', block: {}, access_mode: { mode } }) as unknown as VolumeCapability;

describe('node request validation', () => {
  it('parses the in-tree volume context keys', () => {
    const spec = parseTargetSpec({
      targetPortal: '10.0.0.5:3260', portals: '["10.0.0.6:3260", "[fd00::10]:3261"]', iqn: 'iqn.2026-11.io.example:t1', lun: '3',
      iscsiInterface: 'iface0', initiatorName: 'iqn.2026-11.io.example:node-x',
    }, {}, 'default');
    expect(spec.portals.map((p) => `${p.host}|${p.port}`)).toEqual(['10.0.0.5|3260', '10.0.0.6|3260', 'fd00::10|3261']);
    expect(spec.iqn).toBe('iqn.2026-11.io.example:t1');
    expect(spec.lun).toBe(3);
    expect(spec.iface).toBe('iface0');
    expect(spec.initiatorName).toBe('iqn.2026-11.io.example:node-x');
    expect(spec.sessionChap).toBeUndefined();
  });

  it('accepts comma-separated portals, removes duplicates, defaults the port', () => {
    expect(parsePortals('10.0.0.5', '10.0.0.5:3260, 10.0.0.7').map((p) => `${p.host}:${p.port}`)).toEqual(['10.0.0.5:3260', '10.0.0.7:3260']);
  });

  it.each([
    [{ iqn: 'iqn.2026-11.io.example:t', lun: '0' }, 'targetPortal'],
    [{ targetPortal: '1.2.3.4', lun: '0' }, 'iqn'],
    [{ targetPortal: '1.2.3.4', iqn: 'iqn.2026-11.io.example:t' }, 'lun'],
    [{ targetPortal: '1.2.3.4', iqn: 'not-an-iqn', lun: '0' }, 'not-an-iqn'],
    [{ targetPortal: '1.2.3.4:99999', iqn: 'iqn.2026-11.io.example:t', lun: '0' }, '1..65535'],
    [{ targetPortal: '1.2.3.4', iqn: 'iqn.2026-11.io.example:t', lun: '16384' }, '0..16383'],
    [{ targetPortal: '1.2.3.4', iqn: 'iqn.2026-11.io.example:t', lun: '-1' }, '0..16383'],
    [{ targetPortal: '1.2.3.4', iqn: 'iqn.2026-11.io.example:t', lun: '1', iscsiInterface: '../etc' }, 'iSCSI interface'],
    [{ targetPortal: '1.2.3.4', portals: '[1,2]', iqn: 'iqn.2026-11.io.example:t', lun: '1' }, 'portals'],
    [{ targetPortal: '1.2.3.4', iqn: 'iqn.2026-11.io.example:t', lun: '1', sessionCHAPAuth: 'yes' }, 'sessionCHAPAuth'],
    [{ targetPortal: '1.2.3.4', iqn: 'iqn.2026-11.io.example:t', lun: '1', sessionCHAPAuth: 'true' }, 'node.session.auth.username'],
  ])('rejects %j naming %s', (ctx, needle) => {
    expect(() => parseTargetSpec(ctx as Record<string, string>, {}, 'default')).toThrow(InvalidArgument);
    expect(() => parseTargetSpec(ctx as Record<string, string>, {}, 'default')).toThrow(needle);
  });

  it('turns CHAP secrets into Secret values that never print', () => {
    const spec = parseTargetSpec({ targetPortal: '1.2.3.4', iqn: 'iqn.2026-11.io.example:t', lun: '1' }, {
      'node.session.auth.username': 'alice', 'node.session.auth.password': 'pw-1234567890',
      'discovery.sendtargets.auth.username': 'bob', 'discovery.sendtargets.auth.password': 'pw-abcdefghij',
    }, 'default');
    expect(spec.sessionChap?.username).toBe('alice');
    expect(spec.sessionChap?.password.reveal()).toBe('pw-1234567890');
    expect(JSON.stringify(spec)).not.toContain('pw-');
    expect(String(spec.discoveryChap?.password)).not.toContain('pw-');
  });

  it('ignores secrets when the volume explicitly disables CHAP, and needs both halves otherwise', () => {
    const ctx = { targetPortal: '1.2.3.4', iqn: 'iqn.2026-11.io.example:t', lun: '1' };
    expect(parseTargetSpec({ ...ctx, sessionCHAPAuth: 'false' }, { 'node.session.auth.username': 'a', 'node.session.auth.password': 'b' }, 'default').sessionChap).toBeUndefined();
    expect(() => parseTargetSpec(ctx, { 'node.session.auth.username': 'a' }, 'default')).toThrow('both');
  });

  it('refuses a CHAP password with a line break or NUL (it would add lines to the record), naming the key only', () => {
    const ctx = { targetPortal: '1.2.3.4', iqn: 'iqn.2026-11.io.example:t', lun: '1' };
    for (const bad of ['pw\nnode.startup = automatic', 'pw\0x']) {
      const call = (): unknown => parseTargetSpec(ctx, { 'node.session.auth.username': 'a', 'node.session.auth.password': bad }, 'default');
      expect(call).toThrow(InvalidArgument);
      expect(call).toThrow('node.session.auth.password must be at most 256 characters without line breaks');
    }
    expect(() => parseTargetSpec(ctx, { 'node.session.auth.username': 'a', 'node.session.auth.password': 'b', 'node.session.auth.username_in': 't', 'node.session.auth.password_in': 'x\ry' }, 'default')).toThrow('node.session.auth.password_in');
  });

  it('parses capabilities: block, mount with fs type and flags, defaults', () => {
    expect(volumeAccess(blockCap(), 'ext4')).toEqual({ access: { kind: 'block' }, accessMode: 'SINGLE_NODE_WRITER', readonly: false });
    expect(volumeAccess(mountCap('xfs', 'SINGLE_NODE_WRITER', ['noatime', 'discard,nodev']), 'ext4').access).toEqual({ kind: 'mount', fsType: 'xfs', mountFlags: ['noatime', 'discard', 'nodev'] });
    expect(volumeAccess(mountCap(''), 'ext4').access).toEqual({ kind: 'mount', fsType: 'ext4', mountFlags: [] });
    expect(() => volumeAccess(null, 'ext4')).toThrow('volume_capability is required');
    expect(() => volumeAccess(mountCap('ntfs'), 'ext4')).toThrow('ntfs');
    expect(() => volumeAccess(mountCap('ext4', 'MULTI_NODE_MULTI_WRITER'), 'ext4')).toThrow('block volumes only');
    expect(volumeAccess(blockCap('MULTI_NODE_MULTI_WRITER'), 'ext4').accessMode).toBe('MULTI_NODE_MULTI_WRITER');
    expect(() => volumeAccess(mountCap('ext4', 'UNKNOWN'), 'ext4')).toThrow('access_mode');
    expect(() => parseMountFlags(['a b'])).toThrow(InvalidArgument);
  });

  it('accepts only absolute paths without ".."', () => {
    expect(parsePath('/var/lib/kubelet/x/', 'target_path')).toBe('/var/lib/kubelet/x');
    expect(() => parsePath('some/path', 'target_path')).toThrow('absolute');
    expect(() => parsePath('/a/../etc', 'target_path')).toThrow('..');
    expect(() => parsePath('', 'target_path')).toThrow('target_path is required');
    expect(() => parsePath('/a\0b', 'target_path')).toThrow('NUL');
  });
});

describe('login limits', () => {
  it('make every iscsid login attempt end before iscsiadm is killed', async () => {
    const { loginLimits } = await import('../../src/flows/attach.js');
    for (const timeoutMs of [10_000, 30_000, 60_000, 120_000, 300_000]) {
      const { loginTimeoutS, retries } = loginLimits(timeoutMs);
      expect(retries).toBeGreaterThanOrEqual(1);
      expect(loginTimeoutS).toBeLessThanOrEqual(15);
      // the last attempt may start just before the retry window closes and run its full timeout
      expect((retries + 1) * loginTimeoutS * 1000, `${timeoutMs} ms`).toBeLessThanOrEqual(timeoutMs - 5_000);
    }
    expect(loginLimits(30_000)).toEqual({ loginTimeoutS: 12, retries: 1 });
    expect(loginLimits(120_000)).toEqual({ loginTimeoutS: 15, retries: 6 });
  });
});
