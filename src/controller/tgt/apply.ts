// Carries out the tgtadm operations reconcile.ts plans, through the Tgtadm adapter (so every call
// keeps the shared CommandRunner's timeout), and reports per volume what came of them.
import type { Tgtadm } from './tgtadm.js';
import { heldBackProblem, loggedIn, problemError, type DirectOp, type ReopenLunOp, type TargetPlan, type VolumeProblem } from './reconcile.js';
import type { DesiredTarget } from './desired.js';

export interface ApplyDeps {
  tgtadm: Tgtadm;
  /** creates a CHAP account in tgtd with its stored password */
  createAccount(user: string, volumeId: string): Promise<void>;
}

export interface VolumeResult {
  /** what stopped the volume's export: its later operations did not run */
  error?: Error;
  /** exported, but not as wanted yet (a size tgtd has not read) */
  problem?: VolumeProblem;
}

export interface ExportOutcome {
  /** every volume of the plan */
  volumes: Map<string, VolumeResult>;
  /** volume id → bytes tgtd now reads for its LUN (created or re-opened) */
  exported: Map<string, number>;
  /** volumes whose LUN was re-opened in place */
  reopened: string[];
}

/**
 * Runs a plan's export operations in order. An operation of one volume that fails stops only that
 * volume's operations; one of the whole target (create it, set it ready) stops all of them.
 */
export async function applyExport(plan: TargetPlan, target: DesiredTarget, deps: ApplyDeps): Promise<ExportOutcome> {
  const outcome: ExportOutcome = { volumes: new Map(plan.volumeIds.map((id) => [id, {}])), exported: new Map(), reopened: [] };
  const result = (id: string): VolumeResult => outcome.volumes.get(id)!;
  const note = (problem: VolumeProblem): void => {
    const r = result(problem.volumeId);
    const error = problemError(problem);
    if (error) r.error = error;
    else r.problem = problem;
  };
  plan.problems.forEach(note);
  /** who was found logged in to a target: no re-open on it is tried again in this run */
  const busy = new Map<number, string[]>();
  const reopen = async (op: ReopenLunOp): Promise<void> => {
    const who = busy.get(op.tid) ?? (await reopenLun(op, deps.tgtadm));
    if (who.length > 0) {
      busy.set(op.tid, who);
      note(heldBackProblem(target, op, who));
      return;
    }
    outcome.exported.set(op.volumeId, op.bytes);
    outcome.reopened.push(op.volumeId);
  };
  for (const op of plan.ops) {
    if ('volumeId' in op && result(op.volumeId).error) continue;
    try {
      if (op.op === 'reopenLun') {
        await reopen(op);
      } else {
        await runOp(op, deps);
        if (op.op === 'newLun') outcome.exported.set(op.volumeId, op.bytes);
      }
    } catch (e) {
      if ('volumeId' in op) {
        result(op.volumeId).error = e as Error;
        continue;
      }
      for (const r of outcome.volumes.values()) r.error ??= e as Error;
      break;
    }
  }
  return outcome;
}

/** Runs operations in order; the first failure is thrown and nothing after it runs. */
export async function applyAll(ops: readonly DirectOp[], deps: ApplyDeps): Promise<void> {
  for (const op of ops) await runOp(op, deps);
}

async function runOp(op: DirectOp, deps: ApplyDeps): Promise<void> {
  const { tgtadm } = deps;
  switch (op.op) {
    case 'newTarget': return tgtadm.newTarget(op.tid, op.iqn);
    case 'setTargetReady': return tgtadm.setTargetState(op.tid, 'ready');
    case 'newLun':
      await tgtadm.newLun(op.tid, op.lun, op.file);
      return tgtadm.setLunIds(op.tid, op.lun, op.scsiId, op.scsiSn);
    case 'newAccount': return deps.createAccount(op.user, op.volumeId);
    case 'bindAccount': return tgtadm.bindAccount(op.tid, op.user, op.outgoing);
    case 'bindInitiator': return tgtadm.bindInitiator(op.tid, op.initiator);
    case 'unbindInitiator': return tgtadm.unbindInitiator(op.tid, op.initiator);
    case 'unbindAddress': return tgtadm.unbindAddress(op.tid, op.address);
    case 'unbindAccount': return tgtadm.unbindAccount(op.tid, op.user, op.outgoing);
    case 'deleteLun': return tgtadm.deleteLun(op.tid, op.lun);
    case 'deleteTarget': return tgtadm.deleteTarget(op.tid);
  }
}

/**
 * Has tgtd re-open the volume's file for its LUN (new size, or the volume's file instead of another),
 * keeping the LUN and setting the volume's SCSI ids. Logins to the target are refused meanwhile, so
 * no session can start between the check that there is none and the re-open. Returns who is logged
 * in after all (nothing done then), or [] once done.
 */
async function reopenLun(op: ReopenLunOp, tgtadm: Tgtadm): Promise<string[]> {
  await tgtadm.setTargetState(op.tid, 'offline');
  try {
    const who = loggedIn((await tgtadm.showTargets()).find((t) => t.tid === op.tid));
    if (who.length > 0) return who;
    await tgtadm.reopenLun(op.tid, op.lun, op.file);
    await tgtadm.setLunIds(op.tid, op.lun, op.scsiId, op.scsiSn);
  } finally {
    await tgtadm.setTargetState(op.tid, 'ready');
  }
  return [];
}
