// CSI v1.12.0 messages of the Identity, Controller and Node services, as they look once decoded by
// src/server/proto.ts with CSI_DECODE_OPTIONS:
// - field names exactly as in proto/csi.proto (snake_case);
// - int32 as number; int64 as `Int64`: a number when it is a safe integer, else an exact bigint (a
//   size near 2^63 never reaches a handler rounded); enums as the value's name;
// - every field present: scalars default to ''/0/false, repeated to [], maps to {}, messages to null;
// - a oneof adds a field named after it that holds the name of the member that is set (absent when
//   none is); members that are not set are absent, so these are discriminated unions.
// Replies a handler builds may leave fields out: see `Encodable`.

export type StringMap = Record<string, string>;
/** A message without fields. */
export type EmptyMessage = Record<string, never>;

/** google.protobuf.BoolValue */
export interface BoolValue { value: boolean }
/** A decoded int64: a number when it is a safe integer (|v| < 2^53), else the exact bigint. */
export type Int64 = number | bigint;

/** google.protobuf.Int64Value */
export interface Int64Value { value: number }
/** google.protobuf.Timestamp */
export interface Timestamp { seconds: number; nanos: number }

/**
 * What the encoder accepts for a message of type T: proto3 lets every field be left out (it is sent as
 * its default), message fields may be null, and a oneof's discriminator field is ignored on encode.
 */
export type Encodable<T> = T extends readonly (infer E)[]
  ? readonly Encodable<E>[]
  : T extends string | number | bigint | boolean | null | undefined
    ? T
    : { [K in keyof T]?: Encodable<T[K]> };

// ---- shared messages ----

export type AccessModeMode =
  | 'UNKNOWN'
  | 'SINGLE_NODE_WRITER'
  | 'SINGLE_NODE_READER_ONLY'
  | 'MULTI_NODE_READER_ONLY'
  | 'MULTI_NODE_SINGLE_WRITER'
  | 'MULTI_NODE_MULTI_WRITER'
  | 'SINGLE_NODE_SINGLE_WRITER'
  | 'SINGLE_NODE_MULTI_WRITER';

/** VolumeCapability.AccessMode */
export interface AccessMode { mode: AccessModeMode }

/** VolumeCapability.BlockVolume */
export type BlockVolume = EmptyMessage;

/** VolumeCapability.MountVolume */
export interface MountVolume {
  fs_type: string;
  mount_flags: string[];
  volume_mount_group: string;
}

export type VolumeCapability = { access_mode: AccessMode | null } & (
  | { access_type: 'block'; block: BlockVolume; mount?: undefined }
  | { access_type: 'mount'; mount: MountVolume; block?: undefined }
  | { access_type?: undefined; block?: undefined; mount?: undefined }
);

export interface CapacityRange {
  required_bytes: Int64;
  limit_bytes: Int64;
}

export interface Topology { segments: StringMap }

export interface TopologyRequirement {
  requisite: Topology[];
  preferred: Topology[];
}

/** VolumeContentSource.SnapshotSource */
export interface SnapshotSource { snapshot_id: string }
/** VolumeContentSource.VolumeSource */
export interface VolumeSource { volume_id: string }

export type VolumeContentSource =
  | { type: 'snapshot'; snapshot: SnapshotSource; volume?: undefined }
  | { type: 'volume'; volume: VolumeSource; snapshot?: undefined }
  | { type?: undefined; snapshot?: undefined; volume?: undefined };

export interface Volume {
  capacity_bytes: number;
  volume_id: string;
  volume_context: StringMap;
  content_source: VolumeContentSource | null;
  accessible_topology: Topology[];
}

export interface VolumeCondition {
  abnormal: boolean;
  message: string;
}

export interface Snapshot {
  size_bytes: number;
  snapshot_id: string;
  source_volume_id: string;
  creation_time: Timestamp | null;
  ready_to_use: boolean;
  group_snapshot_id: string;
}

export type VolumeUsageUnit = 'UNKNOWN' | 'BYTES' | 'INODES';

