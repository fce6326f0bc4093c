// The CSI Controller service: validates each request (argument errors always come before existence
// checks, so a missing field is INVALID_ARGUMENT even for an unknown volume), translates it into a
// call on the configured backend, and builds the reply. Per-volume serialisation of concurrent calls
// is the server's operation guard plus the backend's locks.
import type { Config } from '../config.js';
import type {
  ControllerExpandVolumeRequest, ControllerExpandVolumeResponse, ControllerGetCapabilitiesResponse,
  ControllerGetVolumeRequest, ControllerGetVolumeResponse, ControllerPublishVolumeRequest,
  ControllerPublishVolumeResponse, ControllerRpcType, ControllerUnpublishVolumeRequest, CreateVolumeRequest,
  CreateVolumeResponse, DeleteVolumeRequest, GetCapacityRequest, GetCapacityResponse, ListVolumesRequest,
  ListVolumesResponse, StringMap, ValidateVolumeCapabilitiesRequest, ValidateVolumeCapabilitiesResponse, Volume,
  VolumeCapability,
} from '../csi/types.js';
import { CsiError, FailedPrecondition, InvalidArgument, NotFound, OutOfRange } from '../errors.js';
import { parseInitiatorName, parseVolumeId } from '../common/validate.js';
import type { Logger } from '../log.js';
import type { CommandRunner } from '../runner.js';
import type { ServiceImpl } from '../server/service.js';
import { BACKEND_PARAMETER, type VolumeBackend, type VolumeRecord } from './backend.js';
import { capabilitySummary, needsNodeExpansion, parseCapabilities, type CapabilitySummary } from './capabilities.js';
import { hasLocation, parseTargetSpec } from '../contract/volume-context.js';
import { parseRange, sizeForCreate, sizeForExpand } from './capacity.js';
import { backendOfVolumeId } from './names.js';
import { page } from './pagination.js';
import { parseContentSource, sizeForSource, sourceBytes, toContentSource } from './content-source.js';
import { snapshotHandlers } from './snapshots.js';
import { StaticBackend } from './static-backend.js';
import { TgtBackend } from './tgt/backend.js';

export const CONTROLLER_CAPABILITIES: readonly ControllerRpcType[] = [
  'CREATE_DELETE_VOLUME',
  'PUBLISH_UNPUBLISH_VOLUME',
  'LIST_VOLUMES',
  'GET_CAPACITY',
  'EXPAND_VOLUME',
  'LIST_VOLUMES_PUBLISHED_NODES',
  'PUBLISH_READONLY',
  'GET_VOLUME',
  'VOLUME_CONDITION',
];

/** Advertised only by a backend that makes snapshots and clones (VolumeBackend.snapshots). */
export const SNAPSHOT_CAPABILITIES: readonly ControllerRpcType[] = ['CREATE_DELETE_SNAPSHOT', 'LIST_SNAPSHOTS', 'GET_SNAPSHOT', 'CLONE_VOLUME'];

/** What this backend's controller advertises. */
export function controllerCapabilities(backend: VolumeBackend): ControllerRpcType[] {
  return [...CONTROLLER_CAPABILITIES, ...(backend.snapshots ? SNAPSHOT_CAPABILITIES : [])];
}

export interface ControllerDeps {
  cfg: Config;
  runner: CommandRunner;
  logger: Logger;
  /** default: the backend cfg.controller.backend names */
  backend?: VolumeBackend;
  /** tgt backend: how often tgtd is compared with the state (0 = only at start); default 30 s */
  reconcileIntervalMs?: number;
}

