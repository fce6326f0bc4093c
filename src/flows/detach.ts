// Detach, from the saved record alone (works after a restart, and when the device or target is gone):
// flush and delete each SCSI device of the LUN (flushing the multipath map first), then — under the
// target lock — log out and delete the node records only when nothing else uses the session: no other
// volume of this node (its record), and no LUN device someone else scanned on it; finally delete a
// cloned iface. "Already gone" answers (exit 21, 2) count as done.
import type { Logger } from '../log.js';
import type { VolumeRecord } from '../node-host/metadata.js';
import { metricsOf, type NodeHost, type SessionChangeOutcome, type SessionTopology } from './ports.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { Unavailable } from '../errors.js';
import { orThrow, type NodeRef } from '../node-host/iscsiadm.js';
import { formatPortal, parsePortal } from '../common/validate.js';
import type { StepTimes } from '../common/step-times.js';

/** Devices first, then (the record marked `detaching`) the session if no one else uses it, then a cloned iface. */
export async function detach(host: NodeHost, record: VolumeRecord, log: Logger, steps: StepTimes): Promise<void> {
  await steps.time('removeDevices', () => removeDevices(host, record, log));
  await steps.time('record', () => markDetaching(host, record, log));
  await logoutIfUnused(host, record, log, steps);
  if (record.clonedIface) orThrow(await host.iscsi.deleteIface(record.clonedIface));
}

/**
 * The record marked `detaching` (its devices are gone, it holds no session) before the logout. Not
 * needed for this detach: its own record is never counted as a user. When it cannot be written (a
 * full state directory) the detach goes on: the record keeps its phase, so another volume's detach
 * meanwhile counts it as a user and keeps the session, which is the safe side; this one logs out
 * itself, then removes the record, which needs no space.
 */
async function markDetaching(host: NodeHost, record: VolumeRecord, log: Logger): Promise<void> {
  try {
    await host.metadata.save({ ...record, phase: 'detaching' });
  } catch (e) {
    log.warn({ err: (e as Error).message }, 'cannot mark the volume record detaching; detaching anyway');
  }
}

/** Flush and remove the LUN's devices (all paths and the multipath map over them). */
async function removeDevices(host: NodeHost, record: VolumeRecord, log: Logger): Promise<void> {
  // The kernel names of today, not the saved ones: sdX names are reused after a reboot.
  await removeScsiDevices(host, await host.sysfs.devicesForIqnLun(record.iqn, record.lun), log);
}

/** Flush and delete SCSI devices, their multipath maps first (flushed and removed). */
export async function removeScsiDevices(host: NodeHost, devices: string[], log: Logger): Promise<void> {
  const maps = new Map<string, { dm: string; name: string; wwid: string }>();
  for (const d of devices) {
    const holder = await host.sysfs.multipathHolder(d);
    if (holder) maps.set(holder.dm, holder);
  }
  for (const map of maps.values()) {
    await host.fs.flushBuffers(host.devices.devicePath(map.dm)).catch((e: Error) => log.warn({ dm: map.dm, err: e.message }, 'flush failed'));
    await host.multipath.flush(map);
  }
  for (const d of devices) {
    await host.fs.flushBuffers(host.devices.devicePath(d)).catch((e: Error) => log.warn({ device: d, err: e.message }, 'flush failed'));
    if (!(await host.sysfs.deleteDevice(d))) continue;
    const gone = await host.devices.waitForDeviceRemoved(d, { deadlineMs: host.cfg.timeouts.deviceWaitMs, pollMs: host.cfg.timeouts.devicePollMs });
    if (!gone.ok) log.warn({ device: d, waitedMs: gone.waitedMs }, 'SCSI device still listed after its delete');
  }
  if (devices.length > 0) log.debug({ devices, maps: [...maps.keys()] }, 'deleted SCSI devices');
}

/**
 * Log out of the target's portals unless another volume still uses the target. Counted from the
 * metadata store under the target lock, so an attach in progress (its record is saved before its
 * login) is counted too, also one from another driver process; one whose devices are already gone is not.
 */