export interface VolumeUsage {
  available: number;
  total: number;
  used: number;
  unit: VolumeUsageUnit;
}

// ---- Identity ----

export type GetPluginInfoRequest = EmptyMessage;

export interface GetPluginInfoResponse {
  name: string;
  vendor_version: string;
  manifest: StringMap;
}

export type GetPluginCapabilitiesRequest = EmptyMessage;

export type PluginServiceType =
  | 'UNKNOWN'
  | 'CONTROLLER_SERVICE'
  | 'VOLUME_ACCESSIBILITY_CONSTRAINTS'
  | 'GROUP_CONTROLLER_SERVICE'
  | 'SNAPSHOT_METADATA_SERVICE';

export type VolumeExpansionType = 'UNKNOWN' | 'ONLINE' | 'OFFLINE';

export type PluginCapability =
  | { type: 'service'; service: { type: PluginServiceType }; volume_expansion?: undefined }
  | { type: 'volume_expansion'; volume_expansion: { type: VolumeExpansionType }; service?: undefined }
  | { type?: undefined; service?: undefined; volume_expansion?: undefined };

export interface GetPluginCapabilitiesResponse { capabilities: PluginCapability[] }

export type ProbeRequest = EmptyMessage;

/** `ready: null` means ready. */
export interface ProbeResponse { ready: BoolValue | null }

// ---- Controller ----

export interface CreateVolumeRequest {
  name: string;
  capacity_range: CapacityRange | null;
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  secrets: StringMap;
  volume_content_source: VolumeContentSource | null;
  accessibility_requirements: TopologyRequirement | null;
  mutable_parameters: StringMap;
}

export interface CreateVolumeResponse { volume: Volume | null }

export interface DeleteVolumeRequest {
  volume_id: string;
  secrets: StringMap;
}

export type DeleteVolumeResponse = EmptyMessage;

export interface ControllerPublishVolumeRequest {
  volume_id: string;
  node_id: string;
  volume_capability: VolumeCapability | null;
  readonly: boolean;
  secrets: StringMap;
  volume_context: StringMap;
}

export interface ControllerPublishVolumeResponse { publish_context: StringMap }

export interface ControllerUnpublishVolumeRequest {
  volume_id: string;
  node_id: string;
  secrets: StringMap;
}

export type ControllerUnpublishVolumeResponse = EmptyMessage;

export interface ValidateVolumeCapabilitiesRequest {
  volume_id: string;
  volume_context: StringMap;
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  secrets: StringMap;
  mutable_parameters: StringMap;
}

/** ValidateVolumeCapabilitiesResponse.Confirmed */
export interface ValidateVolumeCapabilitiesConfirmed {
  volume_context: StringMap;
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  mutable_parameters: StringMap;
}

/** `confirmed: null` means not confirmed; `message` may say why. */
export interface ValidateVolumeCapabilitiesResponse {
  confirmed: ValidateVolumeCapabilitiesConfirmed | null;
  message: string;
}

export interface ListVolumesRequest {
  max_entries: number;
  starting_token: string;
}

/** ListVolumesResponse.VolumeStatus and ControllerGetVolumeResponse.VolumeStatus (same shape). */
export interface VolumeStatus {
  published_node_ids: string[];
  volume_condition: VolumeCondition | null;
}

/** ListVolumesResponse.Entry */
export interface ListVolumesEntry {
  volume: Volume | null;
  status: VolumeStatus | null;
}

export interface ListVolumesResponse {
  entries: ListVolumesEntry[];
  next_token: string;
}

export interface ControllerGetVolumeRequest { volume_id: string }

export interface ControllerGetVolumeResponse {
  volume: Volume | null;
  status: VolumeStatus | null;
}

export interface ControllerModifyVolumeRequest {
  volume_id: string;
  secrets: StringMap;
  mutable_parameters: StringMap;
}

export type ControllerModifyVolumeResponse = EmptyMessage;

export interface GetCapacityRequest {
  volume_capabilities: VolumeCapability[];
  parameters: StringMap;
  accessible_topology: Topology | null;
}

