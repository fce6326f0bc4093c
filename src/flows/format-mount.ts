// Step 8: filesystem volumes. The device itself is probed (`blkid -p`, never a udev cache: democratic-csi
// #215/#261 reformatted volumes that way); only a device with no signature at all is formatted; a device
// holding anything else than the requested filesystem is refused, never reformatted. And the way back:
// whatever is mounted at a path, unmounted.
import { FailedPrecondition } from '../errors.js';
import type { Logger } from '../log.js';
import type { FsType } from '../common/validate.js';
import type { MountTable, NodeHost } from './ports.js';
import type { ProbeResult } from '../node-host/filesystem.js';
import type { MountInfoEntry } from '../node-host/mounts.js';
import type { StepTimes } from '../common/step-times.js';

export async function formatAndMount(host: NodeHost, device: string, stagingPath: string, fsType: FsType, mountFlags: string[], readonly: boolean, log: Logger, steps: StepTimes): Promise<void> {
  const found = await steps.time('probe', () => host.fs.probe(device));
  if (!found.hasData) {
    if (readonly) throw new FailedPrecondition(`${device} holds no filesystem and the volume is read-only: nothing to mount`);
    await steps.time('probe', () => refuseUnrecognisedData(host, device));
    await steps.time('mkfs', () => host.fs.mkfs(device, fsType));
    log.info({ device, fsType }, 'formatted an empty device');
  } else if (found.fsType !== fsType || found.ambivalent) {
    throw new FailedPrecondition(`${device} already holds ${describe(found)}, not the requested ${fsType}; refusing to reformat it (its data is left untouched)`);
  }
  await steps.time('mount', () => mountUnlessMounted(host, device, stagingPath, fsType, mountFlags, readonly, log));
}

async function mountUnlessMounted(host: NodeHost, device: string, stagingPath: string, fsType: FsType, mountFlags: string[], readonly: boolean, log: Logger): Promise<void> {
  await host.paths.ensureDir(stagingPath);
  if (await mountedAlready(host, device, stagingPath, readonly, log)) return;
  await host.mounts.mount(device, stagingPath, fsType, readonly ? ['ro', ...mountFlags] : mountFlags);
}

/**
 * Before a stage changes anything: the staging path is no symbolic link and no file, and whatever is
 * mounted there already is this LUN's filesystem (a mount of an earlier call killed before it could
 * record it), never another one: the stage would mount over it, and its undo unmount it.
 */
export async function checkStagingPath(host: NodeHost, stagingPath: string, kind: 'mount' | 'block', iqn: string, lun: number): Promise<void> {
  await host.paths.checkTarget(stagingPath, 'directory');
  // a block volume's staging path is not mounted on
  if (kind === 'block') return;
  const top = (await host.mounts.mountsAt(stagingPath)).at(-1);
  if (!top) return;
  if ((await lunMounts(host, iqn, lun)).some((m) => m.mountId === top.mountId)) return;
  throw new FailedPrecondition(`${stagingPath} already has ${top.source} (${top.fsType}) mounted on it, which is not ${iqn} LUN ${lun}; refusing to mount over it (nothing was changed)`);
}

/**
 * Every mount of the filesystem on a LUN's devices (its paths, their multipath map, and `alsoDevices`,
 * e.g. the recorded device path), wherever it is: found by what is mounted, not by a path.
 */
export async function lunMounts(host: NodeHost, iqn: string, lun: number, alsoDevices: string[] = []): Promise<MountInfoEntry[]> {
  const devices = new Set(alsoDevices);
  for (const name of await host.sysfs.devicesForIqnLun(iqn, lun)) {
    devices.add(host.devices.devicePath(name));
    const holder = await host.sysfs.multipathHolder(name);
    if (holder) devices.add(host.devices.devicePath(holder.dm));
  }
  return host.mounts.mountsOfDevices([...devices]);
}

/**
 * The mount step found done: `device`'s filesystem is already the mount at `stagingPath` (the driver was
 * killed while mount(8) ran, or before it recorded the stage), compared by what is mounted, not by the
 * path. Something else there is refused.
 */
async function mountedAlready(host: NodeHost, device: string, stagingPath: string, readonly: boolean, log: Logger): Promise<boolean> {
  const top = (await host.mounts.mountsAt(stagingPath)).at(-1);
  if (!top) return false;
  const ours = (await host.mounts.mountsOfDevices([device])).some((m) => m.mountId === top.mountId && m.root === '/');
  if (!ours) throw new FailedPrecondition(`${stagingPath} already has ${top.source} (${top.fsType}) mounted on it, not ${device}; refusing to mount over it`);
  if (top.mountOptions.includes('ro') !== readonly) {
    throw new FailedPrecondition(`${device} is already mounted at ${stagingPath} ${readonly ? 'read-write' : 'read-only'}, not ${readonly ? 'read-only' : 'read-write'} as asked`);
  }
  log.info({ device, stagingPath }, 'the device is already mounted at the staging path (an earlier, interrupted stage): keeping that mount');
  return true;
}

/**
 * blkid finding nothing is not enough: an empty device also reads as zeros in its first and last MiB.
 * Anything there (a partition table or an encrypted volume's header blkid does not know, a backup GPT,
 * the tail of a filesystem whose start was wiped) is data.
 */
async function refuseUnrecognisedData(host: NodeHost, device: string): Promise<void> {
  const regions = await host.fs.nonZeroEdges(device);
  if (regions.length > 0) {
    throw new FailedPrecondition(`${device} holds data blkid does not recognise (non-zero bytes in its ${regions.join(' and ')}); refusing to format it (nothing was written; wipe the device if it really is free)`);
  }
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
