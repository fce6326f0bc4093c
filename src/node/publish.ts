// NodePublishVolume / NodeUnpublishVolume: bind the staged volume into the pod's target path (a
// directory bind of the staging mount for filesystems, a file bind of the device node for block).
import { AlreadyExists, FailedPrecondition, InvalidArgument } from '../errors.js';
import type { NodePublishVolumeRequest, NodePublishVolumeResponse, NodeUnpublishVolumeRequest, NodeUnpublishVolumeResponse } from '../csi/types.js';
import type { CallContext } from '../server/service.js';
import type { NodeHost } from '../flows/ports.js';
import { lunMounts, unmountIfMounted } from '../flows/format-mount.js';
import { checkStagedDevice } from '../flows/identity.js';
import { parseFsType } from '../common/validate.js';
import { CONTEXT_KEYS } from '../contract/volume-context.js';
import { parsePath, parseVolumeIdField, volumeAccess } from './request.js';

export async function publishVolume(host: NodeHost, req: NodePublishVolumeRequest, ctx: CallContext): Promise<NodePublishVolumeResponse> {
  const volumeId = parseVolumeIdField(req.volume_id);
  const targetPath = parsePath(req.target_path, 'target_path');
  const fallbackFs = parseFsType(req.volume_context?.[CONTEXT_KEYS.fsType], host.cfg.node.defaultFsType);
  const { access, accessMode } = volumeAccess(req.volume_capability, fallbackFs);
  if (!req.staging_target_path) throw new InvalidArgument('staging_target_path is required (the driver stages volumes)');
  const stagingPath = parsePath(req.staging_target_path, 'staging_target_path');
  // a volume staged read-only (a reader-only access mode) is published read-only whatever the flag says
  let readonly = req.readonly;

  const record = await host.metadata.load(volumeId);
  if (!record || record.phase !== 'staged') throw new FailedPrecondition(`volume ${volumeId} is not staged on this node; NodeStageVolume first`);
  if (record.stagingPath !== stagingPath) throw new InvalidArgument(`volume ${volumeId} is staged at ${record.stagingPath}, not ${stagingPath}`);
  if (record.accessType !== access.kind) throw new InvalidArgument(`volume ${volumeId} is staged as ${record.accessType}, not ${access.kind}`);
  readonly ||= record.readonly;

  const mounted = await host.mounts.mountsAt(targetPath);
  if (mounted.length > 0) {
    const top = mounted[mounted.length - 1]!;
    const isReadonly = top.mountOptions.includes('ro');
    const same = record.publishedAt.includes(targetPath) && isReadonly === readonly;
    if (same) return {};
    // a publish killed after its bind mount, before its record: the mount there is this volume's own
    // filesystem (found by what is mounted), so the step is done
    if (isReadonly === readonly && access.kind === 'mount' && !record.publishedAt.includes(targetPath)
      && (await lunMounts(host, record.iqn, record.lun, record.devicePath ? [record.devicePath] : [])).some((m) => m.mountId === top.mountId)) {
      await host.metadata.save({ ...record, publishedAt: [...record.publishedAt, targetPath] });
      ctx.logger.info({ targetPath }, 'the volume is already bound at the target path (an earlier, interrupted publish): recorded');
      return {};
    }
    throw new AlreadyExists(`${targetPath} is already a mount point with other arguments`);
  }
  const others = record.publishedAt.filter((t) => t !== targetPath);
  if (accessMode === 'SINGLE_NODE_SINGLE_WRITER' && others.length > 0) {
    throw new FailedPrecondition(`volume ${volumeId} is SINGLE_NODE_SINGLE_WRITER and already published at ${others.join(', ')}`);
  }

  if (access.kind === 'block') {
    if (!record.devicePath) throw new FailedPrecondition(`volume ${volumeId} has no recorded device`);
    await checkStagedDevice(host, record);
    await host.paths.ensureFile(targetPath);
    await host.mounts.bindMount(record.devicePath, targetPath, { readonly, options: [] });
  } else {
    await host.paths.ensureDir(targetPath);
    await host.mounts.bindMount(stagingPath, targetPath, { readonly, options: access.mountFlags });
  }
  await host.metadata.save({ ...record, publishedAt: [...others, targetPath] });
  ctx.logger.info({ targetPath, readonly, kind: access.kind }, 'published');
  return {};
}

export async function unpublishVolume(host: NodeHost, req: NodeUnpublishVolumeRequest, ctx: CallContext): Promise<NodeUnpublishVolumeResponse> {
  const volumeId = parseVolumeIdField(req.volume_id);
  const targetPath = parsePath(req.target_path, 'target_path');
  await unmountIfMounted(host.mounts, targetPath);
  await host.paths.removeTarget(targetPath);
  const record = await host.metadata.load(volumeId);
  if (record?.publishedAt.includes(targetPath)) {
    await host.metadata.save({ ...record, publishedAt: record.publishedAt.filter((t) => t !== targetPath) });
  }
  ctx.logger.info({ targetPath }, 'unpublished');
  return {};
}

