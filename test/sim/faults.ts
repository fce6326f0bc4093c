// Fault switches of the simulated host, kept in R/faults.json and read by the simulated kernel on
// every request, so a test can flip them between two driver calls.
import { readFileSync } from 'node:fs';

/** Operation names a `hang` entry can name: the fake command then never returns (the caller's timeout fires). */
export type HangOp =
  | 'iscsiadm' | 'login' | 'logout' | 'discovery' | 'node' | 'iface' | 'session' | 'rescan'
  | 'multipath' | 'multipathd';

export interface Faults {
  hang?: HangOp[];
  /** the scan succeeds but this LUN of this target never gets a device */
  noDevice?: { iqn: string; lun: number }[];
  /**
   * this LUN number of this target is another logical unit when scanned (a stale device, a LUN number
   * reused): its device presents the identity (VPD page 0x83, hence `device/wwid` and the multipath
   * WWID) of a tgt LUN with SCSI ID `scsiId`, while its data is still the LUN's backing file
   */
  staleLu?: { iqn: string; lun: number; scsiId: string }[];
  /** "addr:port": login fails with exit 8, discovery cannot connect; sessions to it turn FAILED */
  portalDown?: string[];
  /**
   * multipath mode: multipathd takes a new path this long after udev made its links (a real multipathd
   * reacts to the uevent), instead of before them
   */
  multipathDelayMs?: number;
  /** udevd writes a new disk's database entry this long after its links (it always comes after them) */
  udevDelayMs?: number;
  /**
   * udevd makes a new disk's by-path link this long after the kernel added the disk (its sysfs entries
   * and /dev node exist at once, as devtmpfs makes them): a udev that lags behind a storm
   */
  linkDelayMs?: number;
  /**
   * iscsid restarted and has not taken over the kernel's sessions yet: until this time (epoch ms) a
   * logout answers "No matching sessions found" (exit 21) while the session stays
   */
  iscsidResyncUntil?: number;
}

export function readFaults(file: string): Faults {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Faults;
  } catch {
    return {};
  }
}
