import { describe, expect, it } from 'vitest';
import { InvalidArgument } from '../../src/errors.js';
import {
  canonicalIPv6, clonedIfaceName, formatPortal, parseFsType, parseHostname, parseIfaceName, parseInitiatorName,
  parseIscsiName, parseLun, parsePort, parsePortal, parseTargetIqn, parseVolumeId, portalKeyOf, safeFileKey, volumeKey,
} from '../../src/common/validate.js';

function rejects(fn: () => unknown, message: RegExp): void {
  expect(fn).toThrow(InvalidArgument);
  expect(fn).toThrow(message);
}

describe('iSCSI names', () => {
  it.each([
    'iqn.2026-11.io.example:t1',
    'iqn.1993-08.org.debian:01:0123456789ab',
    'iqn.2003-01.org.linux-iscsi.rheln1',
    'iqn.2005-10.org.freenas.ctl:csi-pvc-1224c988-4198-47cb-85a1-66d4755c94e9-main-k8s',
    'iqn.1992-04.com.emc:cx.apm00191923511.a4',
    'iqn.2001-04.com.example:storage:diskarrays-sn-a8675309',
    'iqn.2001-04.com.example:ストレージ',
  ])('accepts the IQN %s unchanged', (iqn) => {
    expect(parseTargetIqn(iqn)).toBe(iqn);
    expect(parseIscsiName(iqn).type).toBe('iqn');
  });

  it('accepts EUI-64 and NAA names (RFC 3720, RFC 3980)', () => {
    expect(parseIscsiName('eui.02004567A425678D')).toEqual({ type: 'eui', name: 'eui.02004567A425678D' });
    expect(parseIscsiName('naa.52004567BA64678D').type).toBe('naa');
    expect(parseIscsiName('naa.62004567BA64678D0123456789ABCDEF').type).toBe('naa');
    expect(parseInitiatorName('iqn.1993-08.org.debian:01:0123456789ab')).toBe('iqn.1993-08.org.debian:01:0123456789ab');
  });

  it('rejects malformed names with a message that says what is expected', () => {
    rejects(() => parseTargetIqn(''), /target IQN is required/);
    rejects(() => parseTargetIqn(undefined), /required/);
    rejects(() => parseTargetIqn('iqn.2026-11.io.Example:t1'), /reversed domain name in lower case/);
    rejects(() => parseTargetIqn('iqn.2026-11.io.example:Volume1'), /upper-case letters are not allowed.*iqn\.2026-11\.io\.example:volume1/);
    rejects(() => parseTargetIqn('IQN.2026-11.io.example:t1'), /lower case/);
    rejects(() => parseTargetIqn('iqn.2026-13.io.example:t1'), /month 01\.\.12/);
    rejects(() => parseTargetIqn('iqn.26-11.io.example'), /expected iqn\.yyyy-mm/);
    rejects(() => parseTargetIqn('iqn.2026-11.io.example:'), /nothing follows/);
    rejects(() => parseTargetIqn('iqn.2026-11.io.example:a b'), /character " " is not allowed/);
    rejects(() => parseTargetIqn('iqn.2026-11.io.example:a/b'), /character "\/" is not allowed/);
    rejects(() => parseTargetIqn('iqn.2026-11.io.example:../../etc'), /character "\/" is not allowed/);
    rejects(() => parseTargetIqn('iqn.2026-11..example:t'), /reversed domain/);
    rejects(() => parseTargetIqn('eui.0200456'), /16 hex digits/);
    rejects(() => parseTargetIqn('naa.123'), /16 or 32 hex/);
    rejects(() => parseTargetIqn('target1'), /expected iqn/);
  });

  it('enforces the 223-byte limit in UTF-8 bytes', () => {
    const head = 'iqn.2026-11.io.example:';
    expect(parseTargetIqn(head + 'a'.repeat(223 - head.length))).toHaveLength(223);
    rejects(() => parseTargetIqn(head + 'a'.repeat(224 - head.length)), /longer than 223 bytes/);
    // 3-byte characters: 67 of them push the name over the limit although it has fewer than 223 characters
    rejects(() => parseTargetIqn(head + 'ス'.repeat(67)), /longer than 223 bytes/);
  });
});

