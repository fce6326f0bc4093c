// Node service: one small file per RPC (stage, unstage, publish, stats, expand, info); this file only
// maps RPC names to them.
import type { ServiceImpl } from '../server/service.js';
import type { NodeHost } from '../flows/host.js';
import type {
  NodeExpandVolumeRequest, NodeGetVolumeStatsRequest, NodePublishVolumeRequest, NodeStageVolumeRequest,
  NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest,
} from '../csi/types.js';
import { expandVolume } from './expand.js';
import { nodeCapabilities, nodeInfo } from './info.js';
import { publishVolume, unpublishVolume } from './publish.js';
import { parseStageRequest, stageVolume } from './stage.js';
import { volumeStats } from './stats.js';
import { unstageVolume } from './unstage.js';

export function createNodeService(host: NodeHost, nodeId: string): ServiceImpl {
  return {
    NodeStageVolume: (req: NodeStageVolumeRequest, ctx) => stageVolume(host, parseStageRequest(req, host), ctx),
    NodeUnstageVolume: (req: NodeUnstageVolumeRequest, ctx) => unstageVolume(host, req, ctx),
    NodePublishVolume: (req: NodePublishVolumeRequest, ctx) => publishVolume(host, req, ctx),
    NodeUnpublishVolume: (req: NodeUnpublishVolumeRequest, ctx) => unpublishVolume(host, req, ctx),
    NodeGetVolumeStats: (req: NodeGetVolumeStatsRequest, ctx) => volumeStats(host, req, ctx),
    NodeExpandVolume: (req: NodeExpandVolumeRequest, ctx) => expandVolume(host, req, ctx),
    NodeGetCapabilities: async () => nodeCapabilities(),
    NodeGetInfo: async () => nodeInfo(host.cfg, nodeId),
  };
}