async function logoutIfUnused(host: NodeHost, record: VolumeRecord, log: Logger, steps: StepTimes): Promise<boolean> {
  const asked = performance.now();
  return host.targetLocks.withLock(record.iqn, () => steps.time('logout', async () => {
    steps.add('lockWait', performance.now() - asked);
    // a record marked `detaching` has no devices left and needs no session: when every volume of a
    // target is unstaged at once, the last one to get here logs out, whoever's record is still on disk
    const others = (await host.metadata.listByTarget(record.iqn, record.volumeId)).filter((r) => r.phase !== 'detaching');
    // a session is (target, portal, iface): a volume with its own initiator name has its own sessions
    const inUse = new Set(others.flatMap((r) => r.portals.map((p) => `${p}|${r.iface}`)));
    // sessions present now: a volume unstaged alongside may already have logged out of the portal
    const sessions = await host.sysfs.portalHostMap(record.iqn, record.iface);
    // read once, and only if some portal is to be logged out
    let topology: SessionTopology | undefined;
    let loggedOut = false;
    for (const portal of record.portals) {
      if (inUse.has(`${portal}|${record.iface}`)) continue;
      const node = { iqn: record.iqn, portal: parsePortal(portal), iface: record.iface };
      const sessionHost = sessions.get(portal);
      if (sessionHost !== undefined) {
        topology ??= await host.sysfs.topology(record.iqn);
        const foreign = foreignLuns(topology, record, sessionHost);
        if (foreign.length > 0) {
          log.warn({ iqn: record.iqn, portal, luns: foreign }, 'the session carries LUNs this driver did not stage (another plugin or an operator uses them): session kept');
          continue;
        }
        await logoutSession(host, node, record.iface, log);
        loggedOut = true;
      } else if (host.forgottenNodes.isForgotten(record.iqn, portal, record.iface)) {
        continue; // logged out and deleted by this process already, nothing logged in since
      }
      orThrow(await host.iscsi.deleteNode(node));
      host.forgottenNodes.forget(record.iqn, portal, record.iface);
      await host.sessionMarks.unmark({ iqn: record.iqn, portal, iface: record.iface });
    }
    if (others.length > 0) log.info({ iqn: record.iqn, stillUsedBy: others.length }, 'target still used by other volumes on this node: session kept');
    return loggedOut;
  }));
}

/** Between two logouts of a session iscsid does not know yet. */
const LOGOUT_RETRY_MS = 500;

/**
 * `--logout` of a session sysfs lists. iscsid answers "no such session" (exit 2 or 21) for a session
 * the kernel still has when it was restarted and has not taken that session over yet; the logout is
 * then not done: it is retried until sysfs no longer lists the session, for at most
 * timeouts.sessionResyncMs, after which the unstage fails (UNAVAILABLE) and its retry finishes it.
 */
export async function logoutSession(host: NodeHost, node: NodeRef, iface: string, log: Logger): Promise<void> {
  let outcome: SessionChangeOutcome = 'failed';
  try {
    outcome = await logoutUntilGone(host, node, iface, log);
  } finally {
    metricsOf(host).logout(outcome);
  }
}

async function logoutUntilGone(host: NodeHost, node: NodeRef, iface: string, log: Logger): Promise<SessionChangeOutcome> {
  const key = formatPortal(node.portal);
  const deadline = Date.now() + host.cfg.timeouts.sessionResyncMs;
  for (let attempt = 1; ; attempt++) {
    const r = orThrow(await host.iscsi.logout(node));
    if (!r.already) return 'ok';
    if (!(await host.sysfs.portalHostMap(node.iqn, iface)).has(key)) return 'already'; // it really is gone
    if (Date.now() >= deadline) {
      throw new Unavailable(`iscsid does not know the session to ${key} ${node.iqn} that the kernel still has (was iscsid restarted?); logout not done after ${attempt} attempts in ${host.cfg.timeouts.sessionResyncMs} ms`);
    }
    if (attempt === 1) log.warn({ iqn: node.iqn, portal: key }, 'iscsid answered "no such session" for a session sysfs lists: waiting for iscsid to take it over');
    await sleep(LOGOUT_RETRY_MS);
  }
}

/**
 * LUNs of the session other than this volume's that still have a block device. The driver scans
 * LUNs one by one (manual scan) and deletes its devices before it gets here, so such a device is
 * someone else's: the in-tree plugin during a migration, an operator, a volume whose record is
 * unreadable. Logging out would cut it off.
 */
function foreignLuns(topology: SessionTopology, record: VolumeRecord, sessionHost: number): number[] {
  const session = topology.sessionsForTarget(record.iqn).find((s) => s.host === sessionHost);
  return (session?.luns ?? []).filter((l) => l.lun !== record.lun && l.devices.length > 0).map((l) => l.lun);
}