export interface GetCapacityResponse {
  available_capacity: number;
  maximum_volume_size: Int64Value | null;
  minimum_volume_size: Int64Value | null;
}

export type ControllerGetCapabilitiesRequest = EmptyMessage;

export type ControllerRpcType =
  | 'UNKNOWN'
  | 'CREATE_DELETE_VOLUME'
  | 'PUBLISH_UNPUBLISH_VOLUME'
  | 'LIST_VOLUMES'
  | 'GET_CAPACITY'
  | 'CREATE_DELETE_SNAPSHOT'
  | 'LIST_SNAPSHOTS'
  | 'CLONE_VOLUME'
  | 'PUBLISH_READONLY'
  | 'EXPAND_VOLUME'
  | 'LIST_VOLUMES_PUBLISHED_NODES'
  | 'VOLUME_CONDITION'
  | 'GET_VOLUME'
  | 'SINGLE_NODE_MULTI_WRITER'
  | 'MODIFY_VOLUME'
  | 'GET_SNAPSHOT';

export type ControllerServiceCapability =
  | { type: 'rpc'; rpc: { type: ControllerRpcType } }
  | { type?: undefined; rpc?: undefined };

export interface ControllerGetCapabilitiesResponse { capabilities: ControllerServiceCapability[] }

export interface CreateSnapshotRequest {
  source_volume_id: string;
  name: string;
  secrets: StringMap;
  parameters: StringMap;
}

export interface CreateSnapshotResponse { snapshot: Snapshot | null }

export interface DeleteSnapshotRequest {
  snapshot_id: string;
  secrets: StringMap;
}

export type DeleteSnapshotResponse = EmptyMessage;

export interface ListSnapshotsRequest {
  max_entries: number;
  starting_token: string;
  source_volume_id: string;
  snapshot_id: string;
  secrets: StringMap;
}

/** ListSnapshotsResponse.Entry */
export interface ListSnapshotsEntry { snapshot: Snapshot | null }

export interface ListSnapshotsResponse {
  entries: ListSnapshotsEntry[];
  next_token: string;
}

export interface GetSnapshotRequest {
  snapshot_id: string;
  secrets: StringMap;
}

export interface GetSnapshotResponse { snapshot: Snapshot | null }

export interface ControllerExpandVolumeRequest {
  volume_id: string;
  capacity_range: CapacityRange | null;
  secrets: StringMap;
  volume_capability: VolumeCapability | null;
}

export interface ControllerExpandVolumeResponse {
  capacity_bytes: number;
  node_expansion_required: boolean;
}

// ---- Node ----

export interface NodeStageVolumeRequest {
  volume_id: string;
  publish_context: StringMap;
  staging_target_path: string;
  volume_capability: VolumeCapability | null;
  secrets: StringMap;
  volume_context: StringMap;
}

export type NodeStageVolumeResponse = EmptyMessage;

export interface NodeUnstageVolumeRequest {
  volume_id: string;
  staging_target_path: string;
}

export type NodeUnstageVolumeResponse = EmptyMessage;

export interface NodePublishVolumeRequest {
  volume_id: string;
  publish_context: StringMap;
  staging_target_path: string;
  target_path: string;
  volume_capability: VolumeCapability | null;
  readonly: boolean;
  secrets: StringMap;
  volume_context: StringMap;
}

export type NodePublishVolumeResponse = EmptyMessage;

export interface NodeUnpublishVolumeRequest {
  volume_id: string;
  target_path: string;
}

export type NodeUnpublishVolumeResponse = EmptyMessage;

export interface NodeGetVolumeStatsRequest {
  volume_id: string;
  volume_path: string;
  staging_target_path: string;
}

export interface NodeGetVolumeStatsResponse {
  usage: VolumeUsage[];
  volume_condition: VolumeCondition | null;
}

export interface NodeExpandVolumeRequest {
  volume_id: string;
  volume_path: string;
  capacity_range: CapacityRange | null;
  staging_target_path: string;
  volume_capability: VolumeCapability | null;
  secrets: StringMap;
}

