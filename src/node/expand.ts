// NodeExpandVolume: after the LUN grew on the target, rescan each path device, resize the multipath
// map, grow the filesystem; answers the new size. Already big enough → OK.
import { FailedPrecondition, InvalidArgument, NotFound, OutOfRange } from '../errors.js';
import type { NodeExpandVolumeRequest, NodeExpandVolumeResponse } from '../csi/types.js';
import type { CallContext } from '../server/service.js';
import type { NodeHost } from '../flows/host.js';
import { isAbsolute, join } from 'node:path';
import { waitUntil } from '../node-host/devices.js';
import { parsePath, parseVolumeIdField } from './request.js';
import { parseFsType } from '../common/validate.js';

export async function expandVolume(host: NodeHost, req: NodeExpandVolumeRequest, ctx: CallContext): Promise<NodeExpandVolumeResponse> {
  const volumeId = parseVolumeIdField(req.volume_id);
  if (!req.volume_path) throw new InvalidArgument('volume_path is required');
  const record = await host.metadata.load(volumeId);
  if (!record || record.phase !== 'staged' || !record.devicePath) throw new NotFound(`volume ${volumeId} is not staged on this node`);
  const volumePath = isAbsolute(req.volume_path) ? parsePath(req.volume_path, 'volume_path') : req.volume_path;
  if (record.stagingPath !== volumePath && !record.publishedAt.includes(volumePath)) {
    throw new NotFound(`volume ${volumeId} is not staged or published at ${volumePath}`);
  }
  const required = req.capacity_range?.required_bytes ?? 0;
  const limit = req.capacity_range?.limit_bytes ?? 0;
  if (limit > 0 && required > limit) throw new InvalidArgument(`capacity_range.required_bytes ${required} exceeds limit_bytes ${limit}`);

  const paths = await host.sysfs.devicesForIqnLun(record.iqn, record.lun);
  if (paths.length === 0) throw new FailedPrecondition(`LUN ${record.lun} of ${record.iqn} has no device on this node; stage it again`);
  for (const device of paths) await host.sysfs.rescanDevice(device);
  await waitForPathSizes(host, paths, required);
  if (record.multipath) await host.multipath.resize(record.multipath);
  const size = await host.fs.blockDeviceSize(record.devicePath);
  if (required > 0 && size < required) {
    throw new OutOfRange(`the device is ${size} bytes after a rescan, less than the requested ${required}: expand the LUN on the target first`);
  }
  if (record.accessType === 'mount' && req.volume_capability?.access_type !== 'block') {
    await host.fs.resize(record.devicePath, record.stagingPath, parseFsType(record.fsType));
  }
  ctx.logger.info({ bytes: size }, 'expanded');
  return { capacity_bytes: size };
}

/**
 * A rescan re-reads the capacity; a kernel (or a simulated one) may apply it a little after the write
 * returns. Wait, bounded by the device timeout, until every path reports at least the requested size:
 * woken by a change of the paths' `size` attribute where the sysfs reports one, else by the poll.
 */
async function waitForPathSizes(host: NodeHost, paths: string[], required: number): Promise<void> {
  if (required <= 0) return;
  const sysRoot = host.sysfs.sysRoot;
  await waitUntil(
    paths.map((d) => ({ dir: join(sysRoot, 'block', d), root: sysRoot, relevant: (f: string | null) => f === null || f === 'size' })),
    async () => {
      const sizes = await Promise.all(paths.map((d) => host.sysfs.deviceSizeBytes(d)));
      return sizes.every((s) => s !== null && s >= required) ? true : null;
    },
    { deadlineMs: host.cfg.timeouts.deviceWaitMs, pollMs: host.cfg.timeouts.devicePollMs },
  );
}