/** What the driver (and the metrics) use of the controller besides its CSI methods. */
export interface ControllerControl {
  /** Loads the backend's state and reconciles the storage system from it. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * The Identity Probe's check of the controller: null once started, whatever the storage system's
   * state. The livenessprobe sidecar fails /healthz when Probe fails, and kubelet then restarts the
   * container, which cannot bring tgtd (or a SAN, or an inventory file) back; so an unreachable
   * backend is reported by the RPCs that need it (UNAVAILABLE with the reason), one log line per
   * change, backendReachable() and the doctor, never by Probe. Each call also refreshes the backend
   * check in the background (one at a time), so backendReachable() stays current between RPCs.
   */
  probe(): Promise<string | null>;
  /** null when the backend's storage system is reachable and usable, else what is missing (the old Probe check). */
  checkBackend(): Promise<string | null>;
  /**
   * Whether the storage system answered the backend's last call (tgt: tgtd answered tgtadm) or, for a
   * backend that does not track its calls, its last check; undefined before either. For metrics.
   */
  backendReachable(): boolean | undefined;
}

export type ControllerService = ServiceImpl & ControllerControl;

export function createBackend(deps: ControllerDeps): VolumeBackend {
  if (deps.cfg.controller.backend === 'static') return new StaticBackend({ cfg: deps.cfg, logger: deps.logger });
  return new TgtBackend({
    cfg: deps.cfg, runner: deps.runner, logger: deps.logger,
    ...(deps.reconcileIntervalMs !== undefined ? { reconcileIntervalMs: deps.reconcileIntervalMs } : {}),
  });
}

function requireVolumeId(value: string): string {
  if (!value) throw new InvalidArgument('volume_id is required');
  return parseVolumeId(value);
}

function toVolume(rec: VolumeRecord): Volume {
  return { capacity_bytes: rec.capacityBytes, volume_id: rec.id, volume_context: rec.context, content_source: toContentSource(rec.contentSource), accessible_topology: [] };
}

