// Brings targets in tgtd in line with the driver's state, one target at a time under its tgt:<iqn>
// lock: the volumes' backing files are checked (and grown to the volume's size), tgtd's listing is
// read, the desired configuration is computed and diffed with it, the operations are run, and what
// tgtd now reads (sizes, the tid it uses) is recorded. Also keeps each volume's condition: abnormal
// while its export failed or tgtd has not read its size yet.
import type { VolumeCondition } from '../../csi/types.js';
import { Internal } from '../../errors.js';
import type { KeyedMutex } from '../../common/keyed-mutex.js';
import type { Logger } from '../../log.js';
import { HEALTHY } from '../backend.js';
import { backingBytes } from '../capacity.js';
import { applyAll, applyExport, type ApplyDeps, type ExportOutcome } from './apply.js';
import { desiredState, desiredTargetOf, type DesiredState, type DesiredTarget } from './desired.js';
import type { Pool } from './pool.js';
import { hasWork, loggedIn, planExport, planRepair, problemMessage, sizeNotReadMessage, type TargetPlan } from './reconcile.js';
import type { TgtState, TgtVolumeState } from './state.js';
import type { Tgtadm, TgtTarget } from './tgtadm.js';

export interface TargetSyncDeps {
  state: TgtState;
  pool: Pool;
  tgtadm: Tgtadm;
  apply: ApplyDeps;
  locks: KeyedMutex;
  logger: Logger;
}

/** Each volume's condition, or the error that stopped its export. */
type SyncResults = Map<string, VolumeCondition | Error>;

export class TargetSync {
  readonly #conditions = new Map<string, VolumeCondition>();

  constructor(private readonly deps: TargetSyncDeps) {}

  /** The volume's last known condition (healthy unless something found otherwise). */
  conditionOf(volumeId: string): VolumeCondition {
    return this.#conditions.get(volumeId) ?? HEALTHY;
  }

  setCondition(volumeId: string, cond: VolumeCondition): void {
    if (cond.abnormal) this.#conditions.set(volumeId, cond);
    else this.#conditions.delete(volumeId);
  }

  /** Drops what is known of a deleted volume. */
  forget(volumeId: string): void {
    this.#conditions.delete(volumeId);
  }

  /** Checks one volume against its file and tgtd (ControllerGetVolume's condition). */
  async check(vol: TgtVolumeState): Promise<VolumeCondition> {
    const problems: string[] = [];
    const size = await this.deps.pool.sizeOf(vol.file).catch(() => undefined);
    if (size === undefined) problems.push(`backing file ${vol.file} is missing`);
    else if (size < backingBytes(vol.capacityBytes)) problems.push(`backing file ${vol.file} is ${size} bytes, smaller than the volume`);
    try {
      const live = (await this.deps.tgtadm.showTargets()).find((t) => t.name === vol.target);
      if (!live) problems.push(`target ${vol.target} is not configured in tgtd`);
      else if (!live.luns.some((l) => l.lun === vol.lun)) problems.push(`LUN ${vol.lun} of target ${vol.target} is not configured in tgtd`);
      else if (vol.exportedBytes < backingBytes(vol.capacityBytes)) problems.push(sizeNotRead(vol, vol.capacityBytes, live));
    } catch (e) {
      problems.push(`tgtd cannot be queried: ${(e as Error).message}`);
    }
    const cond = problems.length > 0 ? { abnormal: true, message: problems.join('; ') } : HEALTHY;
    this.setCondition(vol.id, cond);
    return cond;
  }

