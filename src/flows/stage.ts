// Staging a volume on this node and taking it down again, once the request is valid and not already
// done: finish an unstage left half way → record the attach before it starts (so a crash mid-stage can
// be cleaned up) → attach (iface, lock, login/scan, device, multipath) → format and mount (filesystem)
// or nothing (block) → record the result. On failure, undo what this call did.
import type { AccessModeMode } from '../csi/types.js';
import type { Logger } from '../log.js';
import type { FsType } from '../common/validate.js';
import { formatPortal } from '../common/validate.js';
import type { TargetSpec } from '../contract/volume-context.js';
import type { VolumeRecord } from '../node-host/metadata.js';
import { attach, type AttachPlan, type Attached } from './attach.js';
import { detach } from './detach.js';
import { FailedPrecondition } from '../errors.js';
import { checkStagingPath, formatAndMount, lunMounts, unmountIfMounted } from './format-mount.js';
import type { NodeHost } from './ports.js';
import { StepTimes } from '../common/step-times.js';

export type VolumeAccess =
  | { kind: 'mount'; fsType: FsType; mountFlags: string[] }
  | { kind: 'block' };

/** A validated NodeStageVolume request. */
export interface StageSpec {
  volumeId: string;
  stagingPath: string;
  target: TargetSpec;
  access: VolumeAccess;
  accessMode: AccessModeMode;
  readonly: boolean;
}

/** `existing`: the volume's record found before the call (a stage whose mount or device is gone, or a half-done unstage). */
export async function stage(host: NodeHost, spec: StageSpec, existing: VolumeRecord | null, log: Logger): Promise<void> {
  const steps = new StepTimes();
  await steps.time('check', () => checkStagingPath(host, spec.stagingPath, spec.access.kind, spec.target.iqn, spec.target.lun));
  if (existing?.phase === 'detaching') {
    // an unstage that failed half way (its logout timed out): finish it from its own record first, so
    // a session to portals this request no longer names is not left behind
    await detach(host, existing, log, steps).catch((e: Error) => log.warn({ err: e.message }, 'finishing the earlier unstage failed; staging anyway'));
  }
  let record: VolumeRecord | undefined;
  try {
    const attached = await attach(host, spec.target, spec.volumeId, log, async (plan) => {
      const attaching = attachingRecord(spec, plan, existing);
      // Saved before the first login, so the target counts as in use and a crash leaves enough to clean up.
      await host.metadata.save(attaching);
      record = attaching;
    }, steps);
    if (spec.access.kind === 'mount') {
      await formatAndMount(host, attached.devicePath, spec.stagingPath, spec.access.fsType, spec.access.mountFlags, spec.readonly, log, steps);
    }
    const devicePath = await attached.stableDevicePath();
    await steps.time('record', () => host.metadata.save(stagedRecord(record!, attached, devicePath)));
    log.info({ device: devicePath, paths: attached.paths.length, deadPortals: attached.deadPortals.length, steps: steps.byStep() }, 'staged');
  } catch (e) {
    // nothing to undo before the record is saved: the host is not changed before that
    if (record) await undoStage(host, record, log, steps);
    throw e;
  }
}

/** Whether a volume recorded as staged still is: its devices are there and, for a filesystem, its mount. */
export async function stillStaged(host: NodeHost, record: VolumeRecord): Promise<boolean> {
  const devices = await host.sysfs.devicesForIqnLun(record.iqn, record.lun);
  if (devices.length === 0) return false;
  if (record.accessType === 'block') return true;
  return host.mounts.isMountPoint(record.stagingPath);
}

/**
 * A volume taken down from its record: refused while it is published; its staging path (and
 * `alsoUnmount`, the path a request named) unmounted; refused while its filesystem is still mounted
 * anywhere else; then its devices, session (if no one else uses it), clone, and its record.
 */
