// The node healer's orphans, removed once seen for the grace period: devices on a session this driver
// marked (node-host/session-marks.ts) whose LUN no record covers, then marked sessions no record uses
// (logged out), then marks of sessions that are gone (cleared with their node record). Sessions and
// devices nobody marked (an operator's, another plugin's) are never looked at. A device that is mounted,
// bind-mounted or held by a layer over it (LVM, md, a loop device, a dm map someone opened) is in use
// and stays, and so does its session. Nothing is reaped while a record file cannot be read (its volume
// would look like an orphan). Each removal is decided again under the target lock, from the records
// read there, so a stage that began meanwhile keeps what it uses.
import { toCsiError } from '../errors.js';
import { orThrow } from '../node-host/iscsiadm.js';
import type { RecordSurvey, VolumeRecord } from '../node-host/metadata.js';
import { sessionKey, type SessionRef } from '../node-host/session-marks.js';
import { parsePortal } from '../common/validate.js';
import { logoutSession, removeScsiDevices } from './detach.js';
import type { HealContext, HealEvent } from './heal.js';
import type { NodeHost } from './ports.js';

export async function reapOrphans(host: NodeHost, survey: RecordSurvey, ctx: HealContext): Promise<HealEvent[]> {
  if (survey.unreadable.length > 0) {
    return ctx.memory.report('* orphans', {
      action: 'orphans-suspended', outcome: 'reported',
      reason: `${survey.unreadable.length} volume record file(s) cannot be read (${survey.unreadable.join(', ')}): no orphan is reaped until they are repaired or moved away`,
    });
  }
  const events: HealEvent[] = [];
  for (const mark of await host.sessionMarks.list()) {
    try {
      events.push(...await reapOnSession(host, mark, survey.records, ctx));
    } catch (e) {
      events.push({ action: 'check-failed', outcome: 'failed', iqn: mark.iqn, portal: mark.portal, reason: `checking the session for orphans: ${toCsiError(e).message}` });
    }
  }
  return events;
}

function usesSession(record: VolumeRecord, mark: SessionRef): boolean {
  return record.iqn === mark.iqn && record.iface === mark.iface && record.portals.includes(mark.portal);
}

/** The session's devices no record covers, then the session itself when no record uses it. */
async function reapOnSession(host: NodeHost, mark: SessionRef, records: VolumeRecord[], ctx: HealContext): Promise<HealEvent[]> {
  const events: HealEvent[] = [];
  const scsiHost = (await host.sysfs.portalHostMap(mark.iqn, mark.iface)).get(mark.portal);
  if (scsiHost !== undefined) {
    const session = (await host.sysfs.topology(mark.iqn)).sessionsForTarget(mark.iqn).find((s) => s.host === scsiHost);
    for (const lun of session?.luns ?? []) {
      if (records.some((r) => r.iqn === mark.iqn && r.lun === lun.lun)) continue;
      for (const device of lun.devices) {
        const key = `device ${sessionKey(mark)} ${device}`;
        if (ctx.memory.seenForMs(key) < ctx.graceMs || !ctx.memory.mayTry(key)) continue;
        events.push(...await reapDevice(host, mark, lun.lun, device, key, ctx));
      }
    }
  }
  if (records.some((r) => usesSession(r, mark))) return events;
  const key = `session ${sessionKey(mark)}`;
  if (ctx.memory.seenForMs(key) < ctx.graceMs || !ctx.memory.mayTry(key)) return events;
  events.push(...await reapSession(host, mark, key, ctx));
  return events;
}

/** Under the target lock: a device of a LUN no record covers, unless something uses it. */
async function reapDevice(host: NodeHost, mark: SessionRef, lun: number, device: string, key: string, ctx: HealContext): Promise<HealEvent[]> {
  const at = { iqn: mark.iqn, portal: mark.portal, device };
  try {
    return await host.targetLocks.withLock(mark.iqn, async (): Promise<HealEvent[]> => {
      if ((await host.metadata.listByTarget(mark.iqn)).some((r) => r.lun === lun)) return []; // a stage took it meanwhile
      const use = await deviceUse(host, device);
      if (use) return ctx.memory.report(key, { action: 'orphan-device', outcome: 'kept', ...at, reason: `LUN ${lun} has no volume record but ${device} is in use (${use}): left alone` });
      await removeScsiDevices(host, [device], ctx.log);
      ctx.memory.succeeded(key);
      return [{ action: 'orphan-device', outcome: 'done', ...at, reason: `LUN ${lun} of a session this driver logged in has no volume record: device deleted` }];
    });
  } catch (e) {
    ctx.memory.failed(key);
    return [{ action: 'orphan-device', outcome: 'failed', ...at, reason: toCsiError(e).message }];
  }
}

/** null when nothing uses the device (or its multipath map): no mount, bind mount or layer over it. */
async function deviceUse(host: NodeHost, device: string): Promise<string | null> {
  const map = await host.sysfs.multipathHolder(device);
  const layers = (await host.sysfs.holders(device)).filter((h) => h !== map?.dm);
  if (layers.length > 0) return `held by ${layers.join(', ')}`;
  const nodes = [host.devices.devicePath(device)];
  if (map) {
    const over = await host.sysfs.holders(map.dm);
    if (over.length > 0) return `its multipath map ${map.dm} is held by ${over.join(', ')}`;
    nodes.push(host.devices.devicePath(map.dm));
  }
  const mounts = await host.mounts.mountsOfDevices(nodes);
  return mounts.length > 0 ? `mounted at ${mounts.map((m) => m.mountPoint).join(', ')}` : null;
}

/** Under the target lock: the session logged out (unless a device is left on it), its node record deleted, its mark cleared. */
async function reapSession(host: NodeHost, mark: SessionRef, key: string, ctx: HealContext): Promise<HealEvent[]> {
  const at = { iqn: mark.iqn, portal: mark.portal };
  const node = { iqn: mark.iqn, portal: parsePortal(mark.portal), iface: mark.iface };
  try {
    return await host.targetLocks.withLock(mark.iqn, async (): Promise<HealEvent[]> => {
      if ((await host.metadata.listByTarget(mark.iqn)).some((r) => usesSession(r, mark))) return [];
      const scsiHost = (await host.sysfs.portalHostMap(mark.iqn, mark.iface)).get(mark.portal);
      if (scsiHost !== undefined) {
        const session = (await host.sysfs.topology(mark.iqn)).sessionsForTarget(mark.iqn).find((s) => s.host === scsiHost);
        const left = (session?.luns ?? []).filter((l) => l.devices.length > 0).map((l) => l.lun);
        if (left.length > 0) return ctx.memory.report(key, { action: 'orphan-session', outcome: 'kept', ...at, reason: `no volume record uses the session, but it carries LUN ${left.join(', ')} with devices still in use: kept` });
        await logoutSession(host, node, mark.iface, ctx.log);
      }
      orThrow(await host.iscsi.deleteNode(node));
      host.forgottenNodes.forget(mark.iqn, mark.portal, mark.iface);
      await host.sessionMarks.unmark(mark);
      ctx.memory.succeeded(key);
      return scsiHost !== undefined
        ? [{ action: 'orphan-session', outcome: 'done', ...at, reason: 'a session this driver logged in that no volume record uses: logged out, node record deleted' }]
        : [{ action: 'orphan-mark', outcome: 'done', ...at, reason: 'the mark of a session that is gone and that no volume record uses: cleared, node record deleted' }];
    });
  } catch (e) {
    ctx.memory.failed(key);
    return [{ action: 'orphan-session', outcome: 'failed', ...at, reason: toCsiError(e).message }];
  }
}