  /** One pass over every target of the state: those tgtd differs on (or with an abnormal volume) are repaired. */
  async reconcileAll(): Promise<void> {
    const { state, locks, logger } = this.deps;
    const live = await this.deps.tgtadm.showTargets();
    const desired = desiredState(state.doc);
    let repaired = 0;
    for (const target of desired.targets) {
      if (!this.#needsRepair(desired, target, live)) continue;
      await locks.withLock(`tgt:${target.iqn}`, async () => {
        if (!state.target(target.iqn)) return; // deleted meanwhile
        const { plan, results } = await this.#sync(target.iqn);
        for (const [volumeId, r] of results) {
          this.setCondition(volumeId, r instanceof Error ? { abnormal: true, message: r.message } : r);
          if (r instanceof Error) logger.error({ volumeId, err: r.message }, 'cannot restore volume in tgtd');
        }
        await this.#prune(plan);
        repaired += 1;
      });
    }
    if (repaired > 0) logger.info({ targets: repaired }, 'tgtd reconciled from the controller state');
  }

  /**
   * Makes tgtd export one volume as the state says (its target, LUN, accounts, ACLs; removing
   * nothing) and returns its condition; throws what stops it. `live`: a listing the caller just read.
   * Caller holds tgt:<target>.
   */
  async export(vol: TgtVolumeState, live?: TgtTarget[]): Promise<VolumeCondition> {
    const r = (await this.#sync(vol.target, vol.id, live)).results.get(vol.id)!;
    if (r instanceof Error) throw r;
    this.setCondition(vol.id, r);
    return r;
  }

  /** Whether tgtd differs from the state for this target (with the file sizes the state records), or one of its volumes is abnormal. */
  #needsRepair(desired: DesiredState, target: DesiredTarget, live: TgtTarget[]): boolean {
    return hasWork(planRepair(desired, target, live)) || target.luns.some((l) => this.#conditions.get(l.volumeId)?.abnormal);
  }

  /** Exports a target's volumes (or one of them); the plan's unbinds are left for #prune. Caller holds tgt:<iqn>. */
  async #sync(iqn: string, onlyVolume?: string, known?: TgtTarget[]): Promise<{ plan: TargetPlan; results: SyncResults }> {
    const { state } = this.deps;
    const stateTarget = state.target(iqn);
    if (!stateTarget) throw new Internal(`controller state lists volume ${onlyVolume} on target ${iqn}, which it does not list`);
    const results: SyncResults = new Map();
    const files = new Map<string, number>();
    for (const vol of state.volumesOn(iqn).filter((v) => !v.contentPending && (onlyVolume === undefined || v.id === onlyVolume))) {
      await this.#readyBackingFile(vol).then((bytes) => files.set(vol.id, bytes), (e: Error) => results.set(vol.id, e));
    }
    const live = known ?? (await this.deps.tgtadm.showTargets());
    // no await from here to the tid's update: no other call can take the same tid
    const desired = desiredState(state.doc);
    const target = desiredTargetOf(desired, iqn)!;
    const scope = { files, volumeIds: new Set(files.keys()) };
    const plan = onlyVolume === undefined ? planRepair(desired, target, live, scope) : planExport(desired, target, live, scope);
    if (plan.tidChange) stateTarget.tid = plan.tid;
    const outcome = await applyExport(plan, target, this.deps.apply);
    await this.#record(plan, outcome);
    for (const [volumeId, r] of outcome.volumes) {
      results.set(volumeId, r.error ?? (r.problem ? { abnormal: true, message: problemMessage(r.problem) } : HEALTHY));
    }
    return { plan, results };
  }

  /** Saves what tgtd now reads for the volumes and the tid it uses for the target, and says what changed. */
  async #record(plan: TargetPlan, outcome: ExportOutcome): Promise<void> {
    const { state, logger } = this.deps;
    const target = plan.iqn;
    for (const [volumeId, bytes] of outcome.exported) state.volume(volumeId)!.exportedBytes = bytes;
    if (plan.tidChange || outcome.exported.size > 0) await state.save();
    if (plan.tidChange) {
      const { from, why } = plan.tidChange;
      logger.warn({ target, oldTid: from, tid: plan.tid }, why === 'taken' ? 'tid taken by another target in tgtd; using another' : 'tgtd has the target under another tid; following it');
    }
    for (const op of plan.ops) if (op.op === 'setTargetReady') logger.warn({ target, state: op.was }, 'target was not ready in tgtd; set ready');
    for (const volumeId of outcome.reopened) logger.info({ volumeId, target }, 'tgtd re-opened the backing file of the LUN in place');
  }

  /** Unbinds the ACLs and accounts no volume of the target asks for; LUNs the state does not know are only reported. */
  async #prune(plan: TargetPlan): Promise<void> {
    const target = plan.iqn;
    for (const op of plan.prune) {
      await applyAll([op], this.deps.apply);
      if (op.op === 'unbindInitiator' || op.op === 'unbindAddress') this.deps.logger.warn({ target, acl: op.op === 'unbindAddress' ? op.address : op.initiator }, 'removed an ACL the controller state does not know');
    }
    for (const { lun, file } of plan.strayLuns) this.deps.logger.warn({ target, lun, file }, 'target has a LUN the controller state does not know; left alone');
  }

  /** The size of a volume's backing file, grown first when smaller than the volume. */
  async #readyBackingFile(vol: TgtVolumeState): Promise<number> {
    const size = await this.deps.pool.sizeOf(vol.file);
    if (size === undefined) throw new Internal(`backing file ${vol.file} of volume ${vol.id} is missing; the volume's data is gone`);
    const needed = backingBytes(vol.capacityBytes);
    if (size < needed) await this.deps.pool.grow(vol.file, needed);
    return Math.max(size, needed);
  }
}

/** Why a volume's LUN does not show `capacityBytes` (yet). */
export function sizeNotRead(vol: TgtVolumeState, capacityBytes: number, live: TgtTarget | undefined): string {
  return sizeNotReadMessage({ volumeId: vol.id, target: vol.target, lun: vol.lun, exportedBytes: vol.exportedBytes, capacityBytes, loggedIn: loggedIn(live) });
}
