// NodeExpandVolume: validate → the volume staged or published at the path → the expand flow (rescan,
// size wait, multipath resize, filesystem grow); answers the new size. Already big enough → OK.
import { InvalidArgument, NotFound } from '../errors.js';
import type { NodeExpandVolumeRequest, NodeExpandVolumeResponse } from '../csi/types.js';
import type { CallContext } from '../server/service.js';
import type { NodeHost } from '../flows/ports.js';
import { expand } from '../flows/expand.js';
import { isAbsolute } from 'node:path';
import { parsePath, parseVolumeIdField } from './request.js';
import { exactByteCount, requiredByteCount } from '../common/byte-counts.js';

/** The size asked for (0 = none), exact: before the record is read or anything runs. */
function parseExpandRange(req: NodeExpandVolumeRequest): number {
  const required = exactByteCount(req.capacity_range?.required_bytes, 'capacity_range.required_bytes');
  const limit = exactByteCount(req.capacity_range?.limit_bytes, 'capacity_range.limit_bytes');
  if (limit > 0n && required > limit) throw new InvalidArgument(`capacity_range.required_bytes ${required} exceeds limit_bytes ${limit}`);
  return requiredByteCount(req.capacity_range?.required_bytes, 'capacity_range.required_bytes');
}

export async function expandVolume(host: NodeHost, req: NodeExpandVolumeRequest, ctx: CallContext): Promise<NodeExpandVolumeResponse> {
  const volumeId = parseVolumeIdField(req.volume_id);
  if (!req.volume_path) throw new InvalidArgument('volume_path is required');
  const required = parseExpandRange(req);
  const record = await host.metadata.load(volumeId);
  if (!record || record.phase !== 'staged' || !record.devicePath) throw new NotFound(`volume ${volumeId} is not staged on this node`);
  const volumePath = isAbsolute(req.volume_path) ? parsePath(req.volume_path, 'volume_path') : req.volume_path;
  if (record.stagingPath !== volumePath && !record.publishedAt.includes(volumePath)) {
    throw new NotFound(`volume ${volumeId} is not staged or published at ${volumePath}`);
  }
  // asked for with block access, the device grows and whatever is on it is left as it is
  const growFilesystem = record.accessType === 'mount' && req.volume_capability?.access_type !== 'block';
  const size = await expand(host, { ...record, devicePath: record.devicePath }, { requiredBytes: required, growFilesystem }, ctx.logger);
  return { capacity_bytes: size };
}
