// NodeGetCapabilities and NodeGetInfo.
import type { NodeGetCapabilitiesResponse, NodeGetInfoResponse, NodeRpcType } from '../csi/types.js';
import type { Config } from '../config.js';

export const NODE_CAPABILITIES: NodeRpcType[] = [
  'STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'VOLUME_CONDITION', 'EXPAND_VOLUME', 'SINGLE_NODE_MULTI_WRITER',
];

export function nodeCapabilities(): NodeGetCapabilitiesResponse {
  return { capabilities: NODE_CAPABILITIES.map((type) => ({ type: 'rpc', rpc: { type } })) };
}

export function nodeInfo(cfg: Config, nodeId: string): NodeGetInfoResponse {
  const topology = Object.keys(cfg.node.topology).length > 0 ? { segments: cfg.node.topology } : null;
  return { node_id: nodeId, max_volumes_per_node: cfg.node.maxVolumesPerNode, accessible_topology: topology };
}
