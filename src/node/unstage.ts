// NodeUnstageVolume: no record → the staging path unmounted, OK (not staged here); else the unstage flow
// from the saved record (refused while published or mounted elsewhere; unmount, devices, session if
// unused, cloned iface, the record).
import type { NodeUnstageVolumeRequest, NodeUnstageVolumeResponse } from '../csi/types.js';
import type { CallContext } from '../server/service.js';
import type { NodeHost } from '../flows/ports.js';
import { unmountIfMounted } from '../flows/format-mount.js';
import { unstage } from '../flows/stage.js';
import { parsePath, parseVolumeIdField } from './request.js';

export async function unstageVolume(host: NodeHost, req: NodeUnstageVolumeRequest, ctx: CallContext): Promise<NodeUnstageVolumeResponse> {
  const volumeId = parseVolumeIdField(req.volume_id);
  const stagingPath = parsePath(req.staging_target_path, 'staging_target_path');
  const record = await host.metadata.load(volumeId);
  if (!record) {
    await unmountIfMounted(host.mounts, stagingPath);
    ctx.logger.debug('no record: not staged on this node');
    return {};
  }
  await unstage(host, record, ctx.logger, [stagingPath]);
  return {};
}
