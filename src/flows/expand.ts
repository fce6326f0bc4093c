// Growing a staged volume after its LUN grew on the target: rescan each path device → wait for the
// kernel to report the new size → resize the multipath map → grow the filesystem. Answers the size.
import { FailedPrecondition, OutOfRange } from '../errors.js';
import type { Logger } from '../log.js';
import { parseFsType } from '../common/validate.js';
import type { VolumeRecord } from '../node-host/metadata.js';
import type { NodeHost } from './ports.js';

export interface ExpandRequest {
  /** 0: whatever the LUN has now */
  requiredBytes: number;
  /** a filesystem volume not used as a block device: its filesystem grows with the device */
  growFilesystem: boolean;
}

/** `record`: a staged volume's, with its device path. */
export async function expand(host: NodeHost, record: VolumeRecord & { devicePath: string }, req: ExpandRequest, log: Logger): Promise<number> {
  const paths = await host.sysfs.devicesForIqnLun(record.iqn, record.lun);
  if (paths.length === 0) throw new FailedPrecondition(`LUN ${record.lun} of ${record.iqn} has no device on this node; stage it again`);
  for (const device of paths) await host.sysfs.rescanDevice(device);
  // a kernel (or a simulated one) may apply the new capacity a little after the rescan returns
  if (req.requiredBytes > 0) await host.sizes.waitForSizes(paths, req.requiredBytes, { deadlineMs: host.cfg.timeouts.deviceWaitMs, pollMs: host.cfg.timeouts.devicePollMs });
  if (record.multipath) await host.multipath.resize(record.multipath);
  const size = await host.fs.blockDeviceSize(record.devicePath);
  if (req.requiredBytes > 0 && size < req.requiredBytes) {
    throw new OutOfRange(`the device is ${size} bytes after a rescan, less than the requested ${req.requiredBytes}: expand the LUN on the target first`);
  }
  if (req.growFilesystem) await host.fs.resize(record.devicePath, record.stagingPath, parseFsType(record.fsType));
  log.info({ bytes: size }, 'expanded');
  return size;
}
