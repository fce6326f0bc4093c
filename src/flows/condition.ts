// A staged volume's condition and usage, read from real state: session logged in, device present,
// mount healthy and writable; bytes and inodes of the filesystem, or the size of a block device. I/O on
// the volume's own path goes through the probe guard: bounded, never two at once per path.
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

/** The first problem found, in the order an operator would check them; sysfs is read once. */
export async function volumeCondition(host: NodeHost, record: VolumeRecord, volumePath: string): Promise<VolumeCondition> {
  const topology = await host.sysfs.topology(record.iqn);
  const sessions = topology.sessionsForTarget(record.iqn);
  const live = sessions.filter((s) => s.state === 'LOGGED_IN');
  if (live.length === 0) {
    return { abnormal: true, message: sessions.length === 0 ? `no iSCSI session to ${record.iqn}` : `iSCSI session to ${record.iqn} is ${sessions.map((s) => s.state).join(', ')}` };
  }
  const luns = sessions.flatMap((s) => s.luns.filter((l) => l.lun === record.lun && l.devices.length > 0));
  if (luns.length === 0) return { abnormal: true, message: `LUN ${record.lun} of ${record.iqn} has no device on this node` };
  const bad = luns.filter((l) => l.state && l.state !== 'running').map((l) => `${l.devices.join(', ')} is ${l.state}`);
  if (bad.length === luns.length) return { abnormal: true, message: bad.join(', ') };
  if (record.accessType === 'mount') {
    const health = await mountHealth(host.mounts, volumePath, (p) => readWithin(host, p));
    if (health) return { abnormal: true, message: health };
  }
  const degraded = live.length < record.portals.length ? `${live.length} of ${record.portals.length} paths up` : '';
  return { abnormal: false, message: degraded || 'healthy' };
}

/**
 * Usage figures always come back, since kubelet drops a reply without them (and its condition with it).
 * When the filesystem cannot be read now (stuck I/O, a read still running), the last figures read for
 * the path are reported, else the device's capacity as the kernel knows it (no I/O on the device).
 */
async function volumeUsage(host: NodeHost, record: VolumeRecord, volumePath: string, mounted: boolean): Promise<VolumeUsage[]> {
  if (record.accessType === 'block') {
    const bytes = record.devicePath ? await host.fs.blockDeviceSize(record.devicePath).catch(() => null) : null;
    return bytes !== null ? [{ unit: 'BYTES', total: bytes, available: 0, used: 0 }] : [];
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
