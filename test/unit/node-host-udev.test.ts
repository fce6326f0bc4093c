import { describe, expect, it } from 'vitest';
import { claimOf, parseUdevProperties } from '../../src/node-host/udev.js';

// the shape of /run/udev/data/b8:16 on a node with multipath-tools (properties after the S:/L:/I: lines)
const CLAIMED = `S:disk/by-path/ip-10.0.0.5:3260-iscsi-iqn.2003-01.org.linux-iscsi.t1:sn.x-lun-1
L:0
I:4310457
E:ID_PATH=ip-10.0.0.5:3260-iscsi-iqn.2003-01.org.linux-iscsi.t1:sn.x-lun-1
E:DM_MULTIPATH_DEVICE_PATH=1
E:SYSTEMD_READY=0
G:systemd
`;

describe('udev multipath claim', () => {
  it('reads the E: properties', () => {
    const props = parseUdevProperties(CLAIMED);
    expect(props.get('ID_PATH')).toBe('ip-10.0.0.5:3260-iscsi-iqn.2003-01.org.linux-iscsi.t1:sn.x-lun-1');
    expect(props.get('SYSTEMD_READY')).toBe('0');
    expect(props.has('L')).toBe(false);
  });

  it('tells claimed (1), maybe (2, find_multipaths smart) and not claimed apart', () => {
    expect(claimOf(parseUdevProperties(CLAIMED))).toBe('claimed');
    expect(claimOf(parseUdevProperties('E:DM_MULTIPATH_DEVICE_PATH=2\n'))).toBe('maybe');
    expect(claimOf(parseUdevProperties('E:DM_MULTIPATH_DEVICE_PATH=0\n'))).toBe('no');
    expect(claimOf(parseUdevProperties('E:ID_PATH=x\n'))).toBe('no');
  });
});
