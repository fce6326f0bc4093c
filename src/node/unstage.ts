// NodeUnstageVolume: refused while published; the staging path unmounted, then the unstage flow from
// the saved record (devices, session if unused, cloned iface, the record). Not staged → OK.
import { FailedPrecondition } from '../errors.js';
import type { NodeUnstageVolumeRequest, NodeUnstageVolumeResponse } from '../csi/types.js';
import type { CallContext } from '../server/service.js';
import type { NodeHost } from '../flows/ports.js';
import { lunMounts, unmountIfMounted } from '../flows/format-mount.js';
import { unstage } from '../flows/stage.js';
import { parsePath, parseVolumeIdField } from './request.js';

export async function unstageVolume(host: NodeHost, req: NodeUnstageVolumeRequest, ctx: CallContext): Promise<NodeUnstageVolumeResponse> {
  const volumeId = parseVolumeIdField(req.volume_id);
  const stagingPath = parsePath(req.staging_target_path, 'staging_target_path');
  const record = await host.metadata.load(volumeId);
  if (record && record.publishedAt.length > 0) {
    const stillMounted = [];
    for (const t of record.publishedAt) if (await host.mounts.isMountPoint(t)) stillMounted.push(t);
    if (stillMounted.length > 0) throw new FailedPrecondition(`volume ${volumeId} is still published at ${stillMounted.join(', ')}; unpublish it first`);
  }
  await unmountIfMounted(host.mounts, stagingPath);
  if (record && record.stagingPath !== stagingPath) await unmountIfMounted(host.mounts, record.stagingPath);
  if (!record) {
    ctx.logger.debug('no record: not staged on this node');
    return {};
  }
  // the devices are deleted next: never under a mount of their filesystem the unmounts above did not
  // remove (made by hand, or through a symbolic link by an older driver)
  const leftover = await lunMounts(host, record.iqn, record.lun, record.devicePath ? [record.devicePath] : []);
  if (leftover.length > 0) {
    throw new FailedPrecondition(`volume ${volumeId}'s filesystem is still mounted at ${leftover.map((m) => m.mountPoint).join(', ')}, which is not its staging path; its devices are not deleted under a mount: unmount it, then unstage again`);
  }
  await unstage(host, record, ctx.logger);
  return {};
}
