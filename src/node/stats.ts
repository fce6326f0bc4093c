// NodeGetVolumeStats: usage (bytes and inodes for filesystems, size for block) and a volume condition
// read from real state: session logged in, device present, mount healthy and writable.
import { InvalidArgument, NotFound } from '../errors.js';
import type { NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse, VolumeCondition, VolumeUsage } from '../csi/types.js';
import type { CallContext } from '../server/service.js';
import type { NodeHost } from '../flows/host.js';
import type { VolumeRecord } from '../node-host/metadata.js';
import { parseVolumeIdField } from './request.js';
import { mountHealth } from '../node-host/target-paths.js';
import { isAbsolute } from 'node:path';

export async function volumeStats(host: NodeHost, req: NodeGetVolumeStatsRequest, _ctx: CallContext): Promise<NodeGetVolumeStatsResponse> {
  const volumeId = parseVolumeIdField(req.volume_id);
  if (!req.volume_path) throw new InvalidArgument('volume_path is required');
  const volumePath = req.volume_path;
  const record = await host.metadata.load(volumeId);
  if (!record || !isAbsolute(volumePath) || !(record.publishedAt.includes(volumePath) || record.stagingPath === volumePath)) {
    throw new NotFound(`volume ${volumeId} is not staged or published at ${volumePath} on this node`);
  }
  const mounted = await host.mounts.mountsAt(volumePath);
  if (mounted.length === 0 && record.stagingPath !== volumePath) throw new NotFound(`${volumePath} is not mounted`);
  const condition = await volumeCondition(host, record, volumePath);
  const usage: VolumeUsage[] = [];
  if (record.accessType === 'block') {
    const bytes = record.devicePath ? await host.fs.blockDeviceSize(record.devicePath).catch(() => null) : null;
    if (bytes !== null) usage.push({ unit: 'BYTES', total: bytes, available: 0, used: 0 });
  } else if (mounted.length > 0) {
    // after the condition's read of the same path: a stuck one leaves this one `busy`, not piled up
    const probe = await host.probes.run(ioProbeKey(volumePath), () => host.fs.statfs(volumePath).catch(() => null), host.cfg.timeouts.volumeProbeMs);
    const st = probe.status === 'done' ? probe.value : null;
    if (st) {
      usage.push({ unit: 'BYTES', total: st.totalBytes, available: st.availableBytes, used: st.usedBytes });
      usage.push({ unit: 'INODES', total: st.totalInodes, available: st.freeInodes, used: st.usedInodes });
    }
  }
  return { usage, volume_condition: condition };
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