export async function unstage(host: NodeHost, record: VolumeRecord, log: Logger, alsoUnmount: string[] = []): Promise<void> {
  const steps = new StepTimes();
  await steps.time('check', () => unmountAll(host, record, alsoUnmount));
  await detach(host, record, log, steps);
  await steps.time('record', () => host.metadata.remove(record.volumeId));
  log.info({ iqn: record.iqn, lun: record.lun, steps: steps.byStep() }, 'unstaged');
}

/** Refused while published; the staging path and `alsoUnmount` unmounted; refused under a foreign mount. */
async function unmountAll(host: NodeHost, record: VolumeRecord, alsoUnmount: string[]): Promise<void> {
  await refuseWhilePublished(host, record);
  for (const path of new Set([...alsoUnmount, record.stagingPath])) await unmountIfMounted(host.mounts, path);
  await refuseUnderForeignMounts(host, record);
}

async function refuseWhilePublished(host: NodeHost, record: VolumeRecord): Promise<void> {
  const stillMounted = [];
  for (const t of record.publishedAt) if (await host.mounts.isMountPoint(t)) stillMounted.push(t);
  if (stillMounted.length > 0) throw new FailedPrecondition(`volume ${record.volumeId} is still published at ${stillMounted.join(', ')}; unpublish it first`);
}

/**
 * The devices are deleted next: never under a mount of their filesystem the unmounts did not remove
 * (made by hand, or through a symbolic link by an older driver).
 */
async function refuseUnderForeignMounts(host: NodeHost, record: VolumeRecord): Promise<void> {
  const leftover = await lunMounts(host, record.iqn, record.lun, record.devicePath ? [record.devicePath] : []);
  if (leftover.length > 0) {
    throw new FailedPrecondition(`volume ${record.volumeId}'s filesystem is still mounted at ${leftover.map((m) => m.mountPoint).join(', ')}, which is not its staging path; its devices are not deleted under a mount: unmount it, then unstage again`);
  }
}

function attachingRecord(spec: StageSpec, plan: AttachPlan, existing: VolumeRecord | null): VolumeRecord {
  return {
    volumeId: spec.volumeId,
    phase: 'attaching',
    portals: plan.target.portals.map(formatPortal),
    iqn: plan.target.iqn,
    lun: plan.target.lun,
    iface: plan.iface,
    ...(plan.clonedIface ? { clonedIface: plan.clonedIface } : {}),
    ...(plan.target.initiatorName ? { initiatorName: plan.target.initiatorName } : {}),
    ...(plan.target.sessionChap ? { sessionChap: true } : {}),
    stagingPath: spec.stagingPath,
    accessType: spec.access.kind,
    ...(spec.access.kind === 'mount' ? { fsType: spec.access.fsType, mountFlags: spec.access.mountFlags } : {}),
    readonly: spec.readonly,
    accessMode: spec.accessMode,
    devices: [],
    // a volume staged again (its mount or device was gone) is still published where it was
    publishedAt: existing?.publishedAt ?? [],
  };
}

function stagedRecord(attaching: VolumeRecord, attached: Attached, devicePath: string): VolumeRecord {
  return {
    ...attaching,
    phase: 'staged',
    devicePath,
    devices: attached.paths.map((p) => p.device),
    ...(attached.multipath ? { multipath: attached.multipath } : {}),
    ...(attached.wwid ? { wwid: attached.wwid } : {}),
    stagedAt: new Date().toISOString(),
  };
}

/** A failed stage leaves nothing it made: mount, devices, its session (if no one else uses it), clone, record. */
async function undoStage(host: NodeHost, record: VolumeRecord, log: Logger, steps: StepTimes): Promise<void> {
  try {
    await unmountIfMounted(host.mounts, record.stagingPath);
    await detach(host, record, log, steps);
    await host.metadata.remove(record.volumeId);
  } catch (e) {
    // The record stays: NodeUnstage (or the next stage) finishes the cleanup from it.
    log.warn({ err: (e as Error).message }, 'cleanup after a failed stage is incomplete; the volume record is kept for unstage');
  }
}