export interface NodeExpandVolumeResponse { capacity_bytes: number }

export type NodeGetCapabilitiesRequest = EmptyMessage;

export type NodeRpcType =
  | 'UNKNOWN'
  | 'STAGE_UNSTAGE_VOLUME'
  | 'GET_VOLUME_STATS'
  | 'EXPAND_VOLUME'
  | 'VOLUME_CONDITION'
  | 'SINGLE_NODE_MULTI_WRITER'
  | 'VOLUME_MOUNT_GROUP';

export type NodeServiceCapability =
  | { type: 'rpc'; rpc: { type: NodeRpcType } }
  | { type?: undefined; rpc?: undefined };

export interface NodeGetCapabilitiesResponse { capabilities: NodeServiceCapability[] }

export type NodeGetInfoRequest = EmptyMessage;

export interface NodeGetInfoResponse {
  node_id: string;
  max_volumes_per_node: number;
  accessible_topology: Topology | null;
}

// ---- request/response pairs per RPC, for typing handler tables ----

interface Rpc<Req, Res> { request: Req; response: Res }

export interface IdentityRpcs {
  GetPluginInfo: Rpc<GetPluginInfoRequest, GetPluginInfoResponse>;
  GetPluginCapabilities: Rpc<GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse>;
  Probe: Rpc<ProbeRequest, ProbeResponse>;
}

export interface ControllerRpcs {
  CreateVolume: Rpc<CreateVolumeRequest, CreateVolumeResponse>;
  DeleteVolume: Rpc<DeleteVolumeRequest, DeleteVolumeResponse>;
  ControllerPublishVolume: Rpc<ControllerPublishVolumeRequest, ControllerPublishVolumeResponse>;
  ControllerUnpublishVolume: Rpc<ControllerUnpublishVolumeRequest, ControllerUnpublishVolumeResponse>;
  ValidateVolumeCapabilities: Rpc<ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse>;
  ListVolumes: Rpc<ListVolumesRequest, ListVolumesResponse>;
  GetCapacity: Rpc<GetCapacityRequest, GetCapacityResponse>;
  ControllerGetCapabilities: Rpc<ControllerGetCapabilitiesRequest, ControllerGetCapabilitiesResponse>;
  CreateSnapshot: Rpc<CreateSnapshotRequest, CreateSnapshotResponse>;
  DeleteSnapshot: Rpc<DeleteSnapshotRequest, DeleteSnapshotResponse>;
  ListSnapshots: Rpc<ListSnapshotsRequest, ListSnapshotsResponse>;
  GetSnapshot: Rpc<GetSnapshotRequest, GetSnapshotResponse>;
  ControllerExpandVolume: Rpc<ControllerExpandVolumeRequest, ControllerExpandVolumeResponse>;
  ControllerGetVolume: Rpc<ControllerGetVolumeRequest, ControllerGetVolumeResponse>;
  ControllerModifyVolume: Rpc<ControllerModifyVolumeRequest, ControllerModifyVolumeResponse>;
}

export interface NodeRpcs {
  NodeStageVolume: Rpc<NodeStageVolumeRequest, NodeStageVolumeResponse>;
  NodeUnstageVolume: Rpc<NodeUnstageVolumeRequest, NodeUnstageVolumeResponse>;
  NodePublishVolume: Rpc<NodePublishVolumeRequest, NodePublishVolumeResponse>;
  NodeUnpublishVolume: Rpc<NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse>;
  NodeGetVolumeStats: Rpc<NodeGetVolumeStatsRequest, NodeGetVolumeStatsResponse>;
  NodeExpandVolume: Rpc<NodeExpandVolumeRequest, NodeExpandVolumeResponse>;
  NodeGetCapabilities: Rpc<NodeGetCapabilitiesRequest, NodeGetCapabilitiesResponse>;
  NodeGetInfo: Rpc<NodeGetInfoRequest, NodeGetInfoResponse>;
}