describe('portals', () => {
  it.each([
    ['127.0.0.1:3260', { host: '127.0.0.1', port: 3260, family: 'ipv4' }, '127.0.0.1:3260'],
    ['10.0.0.5', { host: '10.0.0.5', port: 3260, family: 'ipv4' }, '10.0.0.5:3260'],
    ['192.168.1.107:33260', { host: '192.168.1.107', port: 33260, family: 'ipv4' }, '192.168.1.107:33260'],
    ['[fd00::10]:3261', { host: 'fd00::10', port: 3261, family: 'ipv6' }, '[fd00::10]:3261'],
    ['[FD00:0000:0000:0000:0000:0000:0000:0010]', { host: 'fd00::10', port: 3260, family: 'ipv6' }, '[fd00::10]:3260'],
    ['fd00::10', { host: 'fd00::10', port: 3260, family: 'ipv6' }, '[fd00::10]:3260'],
    ['::1', { host: '::1', port: 3260, family: 'ipv6' }, '[::1]:3260'],
    ['San-1.Example.com:3260', { host: 'san-1.example.com', port: 3260, family: 'hostname' }, 'san-1.example.com:3260'],
    ['truenas', { host: 'truenas', port: 3260, family: 'hostname' }, 'truenas:3260'],
    ['  10.0.0.5:3260  ', { host: '10.0.0.5', port: 3260, family: 'ipv4' }, '10.0.0.5:3260'],
  ])('parses %j', (text, portal, formatted) => {
    const p = parsePortal(text);
    expect(p).toEqual(portal);
    expect(formatPortal(p)).toBe(formatted);
  });

  it.each([
    ['', /portal is required/],
    ['10.0.0.5:0', /1\.\.65535/],
    ['10.0.0.5:65536', /1\.\.65535/],
    ['10.0.0.5:32a', /1\.\.65535/],
    ['10.0.0.5:', /1\.\.65535/],
    ['300.1.1.1', /looks like an IPv4 address but is not one/],
    ['10.0.0', /looks like an IPv4 address/],
    ['[10.0.0.5]:3260', /not an IPv6 address/],
    ['[fd00::10', /expected host:port/],
    ['[fe80::1%eth0]:3260', /zone ids/],
    ['fd00:::1', /not an IPv6 address/],
    [':3260', /host is empty/],
    ['-bad-.example.com', /label/],
    ['a_b.example.com', /label/],
    ['../../etc:3260', /not valid/],
    ['host name:3260', /label/],
    ['10.0.0.5:3260,1', /1\.\.65535/],
  ])('rejects %j', (text, message) => {
    rejects(() => parsePortal(text), message);
  });

  it('keys sysfs addresses the way requests are keyed', () => {
    // sysfs `address` prints IPv6 uncompressed (%pI6); persistent_address is what iscsiadm was given
    expect(portalKeyOf('fd00:0000:0000:0000:0000:0000:0000:0010', '3260')).toBe('[fd00::10]:3260');
    expect(portalKeyOf('[fd00::10]', 3260)).toBe('[fd00::10]:3260');
    expect(portalKeyOf('10.0.0.1', 3260)).toBe('10.0.0.1:3260');
    expect(portalKeyOf('SAN.example.com', 3260)).toBe('san.example.com:3260');
    expect(canonicalIPv6('2001:DB8:0:0:1:0:0:1')).toBe('2001:db8::1:0:0:1');
  });

  it('validates ports and host names on their own', () => {
    expect(parsePort('1')).toBe(1);
    expect(parsePort(65535)).toBe(65535);
    rejects(() => parsePort(-1), /1\.\.65535/);
    rejects(() => parsePort(1.5), /1\.\.65535/);
    expect(parseHostname('a'.repeat(63) + '.example')).toBe('a'.repeat(63) + '.example');
    rejects(() => parseHostname('a'.repeat(64) + '.example'), /1\.\.63/);
    rejects(() => parseHostname(`${'a.'.repeat(127)}ab`), /longer than 253/);
  });
});

