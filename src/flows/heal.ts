// One pass of the node healer over every volume this node has a record of, as one-line steps:
// a staged volume → each recorded portal checked: no session (logged out behind the driver's back, or
// the portal was down at stage) → logged in again under the target lock and the LUN scanned; the session
// up but the LUN without a device there → the LUN scanned; the new path's WWID checked and, for
// multipath, its joining the volume's map; a FAILED session, a filesystem read-only, stale or on a
// removed device → reported. A record left `attaching`/`detaching` with no call on it for the grace
// period → taken down as an unstage would. Then the orphans (orphans.ts). Nothing here throws: every
// finding and every repair, done or failed, is a typed event the caller logs and counts.
import { basename } from 'node:path';
import { FailedPrecondition, toCsiError } from '../errors.js';
import type { Logger } from '../log.js';
import { orThrow, type NodeRef } from '../node-host/iscsiadm.js';
import { ISCSI_EXIT } from '../node-host/iscsi-exit.js';
import { countedLogin, createNodeRecord } from './attach.js';
import type { VolumeRecord } from '../node-host/metadata.js';
import { formatPortal, parsePortal } from '../common/validate.js';
import { lunMounts } from './format-mount.js';
import type { HealMemory } from './heal-memory.js';
import { reapOrphans } from './orphans.js';
import { metricsOf, type NodeHost } from './ports.js';
import { unstage } from './stage.js';

export type HealAction =
  /** a recorded portal had no session: logged in again and the LUN scanned */
  | 'session-login'
  /** the session was up but the LUN had no device on it: scanned */
  | 'lun-rescan'
  /** the device a repair brought up is another logical unit: deleted */
  | 'wrong-device'
  /** a restored path did not join the volume's multipath map */
  | 'path-not-in-map'
  /** a session in FAILED state (iscsid is recovering it): reported */
  | 'session-failed'
  /** the staging mount is gone, stale, read-only after I/O errors, or on a device that was removed: reported */
  | 'filesystem-problem'
  /** a record left `attaching` or `detaching` (a stage or unstage that never finished): taken down */
  | 'half-done-finished'
  /** a device on a session of this driver that no record covers: deleted */
  | 'orphan-device'
  /** a session of this driver no record uses: logged out */
  | 'orphan-session'
  /** the mark of a session that is gone, which no record uses: cleared with its node record */
  | 'orphan-mark'
  /** record files that cannot be read: orphans are not reaped while a record may be missing */
  | 'orphans-suspended'
  /** the check of a volume could not be made */
  | 'check-failed';

export interface HealEvent {
  action: HealAction;
  /** `done`: repaired; `failed`: tried and failed (retried later); `kept`: left alone on purpose; `reported`: nothing to repair here; `ended`: a reported problem is gone */
  outcome: 'done' | 'failed' | 'kept' | 'reported' | 'ended';
  reason: string;
  iqn?: string;
  volumeId?: string;
  portal?: string;
  device?: string;
}

/** What a pass needs besides the host. */
export interface HealContext {
  memory: HealMemory;
  /** takes a volume for the healer unless a CSI call holds it (then the volume is skipped this pass); the release is idempotent */
  takeVolume(volumeId: string): (() => void) | null;
  /** a record half-done or an orphan seen this long is acted on */
  graceMs: number;
  reapOrphans: boolean;
  log: Logger;
}

export async function healPass(host: NodeHost, ctx: HealContext): Promise<HealEvent[]> {
  ctx.memory.beginPass();
  const events: HealEvent[] = [];
  try {
    const survey = await host.metadata.survey();
    for (const listed of survey.records) events.push(...await healVolume(host, listed, ctx));
    if (ctx.reapOrphans) events.push(...await reapOrphans(host, survey, ctx));
  } finally {
    for (const report of ctx.memory.endPass()) events.push({ ...report, outcome: 'ended', reason: `no longer seen (was: ${report.reason})` });
  }
  return events;
}

/**
 * A look without the volume's guard first (a healthy volume is never held from a CSI call); then,
 * when there is something to do or report, under the guard from its record read again (a call may have
 * changed it since the survey).
 */
async function healVolume(host: NodeHost, listed: VolumeRecord, ctx: HealContext): Promise<HealEvent[]> {
  try {
    if (!(await needsWork(host, listed, ctx))) return [];
    const release = ctx.takeVolume(listed.volumeId);
    if (!release) {
      ctx.memory.keepReported(`${listed.volumeId} `);
      return [];
    }
    try {
      const record = await host.metadata.load(listed.volumeId);
      if (!record) return [];
      return record.phase === 'staged' ? await healStaged(host, record, ctx) : await finishHalfDone(host, record, ctx);
    } finally {
      release();
    }
  } catch (e) {
    return [{ action: 'check-failed', outcome: 'failed', reason: toCsiError(e).message, volumeId: listed.volumeId, iqn: listed.iqn }];
  }
}

