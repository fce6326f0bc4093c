// The simulated host's formats against the real ones (shared/reference/real-outputs.md,
// open-iscsi.md): record files and listings, tgt's WWID, scan-file parsing, multipath sizes.
import { describe, expect, it } from 'vitest';
import {
  formatFile, formatShow, parsePortal, parseRecordText, defaults, nodeDefaultsFromConf, DEFAULT_ISCSID_CONF,
  tpgtListText, portalText,
} from './records.js';
import { parseScanWrites, sdName, tgtNaa } from './kernel.js';
import { formatSize } from './multipath.js';

describe('record formats', () => {
  it('prints the default iface exactly like iscsiadm 2.1.8 -m iface -I default -o show', () => {
    const text = formatShow('iface', { ...defaults('iface'), 'iface.iscsi_ifacename': 'default', 'iface.transport_name': 'tcp' });
    const lines = text.trimEnd().split('\n');
    expect(lines[0]).toBe('# BEGIN RECORD 2.1.8');
    expect(lines[1]).toBe('iface.iscsi_ifacename = default');
    expect(lines[4]).toBe('iface.prefix_len = 0');
    expect(lines[6]).toBe('iface.transport_name = tcp');
    expect(lines[7]).toBe('iface.initiatorname = <empty>');
    expect(lines).toContain('iface.vlan_id = 0');
    expect(lines.at(-2)).toBe('iface.discovery_logout = <empty>');
    expect(lines.at(-1)).toBe('# END RECORD');
    expect(lines).toHaveLength(57); // 55 keys + header + footer, as in the captured output
  });

  it('masks passwords in show output but keeps them in clear text in the record file only', () => {
    const rec = { ...defaults('node'), 'node.name': 'iqn.x:t', 'node.session.auth.username': 'alice', 'node.session.auth.password': 's3cret-pass' };
    const shown = formatShow('node', rec);
    expect(shown).toContain('node.session.auth.password = ********');
    expect(shown).toContain('node.session.auth.password_in = <empty>');
    expect(shown).not.toContain('s3cret-pass');
    expect(formatShow('node', rec, true)).toContain('node.session.auth.password = s3cret-pass');
    const file = formatFile('node', rec);
    expect(file).toContain('node.session.auth.password = s3cret-pass');
    expect(file).not.toContain('<empty>');
    expect(file).not.toMatch(/^node\.session\.auth\.username_in/m); // empty strings are omitted on disk
    expect(file).toMatch(/^iface\.vlan_id = 0$/m); // numbers are always written
    expect(parseRecordText(file)['node.session.auth.password']).toBe('s3cret-pass');
  });

  it('writes the iface block of a node record file in idbm order (hwaddress first), unlike show', () => {
    const rec = { ...defaults('node'), 'node.name': 'iqn.x:t', 'iface.iscsi_ifacename': 'default', 'iface.transport_name': 'tcp' };
    const fileKeys = formatFile('node', rec).split('\n').filter((l) => l.startsWith('iface.')).map((l) => l.split(' ')[0]);
    expect(fileKeys.slice(0, 3)).toEqual(['iface.iscsi_ifacename', 'iface.prefix_len', 'iface.transport_name']);
    const showKeys = formatShow('node', rec).split('\n').filter((l) => l.startsWith('iface.')).map((l) => l.split(' ')[0]);
    expect(showKeys[0]).toBe('iface.iscsi_ifacename');
    expect(showKeys).toHaveLength(55);
  });

  it('seeds node records from iscsid.conf (Debian: node.startup = manual)', () => {
    const d = { ...defaults('node'), ...nodeDefaultsFromConf(DEFAULT_ISCSID_CONF) };
    expect(d['node.startup']).toBe('manual');
    expect(d['node.session.scan']).toBe('auto');
    expect(d['node.conn[0].timeo.login_timeout']).toBe('15');
  });

  it('parses portals the way iscsiadm -p does', () => {
    expect(parsePortal('127.0.0.1:3261')).toEqual({ address: '127.0.0.1', port: 3261, tpgt: -1 });
    expect(parsePortal('10.0.0.5')).toEqual({ address: '10.0.0.5', port: 3260, tpgt: -1 });
    expect(parsePortal('[fd00::10]:3262,2')).toEqual({ address: 'fd00::10', port: 3262, tpgt: 2 });
    expect(parsePortal('fd00::10')).toEqual({ address: 'fd00::10', port: 3260, tpgt: -1 });
    expect(portalText('fd00::10', 3260)).toBe('[fd00::10]:3260');
    expect(tpgtListText(-1)).toBe('4294967295'); // `iscsiadm -m node` as captured
  });
});

describe('simulated kernel helpers', () => {
  it("derives tgt's NAA-6 WWID from its SCSI ID like tgtd does", () => {
    expect(tgtNaa('IET     00010001')).toBe('60000000000000000e00000000010001');
    expect(tgtNaa('IET     00020003')).toBe('60000000000000000e00000000020003');
  });

  it('names disks like sd does', () => {
    expect([0, 1, 25, 26, 27, 701, 702].map(sdName)).toEqual(['sda', 'sdb', 'sdz', 'sdaa', 'sdab', 'sdzz', 'sdaaa']);
  });

  it('parses scan writes, also several that reached the FIFO together without a separator', () => {
    expect(parseScanWrites('0 0 1')).toEqual([{ channel: '0', id: '0', lun: '1' }]);
    expect(parseScanWrites('- - -\n')).toEqual([{ channel: '-', id: '-', lun: '-' }]);
    expect(parseScanWrites('0 0 10')).toEqual([{ channel: '0', id: '0', lun: '10' }]);
    expect(parseScanWrites('0 0 30 0 4')).toEqual([{ channel: '0', id: '0', lun: '3' }, { channel: '0', id: '0', lun: '4' }]);
    expect(parseScanWrites('0 0 100 0 20 0 3')).toEqual([
      { channel: '0', id: '0', lun: '10' }, { channel: '0', id: '0', lun: '2' }, { channel: '0', id: '0', lun: '3' },
    ]);
    expect(parseScanWrites('0 0 40 0 50 0 60 0 7')).toEqual([4, 5, 6, 7].map((l) => ({ channel: '0', id: '0', lun: String(l) })));
    expect(parseScanWrites('0 0 40 0 0')).toEqual([{ channel: '0', id: '0', lun: '4' }, { channel: '0', id: '0', lun: '0' }]);
    expect(parseScanWrites('0 0 10- - -')).toEqual([{ channel: '0', id: '0', lun: '10' }, { channel: '-', id: '-', lun: '-' }]);
    expect(parseScanWrites('0 0 10\n0 0 5')).toEqual([{ channel: '0', id: '0', lun: '10' }, { channel: '0', id: '0', lun: '5' }]);
    expect(parseScanWrites('0 0 1\n0 0 2\n')).toEqual([{ channel: '0', id: '0', lun: '1' }, { channel: '0', id: '0', lun: '2' }]);
    expect(parseScanWrites('garbage')).toEqual([]);
  });

  it('prints map sizes like libmultipath', () => {
    expect(formatSize((64 << 20) / 512)).toBe('64M');
    expect(formatSize((1 << 30) / 512)).toBe('1.0G');
    expect(formatSize((100 * 2 ** 30) / 512)).toBe('100G');
  });
});
