// A staged volume's condition and usage, read from real state: session logged in, device present,
// mount healthy and writable; bytes and inodes of the filesystem, or the size of a block device. I/O on
// the volume's own path goes through the probe guard: bounded, never two at once per path.
import { basename } from 'node:path';
import type { VolumeCondition, VolumeUsage } from '../csi/types.js';
import type { VolumeRecord } from '../node-host/metadata.js';
import type { MountTable, NodeHost } from './ports.js';

export interface VolumeHealth {
  condition: VolumeCondition;
  usage: VolumeUsage[];
}

/** `mounted`: whether something is mounted at `volumePath`. The condition first, then the usage. */
export async function volumeHealth(host: NodeHost, record: VolumeRecord, volumePath: string, mounted: boolean): Promise<VolumeHealth> {
  const condition = await volumeCondition(host, record, volumePath);
  // after the condition's read of the same path: a stuck one leaves this one `busy`, not piled up
  const usage = await volumeUsage(host, record, volumePath, mounted);
  return { condition, usage };
}

/**
 * The first problem found, in the order an operator would check them: the paths (each recorded
 * portal's session and the LUN's device on it, named when down), then the mount and its I/O. Sysfs is
 * read once.
 */
export async function volumeCondition(host: NodeHost, record: VolumeRecord, volumePath: string): Promise<VolumeCondition> {
  const paths = await pathStates(host, record);
  const down = paths.filter((p) => !p.up).map((p) => `${p.portal}: ${p.state}`).join('; ');
  const live = paths.filter((p) => p.up).length;
  if (live === 0) return { abnormal: true, message: `no live path to LUN ${record.lun} of ${record.iqn} (${down})` };
  if (record.accessType === 'mount') {
    const health = await mountHealth(host.mounts, volumePath, (p) => readWithin(host, p));
    if (health) return { abnormal: true, message: health };
  }
  return { abnormal: false, message: live < paths.length ? `${live} of ${paths.length} paths up (${down})` : 'healthy' };
}

interface PathState {
  portal: string;
  up: boolean;
  /** the path device when up, else what is wrong: no session, its state, no device, the device's state */
  state: string;
}

/** Each recorded portal's path: its session through the volume's iface, and the LUN's device on it. */
async function pathStates(host: NodeHost, record: VolumeRecord): Promise<PathState[]> {
  const paths = await host.sysfs.volumePaths(record.iqn, record.lun, record.iface);
  return record.portals.map((portal): PathState => {
    const session = paths.sessionAt(portal);
    if (!session) return { portal, up: false, state: 'no session' };
    if (session.state !== 'LOGGED_IN') return { portal, up: false, state: `session ${session.state ?? 'in an unknown state'}` };
    const lun = session.luns.find((l) => l.lun === record.lun && l.devices.length > 0);
    if (!lun) return { portal, up: false, state: `no device for LUN ${record.lun}` };
    if (lun.state && lun.state !== 'running') return { portal, up: false, state: `${lun.devices.join(', ')} ${lun.state}` };
    return { portal, up: true, state: lun.devices.join(', ') };
  });
}

/**
 * Usage figures always come back, since kubelet drops a reply without them (and its condition with it).
 * When the filesystem cannot be read now (stuck I/O, a read still running), the last figures read for
 * the path are reported, else the device's capacity as the kernel knows it (no I/O on the device).
 */
async function volumeUsage(host: NodeHost, record: VolumeRecord, volumePath: string, mounted: boolean): Promise<VolumeUsage[]> {
  if (record.accessType === 'block') {
    // the capacity sysfs reports for the staged device (no process spawned, no I/O on the device)
    const real = record.devicePath ? await host.devices.resolveDevice(record.devicePath) : null;
    const bytes = real ? await host.sysfs.deviceSizeBytes(basename(real)).catch(() => null) : null;
    return bytes !== null ? [{ unit: 'BYTES', total: bytes, available: 0, used: 0 }] : capacityOnly(host, record);
  }
  if (!mounted) return [];
  const probe = await host.probes.run(ioProbeKey(volumePath), () => host.fs.statfs(volumePath).catch(() => null), host.cfg.timeouts.volumeProbeMs);
  const st = probe.status === 'done' ? probe.value : null;
  if (st) {
    const usage: VolumeUsage[] = [
      { unit: 'BYTES', total: st.totalBytes, available: st.availableBytes, used: st.usedBytes },
      { unit: 'INODES', total: st.totalInodes, available: st.freeInodes, used: st.usedInodes },
    ];
    host.lastUsage.set(volumePath, usage);
    return usage;
  }
  return host.lastUsage.get(volumePath) ?? capacityOnly(host, record);
}

/** The capacity of the LUN's first path device from sysfs (today's names), as a block volume reports it. */
async function capacityOnly(host: NodeHost, record: VolumeRecord): Promise<VolumeUsage[]> {
  const [first] = await host.sysfs.devicesForIqnLun(record.iqn, record.lun);
  const bytes = first ? await host.sysfs.deviceSizeBytes(first).catch(() => null) : null;
  return bytes !== null ? [{ unit: 'BYTES', total: bytes, available: 0, used: 0 }] : [];
}

/**
 * null when the mount at `path` is healthy and writable as mounted, else what is wrong. `readable`
 * reads the directory (bounded by the caller: a dead device can make that read hang).
 */
async function mountHealth(mounts: MountTable, path: string, readable: (path: string) => Promise<string | null>): Promise<string | null> {
  const state = await mounts.mountState(path);
  if (!state.mounted) return `${path} is not mounted`;
  if (state.stale) return `the mount at ${path} is stale (the device is gone)`;
  if (state.entry.superOptions.includes('ro') && !state.entry.mountOptions.includes('ro')) {
    return `the filesystem at ${path} was remounted read-only (I/O errors?)`;
  }
  return readable(path);
}

function ioProbeKey(path: string): string {
  return `volume-io:${path}`;
}

/** Reads the volume's directory in its own process, waiting `timeouts.volumeProbeMs` at most. */
async function readWithin(host: NodeHost, path: string): Promise<string | null> {
  const limit = host.cfg.timeouts.volumeProbeMs;
  const read = (): Promise<string | null> => host.fs.readDirectory(path).catch((e: Error) => `${path} cannot be read: ${e.message}`);
  const r = await host.probes.run(ioProbeKey(path), read, limit);
  if (r.status === 'done') return r.value;
  if (r.status === 'late') return `I/O on ${path} does not complete: reading it took longer than ${limit} ms`;
  return `I/O on ${path} is stuck: a read started ${Math.round(r.sinceMs / 1000)} s ago has not finished`;
}
