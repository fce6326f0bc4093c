// The diff between the desired tgtd configuration (desired.ts) and what tgtd shows (`tgtadm --op show
// --mode target`, parsed): the ordered tgtadm operations that make tgtd match, and the problems that
// keep it from matching. Pure; apply.ts runs the operations. Rules:
//  - targets that are not in the state are never touched;
//  - a LUN is never deleted here (only DeleteVolume deletes one, see planRemoval): a missing LUN is
//    created, a grown file is re-read in place and only while no initiator is logged in to the
//    target, a LUN on another file is pointed at the volume's only while nobody is logged in and the
//    volume is published nowhere;
//  - ACLs and accounts no volume asks for are unbound (repair plans only), LUNs the state does not
//    know are reported and left alone.
import { FailedPrecondition } from '../../errors.js';
import { parseIscsiName } from '../../common/validate.js';
import { formatBytes } from '../capacity.js';
import { freeTid } from './allocation.js';
import type { DesiredLun, DesiredState, DesiredTarget } from './desired.js';
import type { TgtTarget } from './tgtadm.js';

interface LunIds { volumeId: string; tid: number; lun: number; file: string; scsiId: string; scsiSn: string; bytes: number }

export type TgtOp =
  | { op: 'newTarget'; tid: number; iqn: string }
  | { op: 'setTargetReady'; tid: number; iqn: string; was: string }
  /** a new LUN on the volume's file, with the volume's SCSI ids; tgtd then reads `bytes` */
  | ({ op: 'newLun' } & LunIds)
  /** the LUN re-opens the volume's file in place, because it grew or because the LUN had another one */
  | ({ op: 'reopenLun'; reason: 'grown' | 'otherFile' } & LunIds)
  | { op: 'newAccount'; volumeId: string; user: string }
  | { op: 'bindAccount'; volumeId: string; tid: number; user: string; outgoing: boolean }
  | { op: 'bindInitiator'; volumeId: string; tid: number; initiator: string }
  | { op: 'unbindInitiator'; tid: number; initiator: string }
  | { op: 'unbindAddress'; tid: number; address: string }
  | { op: 'unbindAccount'; tid: number; user: string; outgoing: boolean }
  | { op: 'deleteLun'; tid: number; lun: number }
  | { op: 'deleteTarget'; tid: number };

export type ReopenLunOp = Extract<TgtOp, { op: 'reopenLun' }>;
/** Every op but the re-open, which checks tgtd between its calls and may be held back. */
export type DirectOp = Exclude<TgtOp, ReopenLunOp>;

export type VolumeProblem =
  /** stops the volume's export: its LUN exports a file an initiator may be using */
  | { kind: 'lunOnOtherFile'; volumeId: string; target: string; lun: number; file: string; exportedFile: string | null; publishedTo: string[] }
  /** the volume is exported, with a size tgtd has not read yet */
  | { kind: 'sizeNotRead'; volumeId: string; target: string; lun: number; exportedBytes: number; capacityBytes: number; loggedIn: string[] };

export interface TidChange {
  from: number;
  to: number;
  /** taken: another target has the state's tid in tgtd; followed: tgtd has our target under another tid */
  why: 'taken' | 'followed';
}

export interface TargetPlan {
  iqn: string;
  /** the target's tid in tgtd once the ops ran */
  tid: number;
  tidChange?: TidChange;
  /** the volumes planned for */
  volumeIds: string[];
  /** the target first, then volume by volume: LUN, accounts, ACLs */
  ops: TgtOp[];
  /** unbinds of what no volume of the target asks for (repair plans only) */
  prune: DirectOp[];
  problems: VolumeProblem[];
  /** LUNs the state does not know (repair plans only): reported, never deleted */
  strayLuns: { lun: number; file: string | null }[];
}

/** Backing file sizes (volume id → bytes) read before planning; a volume without one has the size it needs. */
export type FileSizes = ReadonlyMap<string, number>;

export interface PlanScope {
  files?: FileSizes;
  /** plan only these volumes of the target (default: all) */
  volumeIds?: ReadonlySet<string>;
}

