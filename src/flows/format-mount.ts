// Step 8: filesystem volumes. The device itself is probed (`blkid -p`, never a udev cache: democratic-csi
// #215/#261 reformatted volumes that way); only a device with no signature at all is formatted; a device
// holding anything else than the requested filesystem is refused, never reformatted. And the way back:
// whatever is mounted at a path, unmounted.
import { FailedPrecondition } from '../errors.js';
import type { Logger } from '../log.js';
import type { FsType } from '../common/validate.js';
import type { MountTable, NodeHost } from './ports.js';
import type { ProbeResult } from '../node-host/filesystem.js';

export async function formatAndMount(host: NodeHost, device: string, stagingPath: string, fsType: FsType, mountFlags: string[], readonly: boolean, log: Logger): Promise<void> {
  const found = await host.fs.probe(device);
  if (!found.hasData) {
    if (readonly) throw new FailedPrecondition(`${device} holds no filesystem and the volume is read-only: nothing to mount`);
    await host.fs.mkfs(device, fsType);
    log.info({ device, fsType }, 'formatted an empty device');
  } else if (found.fsType !== fsType || found.ambivalent) {
    throw new FailedPrecondition(`${device} already holds ${describe(found)}, not the requested ${fsType}; refusing to reformat it (its data is left untouched)`);
  }
  await host.paths.ensureDir(stagingPath);
  await host.mounts.mount(device, stagingPath, fsType, readonly ? ['ro', ...mountFlags] : mountFlags);
}

function describe(found: ProbeResult): string {
  if (found.ambivalent) return 'several conflicting signatures';
  if (found.ptType) return `a ${found.ptType} partition table`;
  if (found.usage && found.usage !== 'filesystem') return `a ${found.fsType ?? found.type} signature (${found.usage})`;
  return `a ${found.fsType ?? found.type} filesystem`;
}

export async function unmountIfMounted(mounts: MountTable, path: string): Promise<void> {
  if (await mounts.isMountPoint(path)) await mounts.unmount(path);
}
