// NodeStageVolume: validate → idempotency check → record the attach before it starts (so a crash
// mid-stage can be cleaned up) → attach (iface, lock, login/scan, device, multipath) → format and mount
// (filesystem) or nothing (block) → record the result. On failure, undo what this call did.
import { AlreadyExists } from '../errors.js';
import type { NodeStageVolumeRequest, NodeStageVolumeResponse } from '../csi/types.js';
import type { CallContext } from '../server/service.js';
import { connectPortals, prepareIface, stableDevicePath, waitForPaths } from '../flows/attach.js';
import { detach } from '../flows/detach.js';
import { formatAndMount } from '../flows/format-mount.js';
import type { NodeHost } from '../flows/host.js';
import { clonedIfaceName, formatPortal, parseFsType } from '../common/validate.js';
import type { VolumeRecord } from '../node-host/metadata.js';
import { unmountIfMounted } from '../node-host/target-paths.js';
import { resolvePortals } from '../node-host/resolve.js';
import { CONTEXT_KEYS, parseTargetSpec } from '../contract/volume-context.js';
import { parsePath, parseVolumeIdField, volumeAccess, type StageSpec } from './request.js';

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
  const log = ctx.logger;
  const existing = await host.metadata.load(spec.volumeId);
  if (existing?.phase === 'staged') {
    const mismatch = sameStage(existing, spec);
    if (mismatch) throw new AlreadyExists(`volume ${spec.volumeId} is already staged with other arguments: ${mismatch}`);
    if (await stillStaged(host, existing)) return {};
    log.warn({ stagingPath: spec.stagingPath }, 'recorded as staged but the mount or device is gone: staging again');
  }

  if (existing?.phase === 'detaching') {
    // an unstage that failed half way (its logout timed out): finish it from its own record first, so
    // a session to portals this request no longer names is not left behind
    await detach(host, existing, log).catch((e: Error) => log.warn({ err: e.message }, 'finishing the earlier unstage failed; staging anyway'));
  }
  // host names become addresses before anything is recorded: node records, sysfs and by-path use those
  const target = { ...spec.target, portals: await resolvePortals(spec.target.portals, host.cfg.timeouts.portalResolveMs) };
  const cloned = target.initiatorName ? clonedIfaceName(target.iface, spec.volumeId) : undefined;
  const record: VolumeRecord = {
    volumeId: spec.volumeId,
    phase: 'attaching',
    portals: target.portals.map(formatPortal),
    iqn: target.iqn,
    lun: target.lun,
    iface: cloned ?? target.iface,
    ...(cloned ? { clonedIface: cloned } : {}),
    ...(target.initiatorName ? { initiatorName: target.initiatorName } : {}),
    stagingPath: spec.stagingPath,
    accessType: spec.access.kind,
    ...(spec.access.kind === 'mount' ? { fsType: spec.access.fsType, mountFlags: spec.access.mountFlags } : {}),
    readonly: spec.readonly,
    accessMode: spec.accessMode,
    devices: [],
    // a volume staged again (its mount or device was gone) is still published where it was
    publishedAt: existing?.publishedAt ?? [],
  };
  // Saved before the first login, so the target counts as in use and a crash leaves enough to clean up.
  await host.metadata.save(record);
  try {
    const { iface, transport } = await prepareIface(host, target, cloned, log);
    const outcomes = await connectPortals(host, target, iface, log);
    const attached = await waitForPaths(host, target, outcomes, transport, log);
    if (spec.access.kind === 'mount') {
      await formatAndMount(host, attached.devicePath, spec.stagingPath, spec.access.fsType, spec.access.mountFlags, spec.readonly, log);
    }
    const devicePath = await stableDevicePath(host, target, attached);
    await host.metadata.save({
      ...record,
      phase: 'staged',
      devicePath,
      devices: attached.paths.map((p) => p.device),
      ...(attached.multipath ? { multipath: attached.multipath } : {}),
      stagedAt: new Date().toISOString(),
    });
    log.info({ device: devicePath, paths: attached.paths.length, deadPortals: attached.deadPortals.length }, 'staged');
    return {};
  } catch (e) {
    await undoStage(host, record, log);
    throw e;
  }
}

/** A failed stage leaves nothing it made: mount, devices, its session (if no one else uses it), clone, record. */
async function undoStage(host: NodeHost, record: VolumeRecord, log: CallContext['logger']): Promise<void> {
  try {
    await unmountIfMounted(host.mounts, record.stagingPath);
    await detach(host, record, log);
    await host.metadata.remove(record.volumeId);
  } catch (e) {
    // The record stays: NodeUnstage (or the next stage) finishes the cleanup from it.
    log.warn({ err: (e as Error).message }, 'cleanup after a failed stage is incomplete; the volume record is kept for unstage');
  }
}

async function stillStaged(host: NodeHost, record: VolumeRecord): Promise<boolean> {
  const devices = await host.sysfs.devicesForIqnLun(record.iqn, record.lun);
  if (devices.length === 0) return false;
  if (record.accessType === 'block') return true;
  return host.mounts.isMountPoint(record.stagingPath);
}
