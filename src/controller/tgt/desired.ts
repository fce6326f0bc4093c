// What tgtd should be configured with, computed from the driver's state alone (pure): per target of
// ours its tid, its LUNs (backing file, SCSI ids, the size tgtd must read), the ACLs and the CHAP
// accounts bound to it. Everything that compares tgtd with the state (the reconciler's diff, its
// quick "anything to repair?" check, unpublish's "is this ACL still needed?") works from this.
import { backingBytes } from '../capacity.js';
import type { TgtStateDoc, TgtVolumeState } from './state.js';

/** One volume's LUN and what its nodes need bound to the target. */
export interface DesiredLun {
  volumeId: string;
  lun: number;
  file: string;
  scsiId: string;
  scsiSn: string;
  capacityBytes: number;
  /** the least the backing file must hold: the capacity in whole blocks */
  fileBytes: number;
  /** the file size tgtd last read for this LUN */
  exportedBytes: number;
  /** nodes the volume is published to: while there is one, its LUN is never pointed at another file */
  publishedTo: string[];
  /** initiator names of those nodes, each bound as an ACL */
  initiators: string[];
  /** CHAP account initiators log in with (bound as incoming) */
  incomingUser?: string;
  /** CHAP account the target answers mutual CHAP with (bound --outgoing) */
  outgoingUser?: string;
}

export interface DesiredTarget {
  iqn: string;
  tid: number;
  luns: DesiredLun[];
  /** union of the LUNs' initiators: every other initiator ACL is unwanted */
  initiatorAcls: string[];
  /**
   * Address ACLs (IP or ALL). The driver binds nodes by initiator name only, so there are none: an
   * address ACL on a target of ours would let in every initiator at that address.
   */
  addressAcls: string[];
  incomingAccounts: string[];
  outgoingAccounts: string[];
}

export interface DesiredState {
  /** in the state's order */
  targets: DesiredTarget[];
  /** every tid the state gives a target: a tid chosen for another target must avoid them too */
  tids: number[];
}

export function desiredState(doc: Readonly<TgtStateDoc>): DesiredState {
  const lunsOf = new Map<string, DesiredLun[]>();
  // a volume whose content is still being copied in has no file to export yet
  for (const vol of Object.values(doc.volumes).filter((v) => !v.contentPending)) {
    const luns = lunsOf.get(vol.target) ?? [];
    luns.push(desiredLun(vol));
    lunsOf.set(vol.target, luns);
  }
  const targets = Object.values(doc.targets).map((t) => desiredTarget(t.iqn, t.tid, lunsOf.get(t.iqn) ?? []));
  return { targets, tids: targets.map((t) => t.tid) };
}

export function desiredTargetOf(desired: DesiredState, iqn: string): DesiredTarget | undefined {
  return desired.targets.find((t) => t.iqn === iqn);
}

function desiredTarget(iqn: string, tid: number, luns: DesiredLun[]): DesiredTarget {
  const unique = (values: (string | undefined)[]): string[] => [...new Set(values.filter((v): v is string => v !== undefined))];
  return {
    iqn,
    tid,
    luns,
    initiatorAcls: unique(luns.flatMap((l) => l.initiators)),
    addressAcls: [],
    incomingAccounts: unique(luns.map((l) => l.incomingUser)),
    outgoingAccounts: unique(luns.map((l) => l.outgoingUser)),
  };
}

function desiredLun(vol: TgtVolumeState): DesiredLun {
  return {
    volumeId: vol.id,
    lun: vol.lun,
    file: vol.file,
    scsiId: vol.scsiId,
    scsiSn: vol.scsiSn,
    capacityBytes: vol.capacityBytes,
    fileBytes: backingBytes(vol.capacityBytes),
    exportedBytes: vol.exportedBytes,
    publishedTo: Object.keys(vol.published),
    initiators: Object.values(vol.published).map((p) => p.initiator),
    ...(vol.chap ? { incomingUser: vol.chap.user } : {}),
    ...(vol.chap?.mutualUser ? { outgoingUser: vol.chap.mutualUser } : {}),
  };
}