describe('LUN, fsType, iface', () => {
  it('accepts LUNs 0..16383 as numbers or digit strings', () => {
    expect(parseLun(0)).toBe(0);
    expect(parseLun('1')).toBe(1);
    expect(parseLun(16383)).toBe(16383);
    for (const bad of [-1, 16384, 1.5, '1e3', '', ' 1', 'one', null, undefined, '0x1']) rejects(() => parseLun(bad), /integer 0\.\.16383/);
  });

  it('allows only known filesystems', () => {
    expect(parseFsType('xfs')).toBe('xfs');
    expect(parseFsType('', 'ext4')).toBe('ext4');
    expect(parseFsType(undefined, 'ext4')).toBe('ext4');
    rejects(() => parseFsType('ntfs'), /not supported; use one of ext4, ext3, xfs, btrfs/);
    rejects(() => parseFsType('EXT4'), /not supported/);
    rejects(() => parseFsType(''), /not supported/);
  });

  it('accepts iface names that are safe file names', () => {
    for (const ok of ['default', 'iser', 'bnx2i.00:22:19:ab:cd:03.ipv4.0', 'iface0', 'csi-0123456789abcdef', 'a'.repeat(64)]) {
      expect(parseIfaceName(ok)).toBe(ok);
    }
    for (const bad of ['', '.', '..', '../etc', 'a/b', 'a b', '-o', 'a'.repeat(65), 'ïface']) rejects(() => parseIfaceName(bad), /is not valid/);
  });
});

describe('volume ids and keys', () => {
  it('accepts any id up to 1024 bytes', () => {
    expect(parseVolumeId('pvc-1')).toBe('pvc-1');
    expect(parseVolumeId('x'.repeat(1024))).toHaveLength(1024);
    rejects(() => parseVolumeId(''), /required/);
    rejects(() => parseVolumeId('x'.repeat(1025)), /longer than 1024 bytes/);
    rejects(() => parseVolumeId('a\0b'), /NUL/);
  });

  it.each(['../../etc', '..', '.', '/', 'a/b', '.hidden', 'x'.repeat(1024), 'Mixed-Case_Name.With.Dots', '\n', '🙂'])(
    'makes a safe, stable file name of %j',
    (id) => {
      const key = volumeKey(id);
      expect(key).toMatch(/^[A-Za-z0-9_][A-Za-z0-9._-]*$/);
      expect(key).not.toContain('/');
      expect(key).not.toBe('..');
      expect(key.length).toBeLessThanOrEqual(81);
      expect(volumeKey(id)).toBe(key);
    },
  );

  it('keeps ids that differ only in unsafe characters apart, and keeps a readable prefix', () => {
    expect(volumeKey('a/b')).not.toBe(volumeKey('a_b'));
    expect(volumeKey('A')).not.toBe(volumeKey('a'));
    expect(volumeKey('pvc-123')).toMatch(/^pvc-123-[0-9a-f]{32}$/);
    expect(safeFileKey('iqn.2026-11.io.example:t1')).toMatch(/^iqn\.2026-11\.io\.example_t1-[0-9a-f]{32}$/);
  });

  it('names cloned ifaces validly and stably, never with "ipv6" in them', () => {
    const name = clonedIfaceName('default', '../../etc');
    expect(parseIfaceName(name)).toBe(name);
    expect(name).toMatch(/^csi-[0-9a-f]{16}$/);
    expect(clonedIfaceName('default', '../../etc')).toBe(name);
    expect(clonedIfaceName('iser', '../../etc')).not.toBe(name);
  });
});