async function needsWork(host: NodeHost, record: VolumeRecord, ctx: HealContext): Promise<boolean> {
  if (record.phase !== 'staged') return ctx.memory.seenForMs(halfDoneKey(record)) >= ctx.graceMs;
  if ((await pathFindings(host, record)).length > 0) return true;
  return record.accessType === 'mount' && (await filesystemProblem(host, record)) !== null;
}

/** A recorded portal whose path is not up: its session FAILED, no session at all, or no device for the LUN on it. */
interface PathFinding {
  portal: string;
  problem: 'session-failed' | 'no-session' | 'no-device';
  sessionState?: string | null;
}

async function pathFindings(host: NodeHost, record: VolumeRecord): Promise<PathFinding[]> {
  const paths = await host.sysfs.volumePaths(record.iqn, record.lun, record.iface);
  const findings: PathFinding[] = [];
  for (const portal of record.portals) {
    const session = paths.sessionAt(portal);
    if (!session) findings.push({ portal, problem: 'no-session' });
    else if (session.state !== 'LOGGED_IN') findings.push({ portal, problem: 'session-failed', sessionState: session.state });
    else if (!session.luns.some((l) => l.lun === record.lun && l.devices.length > 0)) findings.push({ portal, problem: 'no-device' });
  }
  return findings;
}

/** Each path that is not up: reported (FAILED) or restored (backing off after a failure); then the filesystem. */
async function healStaged(host: NodeHost, record: VolumeRecord, ctx: HealContext): Promise<HealEvent[]> {
  const events: HealEvent[] = [];
  let restored = false;
  for (const f of await pathFindings(host, record)) {
    const at = { volumeId: record.volumeId, iqn: record.iqn, portal: f.portal };
    if (f.problem === 'session-failed') {
      events.push(...ctx.memory.report(`${record.volumeId} session ${f.portal}`, {
        action: 'session-failed', outcome: 'reported', ...at,
        reason: `the session is ${f.sessionState ?? 'in an unknown state'}: iscsid is recovering it (logging out would delete the devices under the volume's filesystem)`,
      }));
      continue;
    }
    const key = `${record.volumeId} path ${f.portal}`;
    if (!ctx.memory.mayTry(key)) continue;
    const event = await restorePath(host, record, f.portal, f.problem === 'no-device' ? 'scan' : 'login', ctx);
    if (event.outcome === 'done') ctx.memory.succeeded(key);
    else ctx.memory.failed(key);
    restored ||= event.outcome === 'done';
    events.push(event);
  }
  if (restored) await recordDevices(host, record);
  if (record.accessType === 'mount') {
    const problem = await filesystemProblem(host, record);
    if (problem) events.push(...ctx.memory.report(`${record.volumeId} filesystem`, { action: 'filesystem-problem', outcome: 'reported', volumeId: record.volumeId, iqn: record.iqn, reason: problem }));
  }
  return events;
}

/**
 * Logs in to the portal (when it has no session) with its node record, which keeps the stage's
 * settings and CHAP, then scans the volume's LUN there; all under the target lock. Outside it: waits
 * for the device, checks its WWID, and for a multipath volume that multipathd takes it into the map.
 */
async function restorePath(host: NodeHost, record: VolumeRecord, portal: string, how: 'login' | 'scan', ctx: HealContext): Promise<HealEvent> {
  const action = how === 'login' ? 'session-login' : 'lun-rescan';
  const why = how === 'login'
    ? `no session to ${portal} (logged out behind the driver's back, lost, or the portal was down at stage)`
    : `the session to ${portal} is up but LUN ${record.lun} has no device on it`;
  const at = { volumeId: record.volumeId, iqn: record.iqn, portal };
  const node = { iqn: record.iqn, portal: parsePortal(portal), iface: record.iface };
  try {
    const scsiHost = await host.targetLocks.withLock(record.iqn, async () => {
      let h = (await host.sysfs.portalHostMap(record.iqn, record.iface)).get(portal);
      if (h === undefined) {
        await host.sessionMarks.mark({ iqn: record.iqn, portal, iface: record.iface });
        await loginWithRecord(host, record, node);
        h = (await host.sysfs.portalHostMap(record.iqn, record.iface)).get(portal);
        if (h === undefined) throw new Error(`logged in to ${portal} but the session does not appear in sysfs`);
      }
      await host.sysfs.scanLun(h, record.lun);
      return h;
    });
    const waits = { deadlineMs: host.cfg.timeouts.deviceWaitMs, pollMs: host.cfg.timeouts.devicePollMs };
    const found = await host.devices.waitForLunDevice(scsiHost, record.lun, { portal: node.portal, iqn: record.iqn, transport: record.transport ?? 'tcp' }, waits);
    metricsOf(host).deviceWait(found.ok ? 'found' : found.reason, found.waitedMs / 1000);
    if (!found.ok) return { action, outcome: 'failed', ...at, reason: `${why}; LUN ${record.lun} got no device within ${waits.deadlineMs} ms` };
    const device = basename(found.device);
    const wwid = await host.sysfs.deviceWwid(device);
    if (record.wwid && wwid !== record.wwid) {
      await host.sysfs.deleteDevice(device);
      return { action: 'wrong-device', outcome: 'done', ...at, device, reason: `${device} on ${portal} is WWID ${wwid ?? '(none readable)'}, not the volume's ${record.wwid}: deleted, nothing written to it` };
    }
    if (record.multipath) {
      const joined = await host.devices.waitForMultipathHolder(device, { deadlineMs: host.cfg.timeouts.multipathWaitMs, pollMs: host.cfg.timeouts.devicePollMs });
      if (!joined.ok || joined.holder.dm !== record.multipath.dm) {
        return { action: 'path-not-in-map', outcome: 'failed', ...at, device, reason: `${why}; ${device} came up but multipathd did not add it to ${record.multipath.dm}${joined.ok ? ` (it is in ${joined.holder.dm})` : ''}` };
      }
    }
    return { action, outcome: 'done', ...at, device, reason: why };
  } catch (e) {
    return { action, outcome: 'failed', ...at, reason: `${why}; ${toCsiError(e).message}` };
  }
}

