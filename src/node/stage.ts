// NodeStageVolume: validate → idempotency check against the volume's record → the stage flow (record,
// attach, format/mount, record; undone on failure).
import { AlreadyExists } from '../errors.js';
import type { NodeStageVolumeRequest, NodeStageVolumeResponse } from '../csi/types.js';
import type { CallContext } from '../server/service.js';
import type { NodeHost } from '../flows/ports.js';
import { stage, stillStaged, type StageSpec } from '../flows/stage.js';
import { parseFsType } from '../common/validate.js';
import type { VolumeRecord } from '../node-host/metadata.js';
import { CONTEXT_KEYS, parseTargetSpec } from '../contract/volume-context.js';
import { parsePath, parseVolumeIdField, volumeAccess } from './request.js';

export function parseStageRequest(req: NodeStageVolumeRequest, host: NodeHost): StageSpec {
  const volumeId = parseVolumeIdField(req.volume_id);
  const stagingPath = parsePath(req.staging_target_path, 'staging_target_path');
  const context = { ...req.volume_context, ...req.publish_context };
  // fsType: the capability's, else the volume's own (StorageClass / PV attribute), else the configured default
  const fallbackFs = parseFsType(context[CONTEXT_KEYS.fsType], host.cfg.node.defaultFsType);
  const { access, accessMode, readonly } = volumeAccess(req.volume_capability, fallbackFs);
  const target = parseTargetSpec(context, req.secrets ?? {}, host.cfg.node.defaultIface);
  return { volumeId, stagingPath, target, access, accessMode, readonly };
}

/** The parts of a stage request that must match for a repeated call to be "the same". */
function sameStage(record: VolumeRecord, spec: StageSpec): string | null {
  if (record.stagingPath !== spec.stagingPath) return `it is staged at ${record.stagingPath}`;
  if (record.accessType !== spec.access.kind) return `it is staged as ${record.accessType}`;
  if (spec.access.kind === 'mount' && record.fsType !== spec.access.fsType) return `it is staged with ${record.fsType}`;
  if (record.readonly !== spec.readonly) return `it is staged ${record.readonly ? 'read-only' : 'read-write'}`;
  if (record.iqn !== spec.target.iqn || record.lun !== spec.target.lun) return `it is staged from ${record.iqn} LUN ${record.lun}`;
  return null;
}

export async function stageVolume(host: NodeHost, spec: StageSpec, ctx: CallContext): Promise<NodeStageVolumeResponse> {
  const existing = await host.metadata.load(spec.volumeId);
  if (existing?.phase === 'staged') {
    const mismatch = sameStage(existing, spec);
    if (mismatch) throw new AlreadyExists(`volume ${spec.volumeId} is already staged with other arguments: ${mismatch}`);
    if (await stillStaged(host, existing)) return {};
    ctx.logger.warn({ stagingPath: spec.stagingPath }, 'recorded as staged but the mount or device is gone: staging again');
  }
  await stage(host, spec, existing, ctx.logger);
  return {};
}
