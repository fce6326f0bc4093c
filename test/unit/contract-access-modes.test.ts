// Mount flags: ordinary filesystem options pass (also comma-joined); options mount(8) treats as an
// operation (another source, a loop or dm-verity device, a bind, a remount, a move, a propagation
// change, a directory made or chowned, a helper program) are refused with INVALID_ARGUMENT naming the
// flag, on the node and in the controller alike (both parse capabilities with the contract's rules).
import { describe, expect, it } from 'vitest';
import { InvalidArgument } from '../../src/errors.js';
import { parseMountFlags, parseVolumeCapability } from '../../src/contract/access-modes.js';
import { parseCapabilities } from '../../src/controller/capabilities.js';
import type { VolumeCapability } from '../../src/csi/types.js';

const mountCap = (mount_flags: string[]): VolumeCapability => ({ access_mode: { mode: 'SINGLE_NODE_WRITER' }, access_type: 'mount', mount: { fs_type: 'ext4', mount_flags, volume_mount_group: '' } });

const OPERATIONS = [
  'loop', 'loop=/dev/loop3', 'offset=4096', 'sizelimit=1048576', 'encryption=aes',
  'bind', 'rbind', 'remount', 'move', 'rmove',
  'shared', 'slave', 'private', 'unbindable', 'rshared', 'rslave', 'rprivate', 'runbindable',
  'X-mount.mkdir', 'X-mount.mkdir=0777', 'x-mount.mkdir', 'X-mount.owner=1000', 'X-mount.group=0', 'X-mount.mode=4777', 'X-mount.subdir=etc', 'X-mount.idmap=b:0:1000:1',
  'verity.hashdevice=/dev/sdz', 'helper=nfs', 'uhelper=udisks2',
];

describe('mount flags', () => {
  it('keeps ordinary filesystem options, comma-joined ones split', () => {
    expect(parseMountFlags(['noatime', 'ro,exec', 'discard', 'errors=remount-ro', 'data=ordered', 'context="system_u:object_r:container_file_t:s0"', 'nosymfollow', 'X-comment'])).toEqual(
      ['noatime', 'ro', 'exec', 'discard', 'errors=remount-ro', 'data=ordered', 'context="system_u:object_r:container_file_t:s0"', 'nosymfollow', 'X-comment'],
    );
  });

  it.each(OPERATIONS)('refuses %s, alone or inside a comma-joined list, naming it', (flag) => {
    for (const given of [[flag], [`noatime,${flag}`], ['nodev', `${flag},exec`]]) {
      const call = (): unknown => parseMountFlags(given);
      expect(call).toThrow(InvalidArgument);
      expect(call).toThrow(`mount flag ${JSON.stringify(flag)}`);
    }
  });

  it('refuses them case-insensitively (mount(8) matches X-mount.* and x-mount.*)', () => {
    expect(() => parseMountFlags(['BIND'])).toThrow(InvalidArgument);
    expect(() => parseMountFlags(['X-Mount.mkdir'])).toThrow(InvalidArgument);
  });

  it('the node (stage, publish) and the controller (CreateVolume, ValidateVolumeCapabilities) refuse them alike', () => {
    expect(() => parseVolumeCapability(mountCap(['noatime', 'bind']))).toThrow('mount flag "bind"');
    expect(() => parseCapabilities([mountCap(['ro']), mountCap(['X-mount.mkdir'])])).toThrow(InvalidArgument);
    expect(() => parseCapabilities([mountCap(['ro']), mountCap(['X-mount.mkdir'])])).toThrow('volume_capabilities[1]');
    expect(parseCapabilities([mountCap(['noatime,nodev'])])).toEqual([{ accessType: 'mount', mode: 'SINGLE_NODE_WRITER', fsType: 'ext4' }]);
  });
});