/** Makes tgtd export the target's volumes (or some of them) as wanted; removes nothing. */
export function planExport(desired: DesiredState, target: DesiredTarget, live: readonly TgtTarget[], scope: PlanScope = {}): TargetPlan {
  const luns = target.luns.filter((l) => !scope.volumeIds || scope.volumeIds.has(l.volumeId));
  const plan: TargetPlan = { iqn: target.iqn, tid: target.tid, volumeIds: luns.map((l) => l.volumeId), ops: [], prune: [], problems: [], strayLuns: [] };
  let seen = live.find((t) => t.name === target.iqn);
  if (!seen) {
    if (live.some((t) => t.tid === target.tid)) {
      plan.tid = freeTid([...desired.tids, ...live.map((t) => t.tid)]);
      plan.tidChange = { from: target.tid, to: plan.tid, why: 'taken' };
    }
    plan.ops.push({ op: 'newTarget', tid: plan.tid, iqn: target.iqn });
    seen = { tid: plan.tid, name: target.iqn, state: 'ready', nexuses: [], luns: [], accounts: [], outgoingAccounts: [], acls: [] };
  } else if (seen.tid !== target.tid) {
    plan.tid = seen.tid;
    plan.tidChange = { from: target.tid, to: seen.tid, why: 'followed' };
  }
  if (seen.state !== 'ready') {
    // refuses logins and holds back commands: left so by an interrupted re-open (or by hand)
    plan.ops.push({ op: 'setTargetReady', tid: plan.tid, iqn: target.iqn, was: seen.state });
  }
  const bound = { acls: new Set(seen.acls), accounts: new Set(seen.accounts), outgoing: new Set(seen.outgoingAccounts) };
  for (const want of luns) planLun(plan, want, seen, bound, scope.files);
  return plan;
}

/** planExport, plus the unbinds of what no volume of the target asks for. */
export function planRepair(desired: DesiredState, target: DesiredTarget, live: readonly TgtTarget[], scope: PlanScope = {}): TargetPlan {
  const plan = planExport(desired, target, live, scope);
  const seen = live.find((t) => t.name === target.iqn);
  if (!seen) return plan;
  const tid = plan.tid;
  for (const acl of seen.acls) {
    if (target.initiatorAcls.includes(acl) || target.addressAcls.includes(acl)) continue;
    plan.prune.push(isAddressAcl(acl) ? { op: 'unbindAddress', tid, address: acl } : { op: 'unbindInitiator', tid, initiator: acl });
  }
  for (const user of seen.accounts.filter((u) => !target.incomingAccounts.includes(u))) plan.prune.push({ op: 'unbindAccount', tid, user, outgoing: false });
  for (const user of seen.outgoingAccounts.filter((u) => !target.outgoingAccounts.includes(u))) plan.prune.push({ op: 'unbindAccount', tid, user, outgoing: true });
  plan.strayLuns = seen.luns
    .filter((l) => l.lun !== CONTROLLER_LUN && !target.luns.some((w) => w.lun === l.lun))
    .map((l) => ({ lun: l.lun, file: l.backingStorePath }));
  return plan;
}

/** Whether carrying out the plan would change anything or leaves a problem. */
export function hasWork(plan: TargetPlan): boolean {
  return plan.tidChange !== undefined || plan.ops.length > 0 || plan.prune.length > 0 || plan.problems.length > 0;
}

/** Unbinds the initiators of nodes a volume was unpublished from, unless another volume of the target still wants them. */
export function planUnbind(target: DesiredTarget | undefined, iqn: string, live: readonly TgtTarget[], initiators: string[]): DirectOp[] {
  const seen = live.find((t) => t.name === iqn);
  if (!seen) return [];
  return [...new Set(initiators)]
    .filter((i) => !target?.initiatorAcls.includes(i) && seen.acls.includes(i))
    .map((initiator) => ({ op: 'unbindInitiator', tid: seen.tid, initiator }));
}

/** DeleteVolume: the volume's LUN, or the whole target with its last volume. */
export function planRemoval(iqn: string, lun: number, lastOnTarget: boolean, live: readonly TgtTarget[]): DirectOp[] {
  const seen = live.find((t) => t.name === iqn);
  if (!seen) return [];
  return [lastOnTarget ? { op: 'deleteTarget', tid: seen.tid } : { op: 'deleteLun', tid: seen.tid, lun }];
}

/** The problem a re-open held back leaves: an initiator logged in between the plan and the re-open. */
export function heldBackProblem(target: DesiredTarget, op: ReopenLunOp, loggedIn: string[]): VolumeProblem {
  const want = target.luns.find((l) => l.volumeId === op.volumeId)!;
  return op.reason === 'otherFile'
    ? { kind: 'lunOnOtherFile', volumeId: want.volumeId, target: target.iqn, lun: want.lun, file: want.file, exportedFile: null, publishedTo: [] }
    : { kind: 'sizeNotRead', volumeId: want.volumeId, target: target.iqn, lun: want.lun, exportedBytes: want.exportedBytes, capacityBytes: want.capacityBytes, loggedIn };
}

