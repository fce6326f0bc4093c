// NodeGetVolumeStats: the volume staged or published at the path, the path mounted (a publish target)
// → its condition and usage (src/flows/condition.ts).
import { InvalidArgument, NotFound } from '../errors.js';
import type { NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse } from '../csi/types.js';
import type { CallContext } from '../server/service.js';
import type { NodeHost } from '../flows/ports.js';
import { volumeHealth } from '../flows/condition.js';
import { parseVolumeIdField } from './request.js';
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
  const { condition, usage } = await volumeHealth(host, record, volumePath, mounted.length > 0);
  return { usage, volume_condition: condition };
}