export function createControllerService(deps: ControllerDeps): ControllerService {
  const backend = deps.backend ?? createBackend(deps);
  const cfg = deps.cfg;

  let lastCheckOk: boolean | undefined;
  let checking: Promise<string | null> | undefined;
  const checkBackend = (): Promise<string | null> => {
    checking ??= backend.probe()
      .catch((e: Error) => e.message)
      .then((problem) => { lastCheckOk = problem === null; return problem; })
      .finally(() => { checking = undefined; });
    return checking;
  };

  /** The volume if this controller's backend issued the id and still has it. */
  const find = (id: string): VolumeRecord | undefined => (backendOfVolumeId(id) === backend.kind ? backend.get(id) : undefined);
  const mustFind = (id: string): VolumeRecord => {
    const rec = find(id);
    if (!rec) throw new NotFound(`volume ${id} does not exist`);
    return rec;
  };

  const checkBackendParameter = (parameters: StringMap): void => {
    const wanted = parameters[BACKEND_PARAMETER];
    if (wanted !== undefined && wanted !== backend.kind) {
      throw new InvalidArgument(`parameter ${BACKEND_PARAMETER}: ${JSON.stringify(wanted)} does not match this controller's backend ${JSON.stringify(backend.kind)} (controller.backend in the driver config)`);
    }
  };

  /** A mount capability's fs_type and the fsType parameter must not contradict each other. */
  const checkFsType = (caps: CapabilitySummary[], parameters: StringMap): void => {
    const param = parameters.fsType;
    const other = caps.find((c) => c.fsType && param && c.fsType !== param);
    if (other) throw new InvalidArgument(`volume capability asks for fs_type ${other.fsType} but the fsType parameter is ${param}`);
  };

  const control: ControllerControl = {
    start: () => backend.start(),
    stop: () => backend.stop(),
    probe: async () => {
      void checkBackend();
      return null;
    },
    checkBackend,
    backendReachable: () => backend.reachable?.() ?? lastCheckOk,
  };

  // the CSI methods are served by name; the control methods are the driver's (the server serves only
  // the names in proto/csi.proto)
  const handlers: ServiceImpl = {
    CreateVolume: async (req: CreateVolumeRequest): Promise<CreateVolumeResponse> => {
      if (!req.name) throw new InvalidArgument('name is required');
      const capabilities = parseCapabilities(req.volume_capabilities);
      const source = parseContentSource(req.volume_content_source, backend);
      const range = parseRange(req.capacity_range);
      const parameters = req.parameters ?? {};
      const secrets = req.secrets ?? {};
      checkBackendParameter(parameters);
      checkFsType(capabilities, parameters);
      backend.checkParameters(parameters, secrets);
      // after every argument check: a missing source is NOT_FOUND, a range smaller than it OUT_OF_RANGE
      const capacityBytes = source ? sizeForSource(range, sourceBytes(source, backend)) : sizeForCreate(range, cfg.controller.defaultVolumeSizeBytes);
      const rec = await backend.create({
        name: req.name,
        capacityBytes,
        range,
        capabilities,
        parameters,
        secrets,
        ...(source ? { source } : {}),
      });
      return { volume: toVolume(rec) };
    },

    DeleteVolume: async (req: DeleteVolumeRequest): Promise<Record<string, never>> => {
      const id = requireVolumeId(req.volume_id);
      if (backendOfVolumeId(id) === backend.kind) await backend.delete(id);
      return {};
    },

    ControllerPublishVolume: async (req: ControllerPublishVolumeRequest): Promise<ControllerPublishVolumeResponse> => {
      const id = requireVolumeId(req.volume_id);
      if (!req.node_id) throw new InvalidArgument('node_id is required');
      const cap = capabilitySummary(req.volume_capability);
      if (!find(id)) {
        // A static PV (volumeAttributes naming a LUN on a SAN this controller does not manage) is attached
        // by external-attacher too: nothing to mask here, the SAN's ACLs apply; the node logs in from the
        // volume context. Without such a context the volume is unknown.
        if (hasLocation(req.volume_context ?? {})) {
          parseTargetSpec(req.volume_context, {}, cfg.node.defaultIface);
          return { publish_context: {} };
        }
        mustFind(id);
      }
      // published only as it was created: a filesystem volume created single-node must not be
      // attached to a second node, nor read as raw block
      const problem = unsupported(mustFind(id), [req.volume_capability!], {});
      if (problem) throw new FailedPrecondition(problem);
      let initiator: string;
      try {
        initiator = parseInitiatorName(req.node_id);
      } catch (e) {
        // node ids of this driver are the nodes' initiator names (NodeGetInfo): anything else is no node of ours
        throw new NotFound(`node ${JSON.stringify(req.node_id.slice(0, 256))} is not known: node ids of this driver are iSCSI initiator names (${(e as Error).message})`);
      }
      const publishContext = await backend.publish(id, {
        nodeId: req.node_id, initiator, readonly: req.readonly, mode: cap.mode, secrets: req.secrets ?? {},
      });
      return { publish_context: publishContext };
    },

    ControllerUnpublishVolume: async (req: ControllerUnpublishVolumeRequest): Promise<Record<string, never>> => {
      const id = requireVolumeId(req.volume_id);
      // an empty node id means "from every node" (CSI spec)
      if (find(id)) await backend.unpublish(id, req.node_id || undefined);
      return {};
    },

    ValidateVolumeCapabilities: async (req: ValidateVolumeCapabilitiesRequest): Promise<ValidateVolumeCapabilitiesResponse> => {
      const id = requireVolumeId(req.volume_id);
      if (!req.volume_capabilities || req.volume_capabilities.length === 0) throw new InvalidArgument('volume_capabilities is required');
      const rec = mustFind(id);
      const problem = unsupported(rec, req.volume_capabilities, req.parameters ?? {});
      if (problem) return { confirmed: null, message: problem };
      return {
        confirmed: {
          volume_context: req.volume_context ?? {},
          volume_capabilities: req.volume_capabilities,
          parameters: req.parameters ?? {},
          mutable_parameters: req.mutable_parameters ?? {},
        },
        message: '',
      };
    },

    ListVolumes: async (req: ListVolumesRequest): Promise<ListVolumesResponse> => {
      const { items, nextToken } = page(backend.list(), req.starting_token ?? '', req.max_entries ?? 0);
      return {
        entries: items.map((rec) => ({
          volume: toVolume(rec),
          status: { published_node_ids: Object.keys(rec.published), volume_condition: rec.condition },
        })),
        next_token: nextToken,
      };
    },

    GetCapacity: async (req: GetCapacityRequest): Promise<GetCapacityResponse> => {
      const parameters = req.parameters ?? {};
      checkBackendParameter(parameters);
      if (req.volume_capabilities?.length) {
        try {
          parseCapabilities(req.volume_capabilities);
        } catch (e) {
          // capabilities the driver cannot provide: no capacity for them (CSI spec)
          if (e instanceof InvalidArgument) return { available_capacity: 0, maximum_volume_size: { value: 0 }, minimum_volume_size: null };
          throw e;
        }
      }
      const cap = await backend.capacity(parameters);
      return {
        available_capacity: cap.availableBytes,
        maximum_volume_size: cap.maximumVolumeBytes !== undefined ? { value: cap.maximumVolumeBytes } : null,
        minimum_volume_size: null,
      };
    },

    ControllerGetCapabilities: async (): Promise<ControllerGetCapabilitiesResponse> => ({
      capabilities: controllerCapabilities(backend).map((type) => ({ type: 'rpc' as const, rpc: { type } })),
    }),

    ControllerGetVolume: async (req: ControllerGetVolumeRequest): Promise<ControllerGetVolumeResponse> => {
      const id = requireVolumeId(req.volume_id);
      const rec = mustFind(id);
      const condition = await backend.condition(id);
      return { volume: toVolume(rec), status: { published_node_ids: Object.keys(rec.published), volume_condition: condition } };
    },

    ControllerExpandVolume: async (req: ControllerExpandVolumeRequest): Promise<ControllerExpandVolumeResponse> => {
      const id = requireVolumeId(req.volume_id);
      if (!req.capacity_range) throw new InvalidArgument('capacity_range is required');
      const range = parseRange(req.capacity_range);
      const size = sizeForExpand(range);
      const cap = req.volume_capability ? capabilitySummary(req.volume_capability) : undefined;
      const current = mustFind(id).capacityBytes;
      // before the backend touches the target: a volume larger than the limit cannot shrink to it
      if (range.limit > 0 && current > range.limit) {
        throw new OutOfRange(`volume ${id} already has ${current} bytes, more than limit_bytes ${range.limit}; volumes cannot shrink`);
      }
      const rec = await backend.expand(id, size);
      if (range.limit > 0 && rec.capacityBytes > range.limit) throw new OutOfRange(`volume ${id} grew to ${rec.capacityBytes} bytes, more than limit_bytes ${range.limit}`);
      return { capacity_bytes: rec.capacityBytes, node_expansion_required: needsNodeExpansion(cap ? [cap] : rec.capabilities) };
    },

    ...snapshotHandlers(backend),
  };
  return Object.assign(handlers, control);
}