/**
 * Login with the portal's node record, which the stage made (a login that failed then keeps it). A
 * portal that was down at stage has none (its discovery failed first): it is made again, unless the
 * volume uses CHAP, whose secret the driver never keeps.
 */
async function loginWithRecord(host: NodeHost, record: VolumeRecord, node: NodeRef): Promise<void> {
  const first = await countedLogin(host, node);
  if (first.ok) return;
  if (first.exit !== ISCSI_EXIT.NO_OBJS_FOUND) orThrow(first);
  if (record.sessionChap) {
    throw new FailedPrecondition(`the node record of ${formatPortal(node.portal)} is gone and the volume uses CHAP, whose secret the driver does not keep: the path comes back when the volume is staged again`);
  }
  host.forgottenNodes.recreated(node.iqn, formatPortal(node.portal), node.iface);
  await createNodeRecord(host, node, undefined, undefined);
  orThrow(await countedLogin(host, node));
}

/** The record names today's path devices, and a stable device path that still leads to the LUN. */
async function recordDevices(host: NodeHost, record: VolumeRecord): Promise<void> {
  const devices = await host.sysfs.devicesForIqnLun(record.iqn, record.lun);
  let devicePath = record.devicePath;
  if (!record.multipath && devicePath && (await host.devices.resolveDevice(devicePath)) === null && devices[0]) {
    devicePath = host.devices.devicePath(devices[0]);
  }
  await host.metadata.save({ ...record, devices, ...(devicePath ? { devicePath } : {}) });
}

/** What is wrong with the staging mount, without I/O on it (stats probe that): null when nothing. */
async function filesystemProblem(host: NodeHost, record: VolumeRecord): Promise<string | null> {
  const state = await host.mounts.mountState(record.stagingPath);
  if (!state.mounted) return `${record.stagingPath} is not mounted`;
  if (state.stale) return `the mount at ${record.stagingPath} is stale (its device is gone)`;
  if (state.entry.superOptions.includes('ro') && !state.entry.mountOptions.includes('ro')) {
    return `the filesystem at ${record.stagingPath} was remounted read-only by the kernel (I/O errors)`;
  }
  const ofLun = await lunMounts(host, record.iqn, record.lun);
  if (!ofLun.some((m) => m.mountId === state.entry.mountId)) {
    return `the filesystem at ${record.stagingPath} is on a device that was removed (its path was lost); its I/O fails until the volume is staged again (restart the pod)`;
  }
  return null;
}

/**
 * A record a stage or unstage left half way (the driver crashed, or an undo failed) that no call has
 * touched for the grace period: taken down like an unstage, which refuses while it is published or its
 * filesystem is mounted anywhere.
 */
async function finishHalfDone(host: NodeHost, record: VolumeRecord, ctx: HealContext): Promise<HealEvent[]> {
  const key = halfDoneKey(record);
  const ageMs = ctx.memory.seenForMs(key);
  if (ageMs < ctx.graceMs || !ctx.memory.mayTry(key)) return [];
  const at = { volumeId: record.volumeId, iqn: record.iqn };
  const reason = `its record has been ${record.phase} for ${Math.round(ageMs / 1000)} s with no call on it (a stage or unstage that did not finish)`;
  try {
    await unstage(host, record, ctx.log);
    ctx.memory.succeeded(key);
    return [{ action: 'half-done-finished', outcome: 'done', ...at, reason }];
  } catch (e) {
    ctx.memory.failed(key);
    return [{ action: 'half-done-finished', outcome: 'failed', ...at, reason: `${reason}; ${toCsiError(e).message}` }];
  }
}

function halfDoneKey(record: VolumeRecord): string {
  return `${record.volumeId} half-done`;
}
