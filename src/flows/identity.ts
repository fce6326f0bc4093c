// The LUN's identity before anything is written to it: a device that shows up for (target, LUN) is the
// volume's only if the kernel's WWID of it (`device/wwid`, from VPD page 0x83) is the one the
// controller (or the static PV) names. A stale device, a LUN number reused on the target, a portal
// that leads to another array: each has another WWID. Every path is checked, then the multipath map
// (`dm/uuid` = `mpath-<multipath's WWID>`). A volume without an expected WWID (an old PV) records the
// one its device shows, and later calls check against that.
import { basename } from 'node:path';
import { FailedPrecondition } from '../errors.js';
import type { TargetSpec } from '../contract/volume-context.js';
import type { VolumeRecord } from '../node-host/metadata.js';
import type { NodeHost } from './ports.js';

interface PathDevice {
  portal: string;
  device: string;
}

/**
 * Each path device's WWID compared with the expected one: a mismatch, or a device without a readable
 * WWID while one is expected, is FAILED_PRECONDITION (the caller's undo deletes the devices). Without
 * an expected WWID the paths must still agree. Returns the LUN's WWID when known.
 */
export async function checkPathIdentity(host: NodeHost, target: TargetSpec, paths: PathDevice[]): Promise<string | undefined> {
  const lun = `LUN ${target.lun} of ${target.iqn}`;
  const seen = await Promise.all(paths.map(async (p) => ({ ...p, wwid: await host.sysfs.deviceWwid(p.device) })));
  const expected = target.wwid;
  for (const p of seen) {
    if (!expected) continue;
    if (p.wwid === null) {
      throw new FailedPrecondition(`${lun} on ${p.portal} (${p.device}) has no readable WWID (/sys/block/${p.device}/device/wwid) while the volume expects ${expected}: its identity cannot be checked, so it is not used; nothing was written to it`);
    }
    if (p.wwid !== expected) {
      throw new FailedPrecondition(`${lun} on ${p.portal} (${p.device}) is WWID ${p.wwid}, not the volume's ${expected}: another logical unit (a stale device, a LUN number reused on the target, a portal of another array); the device is removed and nothing was written to it`);
    }
  }
  const known = seen.filter((p): p is PathDevice & { wwid: string } => p.wwid !== null);
  if (new Set(known.map((p) => p.wwid)).size > 1) {
    throw new FailedPrecondition(`the paths of ${lun} are different logical units (${known.map((p) => `${p.device} on ${p.portal}: ${p.wwid}`).join(', ')}); the devices are removed and nothing was written to them`);
  }
  return expected ?? known[0]?.wwid;
}

/**
 * multipath's WWID of a LUN with this kernel WWID, as its map's `dm/uuid` carries it (`mpath-<it>`):
 * udev's ID_SERIAL, the designator type's digit then the identifier (NAA 3, EUI-64 2). Null for the
 * forms whose multipath spelling is not the kernel's (T10 vendor id, SCSI name string): their map is
 * then trusted through its checked paths.
 */
export function multipathWwidOf(wwid: string): string | null {
  if (wwid.startsWith('naa.')) return `3${wwid.slice(4)}`;
  if (wwid.startsWith('eui.')) return `2${wwid.slice(4)}`;
  return null;
}

/** The multipath map over the checked paths carries the same identity. */
export function checkMapIdentity(target: TargetSpec, map: { dm: string; wwid: string }, wwid: string | undefined): void {
  const want = wwid ? multipathWwidOf(wwid) : null;
  if (want === null || map.wwid === want) return;
  throw new FailedPrecondition(`the multipath map ${map.dm} over LUN ${target.lun} of ${target.iqn} is mpath-${map.wwid}, not mpath-${want} (WWID ${wwid}): it maps another logical unit; the devices are removed and nothing was written`);
}

/**
 * Before a staged block device is handed out again (publish): the recorded device is still the LUN
 * the volume recorded (sdX and dm-N names are reused after a device went away).
 */
export async function checkStagedDevice(host: NodeHost, record: VolumeRecord): Promise<void> {
  if (!record.wwid || !record.devicePath) return;
  const stale = `volume ${record.volumeId}'s staged device ${record.devicePath}`;
  const real = await host.devices.resolveDevice(record.devicePath);
  if (real === null) throw new FailedPrecondition(`${stale} is gone; NodeUnstageVolume and NodeStageVolume it again`);
  const name = basename(real);
  if (/^dm-\d+$/.test(name)) {
    const want = multipathWwidOf(record.wwid);
    for (const path of await host.sysfs.devicesForIqnLun(record.iqn, record.lun)) {
      const holder = await host.sysfs.multipathHolder(path);
      if (holder?.dm !== name) continue;
      if (want !== null && holder.wwid !== want) break;
      if ((await host.sysfs.deviceWwid(path)) === record.wwid) return;
    }
    throw new FailedPrecondition(`${stale} (${name}) is no longer the multipath map of WWID ${record.wwid}; NodeUnstageVolume and NodeStageVolume it again`);
  }
  const now = await host.sysfs.deviceWwid(name);
  if (now !== record.wwid) {
    throw new FailedPrecondition(`${stale} (${name}) is now WWID ${now ?? '(none readable)'}, not the volume's ${record.wwid}: the name was reused by another device; NodeUnstageVolume and NodeStageVolume it again`);
  }
}