export function problemMessage(p: VolumeProblem): string {
  switch (p.kind) {
    case 'lunOnOtherFile': {
      const why = p.publishedTo.length > 0 ? `the volume is published to ${p.publishedTo.join(', ')}` : 'an initiator is logged in to the target';
      return `LUN ${p.lun} of target ${p.target} exports ${p.exportedFile ?? 'no file'}, not the volume's ${p.file}; left alone while ${why}: an initiator may be using that data`;
    }
    case 'sizeNotRead':
      return sizeNotReadMessage(p);
  }
}

/** The error a problem stops a volume's export with; undefined when it only makes the volume's condition abnormal. */
export function problemError(p: VolumeProblem): Error | undefined {
  return p.kind === 'lunOnOtherFile' ? new FailedPrecondition(problemMessage(p)) : undefined;
}

/** Why a volume's LUN does not show `capacityBytes` (yet): tgtd is told only while nobody is logged in to the target. */
export function sizeNotReadMessage(p: Omit<Extract<VolumeProblem, { kind: 'sizeNotRead' }>, 'kind'>): string {
  const who = p.loggedIn;
  if (who.length === 0) return `LUN ${p.lun} of target ${p.target} still has ${formatBytes(p.exportedBytes)}; tgtd reads the volume's ${formatBytes(p.capacityBytes)} at the next reconcile or expand`;
  return `volume ${p.volumeId} cannot grow to ${formatBytes(p.capacityBytes)} while ${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} logged in to target ${p.target}: `
    + "tgtd reads a LUN's new size only by re-opening its backing file, which fails the commands in flight, "
    + `and re-creating the LUN would take it away from the node; the LUN keeps ${formatBytes(p.exportedBytes)} until no initiator is logged in`;
}

/** Initiators logged in to a target, each once. */
export function loggedIn(target: TgtTarget | undefined): string[] {
  return [...new Set((target?.nexuses ?? []).map((n) => n.initiator))];
}

const CONTROLLER_LUN = 0;

/** An ACL entry that is not an iSCSI name is an address (or ALL), unbound with -I. */
function isAddressAcl(acl: string): boolean {
  try {
    parseIscsiName(acl);
    return false;
  } catch {
    return true;
  }
}

interface Bound { acls: Set<string>; accounts: Set<string>; outgoing: Set<string> }

/** One volume's LUN, accounts and ACLs, after the ops planned so far for the target (`bound`). */
function planLun(plan: TargetPlan, want: DesiredLun, seen: TgtTarget, bound: Bound, files: FileSizes | undefined): void {
  const bytes = Math.max(files?.get(want.volumeId) ?? want.fileBytes, want.fileBytes);
  const ids: LunIds = { volumeId: want.volumeId, tid: plan.tid, lun: want.lun, file: want.file, scsiId: want.scsiId, scsiSn: want.scsiSn, bytes };
  const have = seen.luns.find((l) => l.lun === want.lun);
  if (!have) {
    plan.ops.push({ op: 'newLun', ...ids });
  } else if (have.backingStorePath !== want.file) {
    if (seen.nexuses.length > 0 || want.publishedTo.length > 0) {
      plan.problems.push({ kind: 'lunOnOtherFile', volumeId: want.volumeId, target: plan.iqn, lun: want.lun, file: want.file, exportedFile: have.backingStorePath, publishedTo: want.publishedTo });
      return; // nothing more for this volume: its nodes must not be let in to that data
    }
    plan.ops.push({ op: 'reopenLun', reason: 'otherFile', ...ids });
  } else if (want.exportedBytes < bytes) {
    if (seen.nexuses.length === 0) plan.ops.push({ op: 'reopenLun', reason: 'grown', ...ids });
    else plan.problems.push({ kind: 'sizeNotRead', volumeId: want.volumeId, target: plan.iqn, lun: want.lun, exportedBytes: want.exportedBytes, capacityBytes: want.capacityBytes, loggedIn: loggedIn(seen) });
  }
  // an account bound to the target exists in tgtd: only an unbound one is (re-)created
  for (const [user, outgoing] of [[want.incomingUser, false], [want.outgoingUser, true]] as const) {
    const set = outgoing ? bound.outgoing : bound.accounts;
    if (user === undefined || set.has(user)) continue;
    plan.ops.push({ op: 'newAccount', volumeId: want.volumeId, user }, { op: 'bindAccount', volumeId: want.volumeId, tid: plan.tid, user, outgoing });
    set.add(user);
  }
  for (const initiator of want.initiators) {
    if (bound.acls.has(initiator)) continue;
    plan.ops.push({ op: 'bindInitiator', volumeId: want.volumeId, tid: plan.tid, initiator });
    bound.acls.add(initiator);
  }
}