/** Why a volume cannot be used with these capabilities/parameters, or undefined when it can. */
function unsupported(rec: VolumeRecord, caps: VolumeCapability[], parameters: StringMap): string | undefined {
  let parsed: CapabilitySummary[];
  try {
    parsed = parseCapabilities(caps);
  } catch (e) {
    if (e instanceof CsiError) return e.message;
    throw e;
  }
  const types = new Set(rec.capabilities.map((c) => c.accessType));
  const wrongType = parsed.find((c) => !types.has(c.accessType));
  if (wrongType) return `volume ${rec.id} was created for access type ${[...types].join('/')}, not ${wrongType.accessType}`;
  const modes = new Set(rec.capabilities.map((c) => c.mode));
  const wrongMode = parsed.find((c) => !modes.has(c.mode));
  if (wrongMode) return `volume ${rec.id} was created for access mode ${[...modes].join('/')}, not ${wrongMode.mode}`;
  const fsType = rec.context.fsType;
  const wrongFs = parsed.find((c) => c.fsType && fsType && c.fsType !== fsType);
  if (wrongFs) return `volume ${rec.id} has fsType ${fsType}, not ${wrongFs.fsType}`;
  for (const [k, v] of Object.entries(parameters)) {
    if (rec.parameters[k] !== v) return `volume ${rec.id} was created with parameter ${k}=${JSON.stringify(rec.parameters[k] ?? null)}, not ${JSON.stringify(v)}`;
  }
  return undefined;
}
