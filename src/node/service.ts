// Node service: one small file per RPC (stage, unstage, publish, stats, expand, info); this file only
// maps RPC names to them.
import type { CallContext, ServiceImpl } from '../server/service.js';
import { forRequest, type RealNodeHost } from '../flows/host.js';
import type { NodeHost } from '../flows/ports.js';
import type { CommandRunner } from '../runner.js';
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

export function createNodeService(host: RealNodeHost, runner: CommandRunner, nodeId: string): ServiceImpl {
  // each call's commands are logged with its request id
  const h = (ctx: CallContext): NodeHost => forRequest(host, runner, ctx.logger);
  return {
    NodeStageVolume: (req: NodeStageVolumeRequest, ctx) => stageVolume(h(ctx), parseStageRequest(req, host), ctx),
    NodeUnstageVolume: (req: NodeUnstageVolumeRequest, ctx) => unstageVolume(h(ctx), req, ctx),
    NodePublishVolume: (req: NodePublishVolumeRequest, ctx) => publishVolume(h(ctx), req, ctx),
    NodeUnpublishVolume: (req: NodeUnpublishVolumeRequest, ctx) => unpublishVolume(h(ctx), req, ctx),
    NodeGetVolumeStats: (req: NodeGetVolumeStatsRequest, ctx) => volumeStats(h(ctx), req, ctx),
    NodeExpandVolume: (req: NodeExpandVolumeRequest, ctx) => expandVolume(h(ctx), req, ctx),
    NodeGetCapabilities: async () => nodeCapabilities(),
    NodeGetInfo: async () => nodeInfo(host.cfg, nodeId),
  };
}
