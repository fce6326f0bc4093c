// The tgt backend: volumes are sparse files in a pool directory (pool.ts), exported by a Linux tgt
// daemon (tgtd, driven through tgtadm) as LUNs, each on its own target or as the next free LUN of a
// shared target (params.ts). No initiator can log in to a volume's target until
// ControllerPublishVolume binds the node's initiator name to it; optional per-volume CHAP accounts
// (chap-store.ts) are bound to the target as well.
//
// The driver's own state (state.ts) is the truth; tgtd keeps its configuration only in memory, so on
// start (and periodically) every target, LUN, account and ACL is re-created from it: a tgtd restart
// or a controller restart loses nothing. Every export goes the same way (target-sync.ts): the
// desired configuration (desired.ts) is diffed with what tgtd shows (reconcile.ts) and the operations
// that make them match are run (apply.ts). Locks: vol:<id> around a volume's verbs, tgt:<iqn> around
// everything that reads or changes a target in tgtd.
import { join } from 'node:path';
import type { Config } from '../../config.js';
import type { StringMap, VolumeCondition } from '../../csi/types.js';
import { FailedPrecondition, Internal, InvalidArgument, NotFound, OutOfRange, Unavailable } from '../../errors.js';
import { KeyedMutex } from '../../common/keyed-mutex.js';
import { Reachability } from '../../common/reachability.js';
import { formatPortal, parsePortal } from '../../common/validate.js';
import type { Logger } from '../../log.js';
import type { CommandRunner } from '../../runner.js';
import { sameCredentials, type ChapCredentials } from '../../contract/chap.js';
import { encodeLocation, encodeVolumeContext } from '../../contract/volume-context.js';
import {
  checkSameVolume, EXPANSION_BY_BACKEND,
  type CapacityInfo, type ContentSource, type CreateSpec, type PublishSpec, type VolumeBackend, type VolumeRecord,
} from '../backend.js';
import { checkPublish } from '../capabilities.js';
import { backingBytes } from '../capacity.js';
import { checkIqnPrefix, scsiIdsFor, sharedTargetIqn, volumeIdFor } from '../names.js';
import { tgtLunWwid } from './wwid.js';
import { tgtChapFromSecrets } from './accounts.js';
import { FIRST_VOLUME_LUN, freeLun, freeTid } from './allocation.js';
import { applyAll, type ApplyDeps } from './apply.js';
import { ChapStore } from './chap-store.js';
import { desiredState, desiredTargetOf } from './desired.js';
import { parseTgtParams, type TargetNaming, type TgtParams } from './params.js';
import { Pool } from './pool.js';
import { loggedIn, planRemoval, planUnbind } from './reconcile.js';
import { sizeNotRead, TargetSync } from './target-sync.js';
import { TgtSnapshots } from './snapshots.js';
import { TgtState, type TgtTargetState, type TgtVolumeState } from './state.js';
import { Tgtadm, type TgtTarget } from './tgtadm.js';

const DEFAULT_RECONCILE_INTERVAL_MS = 30_000;

const CONTENT_PENDING: VolumeCondition = Object.freeze({ abnormal: true, message: 'the volume\'s content is still being copied from its source (its CreateVolume has not succeeded yet)' });

/** A volume whose content is not copied in yet has no file to export: its CreateVolume must be retried first. */
function checkFilled(vol: TgtVolumeState): void {
  if (vol.contentPending) throw new FailedPrecondition(CONTENT_PENDING.message);
}

export interface TgtBackendDeps {
  cfg: Config;
  runner: CommandRunner;
  logger: Logger;
  /** how often tgtd is compared with the state and repaired; 0 = only at start. Default 30 s. */
  reconcileIntervalMs?: number;
}

export class TgtBackend implements VolumeBackend {
  readonly expansion = EXPANSION_BY_BACKEND.tgt;
  readonly kind = 'tgt' as const;
  readonly snapshots: TgtSnapshots;
  readonly #logger: Logger;
  readonly #tgtadm: Tgtadm;
  readonly #locks = new KeyedMutex();
  readonly #state: TgtState;
  readonly #chap: ChapStore;
  readonly #pool: Pool;
  readonly #apply: ApplyDeps;
  readonly #naming: TargetNaming;
  readonly #portals: string[];
  readonly #controlPort: number;
  readonly #reconcileIntervalMs: number;
  readonly #sync: TargetSync;
  /** whether tgtd answered the last tgtadm call: its changes are logged once, not at every call */
  readonly #tgtd: Reachability;
  #timer: NodeJS.Timeout | undefined;
  #reconciling: Promise<void> | undefined;
  #loaded = false;

  constructor(deps: TgtBackendDeps) {
    const tgt = deps.cfg.controller.tgt;
    if (!tgt.poolDir.startsWith('/')) throw new InvalidArgument(`controller.tgt.poolDir ${JSON.stringify(tgt.poolDir)} must be an absolute path`);
    if (tgt.portals.length === 0) throw new InvalidArgument('controller.tgt.portals must list at least one portal nodes connect to');
    this.#portals = tgt.portals.map((p, i) => formatPortal(parsePortal(p, `controller.tgt.portals[${i}]`)));
    this.#naming = { iqnPrefix: checkIqnPrefix(tgt.iqnPrefix), sharedTargetName: tgt.sharedTargetName };
    sharedTargetIqn(this.#naming.iqnPrefix, tgt.sharedTargetName); // a bad configured name fails now, not at the first shared volume
    this.#logger = deps.logger.child({ backend: 'tgt' });
    this.#controlPort = tgt.controlPort;
    // back after being unreachable (e.g. restarted, empty): restore its targets now, not at the next period
    this.#tgtd = new Reachability('tgtd', this.#logger, 'calls that need it answer UNAVAILABLE until it is back; the controller keeps serving and restores the targets then', () => {
      this.reconcile().catch((e: Error) => this.#logReconcileFailure(e, 'reconciling tgtd after it came back failed'));
    });
    this.#tgtadm = new Tgtadm(deps.runner, tgt.controlPort, this.#logger, this.#tgtd);
    const dir = join(deps.cfg.stateDir, 'controller', 'tgt');
    this.#state = new TgtState(join(dir, 'volumes.json'));
    this.#chap = new ChapStore(join(dir, 'chap-secrets.json'), this.#tgtadm);
    this.#pool = new Pool(tgt.poolDir);
    this.#apply = { tgtadm: this.#tgtadm, createAccount: (user, volumeId) => this.#chap.createInTgtd(user, volumeId) };
    this.#sync = new TargetSync({ state: this.#state, pool: this.#pool, tgtadm: this.#tgtadm, apply: this.#apply, locks: this.#locks, logger: this.#logger });
    this.#reconcileIntervalMs = deps.reconcileIntervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS;
    this.snapshots = new TgtSnapshots({
      state: this.#state, pool: this.#pool, tgtadm: this.#tgtadm, locks: this.#locks, logger: this.#logger,
      copyTimeoutMs: tgt.copyTimeoutMs, load: () => this.#load(),
    });
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  async start(): Promise<void> {
    await this.#load();
    await this.#pool.ensureDir();
    await this.snapshots.sweep();
    try {
      await this.reconcile();
    } catch (e) {
      // tgtd may come up after the controller: the periodic reconcile (and every publish) repairs later
      this.#logReconcileFailure(e as Error, 'reconciling tgtd from the controller state failed; will retry');
    }
    if (this.#reconcileIntervalMs > 0 && !this.#timer) {
      this.#timer = setInterval(() => {
        this.reconcile().catch((e: Error) => this.#logReconcileFailure(e, 'periodic reconcile of tgtd failed'));
      }, this.#reconcileIntervalMs);
      this.#timer.unref();
    }
  }

  async stop(): Promise<void> {
    this.snapshots.cancelCopies();
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#reconciling?.catch(() => undefined);
  }

  async #load(): Promise<void> {
    if (this.#loaded) return;
    await this.#state.load();
    await this.#chap.load();
    this.#loaded = true;
    this.#logger.info({ volumes: this.#state.volumes().length, targets: this.#state.targetCount() }, 'controller state loaded');
  }

  /** An unreachable tgtd was logged once by #tgtd when it went away: not again at every period. */
  #logReconcileFailure(e: Error, what: string): void {
    if (!(e instanceof Unavailable)) this.#logger.error({ err: e.message }, what);
  }

  /** Whether tgtd answered the last tgtadm call (undefined before the first): for metrics and Probe's caller. */
  reachable(): boolean | undefined {
    return this.#tgtd.state;
  }

  async probe(): Promise<string | null> {
    try {
      await this.#tgtadm.showTargets();
    } catch (e) {
      return e instanceof Unavailable ? e.message : `tgtd is not usable through tgtadm -C ${this.#controlPort}: ${(e as Error).message}`;
    }
    return (await this.#pool.writable()) ? null : `pool directory ${this.#pool.dir} is missing or not writable`;
  }

  checkParameters(parameters: StringMap, secrets: StringMap): void {
    if (this.#params(parameters).chap) tgtChapFromSecrets(secrets, 'CreateVolume secrets');
  }

  #params(parameters: StringMap): TgtParams {
    return parseTgtParams(parameters, this.#naming);
  }

  // ---- queries ---------------------------------------------------------------------------------

  get(id: string): VolumeRecord | undefined {
    const vol = this.#state.volume(id);
    return vol ? this.#record(vol) : undefined;
  }

  list(): VolumeRecord[] {
    return this.#state.volumes().map((v) => this.#record(v));
  }

  #record(vol: TgtVolumeState): VolumeRecord {
    return {
      id: vol.id, name: vol.name, seq: vol.seq, capacityBytes: vol.capacityBytes, capabilities: vol.capabilities,
      parameters: vol.parameters, context: vol.context,
      published: Object.fromEntries(Object.entries(vol.published).map(([n, p]) => [n, { readonly: p.readonly, mode: p.mode }])),
      condition: vol.contentPending ? CONTENT_PENDING : this.#sync.conditionOf(vol.id),
      ...(vol.contentSource ? { contentSource: { ...vol.contentSource } } : {}),
    };
  }

  async capacity(parameters: StringMap): Promise<CapacityInfo> {
    this.#params(parameters);
    const { free } = await this.#pool.space();
    return { availableBytes: free, maximumVolumeBytes: free };
  }

  async condition(id: string): Promise<VolumeCondition> {
    const vol = this.#state.volume(id);
    if (!vol) throw new NotFound(`volume ${id} does not exist`);
    return this.#sync.check(vol);
  }

  // ---- create / delete -------------------------------------------------------------------------

  async create(spec: CreateSpec): Promise<VolumeRecord> {
    await this.#load();
    const id = volumeIdFor('tgt', spec.name);
    return this.#locks.withLock(`vol:${id}`, async () => {
      const existing = this.#state.volume(id);
      if (existing) {
        if (existing.name !== spec.name) throw new Internal(`volume id ${id} of ${JSON.stringify(existing.name)} collides with the name ${JSON.stringify(spec.name)}`);
        checkSameVolume(this.#record(existing), spec);
        // a create that failed half-way (or a crash) left the record: finish the copy and the export now
        if (existing.contentPending) await this.snapshots.fill(existing);
        await this.#locks.withLock(`tgt:${existing.target}`, () => this.#sync.export(existing));
        return this.#record(existing);
      }
      const params = this.#params(spec.parameters);
      const creds = params.chap ? tgtChapFromSecrets(spec.secrets, 'CreateVolume secrets') : undefined;
      await this.#pool.checkSpace(spec.capacityBytes, 0);
      const iqn = params.targetIqn(spec.name);
      if (spec.source) return this.#createFromSource(iqn, id, spec, params, creds, spec.source);
      return this.#locks.withLock(`tgt:${iqn}`, () => this.#createOn(iqn, id, spec, params, creds));
    });
  }

  /**
   * Records a new volume that starts as a copy of `source`, copies it in, and exports it. The copy runs
   * outside tgt:<iqn>: it takes the source's locks (vol:<source> → tgt:<its target> is the publish order).
   */
  async #createFromSource(iqn: string, id: string, spec: CreateSpec, params: TgtParams, creds: ChapCredentials | undefined, source: ContentSource): Promise<VolumeRecord> {
    const vol = await this.#locks.withLock(`tgt:${iqn}`, async () => {
      const v = this.#addVolume(iqn, id, spec, params, creds, await this.#tgtadm.showTargets(), source);
      try {
        if (creds) v.chap = await this.#chap.store(creds);
        await this.#state.save();
      } catch (e) {
        await this.#destroy(v).catch(() => undefined);
        throw e;
      }
      return v;
    });
    try {
      await this.snapshots.fill(vol);
      await this.#locks.withLock(`tgt:${iqn}`, () => this.#sync.export(vol));
    } catch (e) {
      this.#logger.warn({ volumeId: id, err: (e as Error).message }, 'create from a content source failed; removing what was made');
      await this.#locks.withLock(`tgt:${iqn}`, () => this.#destroy(vol)).catch((err: Error) => this.#logger.error({ volumeId: id, err: err.message }, 'cleanup after a failed create failed; a retry or DeleteVolume finishes it'));
      throw e;
    }
    this.#logger.info({ volumeId: id, target: iqn, lun: vol.lun, bytes: vol.capacityBytes, source: `${source.kind} ${source.id}` }, 'volume created from a content source');
    return this.#record(vol);
  }

  /** Adds a new volume's record (not saved) on target `iqn`. No await inside: no other call can take the same tid or LUN. */
  #addVolume(iqn: string, id: string, spec: CreateSpec, params: TgtParams, creds: ChapCredentials | undefined, live: TgtTarget[], source?: ContentSource): TgtVolumeState {
    const { target, lun } = this.#place(iqn, params.shared, live);
    const ids = scsiIdsFor(id);
    return this.#state.add(target, {
      id, name: spec.name, capacityBytes: spec.capacityBytes, file: this.#pool.fileFor(id), target: iqn, lun, ...ids,
      exportedBytes: 0, capabilities: spec.capabilities, parameters: spec.parameters,
      context: { ...encodeVolumeContext({ portals: this.#portals, iqn, lun, wwid: tgtLunWwid(ids.scsiId) }, { fsType: params.fsType, sessionChap: params.chap }) },
      ...(params.chap && !creds ? { chapPending: true } : {}),
      ...(source ? { contentSource: { ...source }, contentPending: true } : {}),
      published: {}, createdAt: new Date().toISOString(),
    });
  }

  /** Records a new volume on target `iqn`, makes its file and exports it; undoes it all on failure. Caller holds tgt:<iqn>. */
  async #createOn(iqn: string, id: string, spec: CreateSpec, params: TgtParams, creds: ChapCredentials | undefined): Promise<VolumeRecord> {
    const live = await this.#tgtadm.showTargets();
    const vol = this.#addVolume(iqn, id, spec, params, creds, live);
    // the record goes to disk first: a crash from here on leaves state that reconcile and a retried
    // CreateVolume complete, never an export the driver does not know about
    try {
      if (creds) vol.chap = await this.#chap.store(creds);
      await this.#state.save();
      await this.#pool.create(vol.file, backingBytes(vol.capacityBytes));
      await this.#sync.export(vol, live);
    } catch (e) {
      this.#logger.warn({ volumeId: id, err: (e as Error).message }, 'create failed; removing what was made');
      await this.#destroy(vol).catch((err: Error) => this.#logger.error({ volumeId: id, err: err.message }, 'cleanup after a failed create failed; a retry or DeleteVolume finishes it'));
      throw e;
    }
    this.#logger.info({ volumeId: id, target: iqn, lun: vol.lun, tid: this.#state.target(iqn)?.tid, bytes: vol.capacityBytes }, 'volume created');
    return this.#record(vol);
  }

  /** The target (known, or new with the lowest tid free) and LUN number of a new volume on target `iqn`. */
  #place(iqn: string, shared: boolean, live: TgtTarget[]): { target: TgtTargetState; lun: number } {
    const target = this.#state.target(iqn) ?? { iqn, tid: freeTid([...this.#state.tids(), ...live.map((t) => t.tid)]), shared };
    const used = [...this.#state.volumesOn(iqn).map((v) => v.lun), ...(live.find((t) => t.name === iqn)?.luns.map((l) => l.lun) ?? [])];
    return { target, lun: shared ? freeLun(used, iqn) : FIRST_VOLUME_LUN };
  }

  async delete(id: string): Promise<void> {
    await this.#load();
    await this.#locks.withLock(`vol:${id}`, async () => {
      const vol = this.#state.volume(id);
      if (!vol) return;
      const nodes = Object.keys(vol.published);
      if (nodes.length > 0) throw new FailedPrecondition(`volume ${id} is still published to node(s) ${nodes.join(', ')}; ControllerUnpublishVolume it first`);
      await this.#locks.withLock(`tgt:${vol.target}`, () => this.#destroy(vol));
      this.#logger.info({ volumeId: id }, 'volume deleted');
    });
  }

  /** Removes a volume's LUN (or its whole target), file, record, and accounts no other volume uses. Caller holds tgt:<target>. */
  async #destroy(vol: TgtVolumeState): Promise<void> {
    const last = this.#state.volumesOn(vol.target).every((v) => v.id === vol.id);
    if (this.#state.target(vol.target)) await applyAll(planRemoval(vol.target, vol.lun, last, await this.#tgtadm.showTargets()), this.#apply);
    await this.#pool.remove(vol.file);
    await this.#pool.remove(this.#pool.partialOf(vol.file));
    this.#state.remove(vol);
    this.#sync.forget(vol.id);
    await this.#state.save();
    for (const user of [vol.chap?.user, vol.chap?.mutualUser]) {
      if (user) await this.#chap.dropIfUnused(user, () => this.#state.usesChapUser(user));
    }
  }

  // ---- publish / unpublish ---------------------------------------------------------------------

  async publish(id: string, spec: PublishSpec): Promise<StringMap> {
    await this.#load();
    return this.#locks.withLock(`vol:${id}`, async () => {
      const vol = this.#state.volume(id);
      if (!vol) throw new NotFound(`volume ${id} does not exist`);
      checkFilled(vol);
      const decision = checkPublish(id, vol.published, spec.nodeId, spec);
      await this.#takeCredentials(vol, tgtChapFromSecrets(spec.secrets, 'ControllerPublishVolume secrets'));
      await this.#locks.withLock(`tgt:${vol.target}`, async () => {
        if (decision === 'new') {
          vol.published[spec.nodeId] = { readonly: spec.readonly, mode: spec.mode, initiator: spec.initiator };
          await this.#state.save();
        }
        try {
          await this.#sync.export(vol);
        } catch (e) {
          if (decision === 'new') {
            delete vol.published[spec.nodeId];
            await this.#state.save().catch(() => undefined);
          }
          throw e;
        }
      });
      this.#logger.info({ volumeId: id, node: spec.nodeId, readonly: spec.readonly }, decision === 'new' ? 'volume published' : 'volume already published');
      return encodeLocation({ portals: this.#portals, iqn: vol.target, lun: vol.lun, wwid: tgtLunWwid(vol.scsiId) });
    });
  }

  /** The CHAP credentials of a ControllerPublishVolume: a volume created without any takes them; others than its own are refused. */
  async #takeCredentials(vol: TgtVolumeState, creds: ChapCredentials | undefined): Promise<void> {
    if (vol.chapPending) {
      if (!creds) throw new FailedPrecondition(`volume ${vol.id} requires CHAP but neither the CreateVolume nor the ControllerPublishVolume secrets carry node.session.auth.username/password; set the provisioner or attacher secret of the StorageClass`);
      vol.chap = await this.#chap.store(creds);
      delete vol.chapPending;
      await this.#state.save();
    } else if (creds && vol.chap) {
      const stored = this.#chap.credentialsOf(vol.chap);
      if (stored && !sameCredentials(stored, creds)) {
        throw new FailedPrecondition(`the ControllerPublishVolume secrets carry other CHAP credentials than volume ${vol.id} was created with (user ${vol.chap.user}); a node using them would fail to log in`);
      }
    }
  }

  async unpublish(id: string, nodeId: string | undefined): Promise<void> {
    await this.#load();
    await this.#locks.withLock(`vol:${id}`, async () => {
      const vol = this.#state.volume(id);
      if (!vol) return;
      const nodes = nodeId === undefined ? Object.keys(vol.published) : [nodeId].filter((n) => vol.published[n]);
      if (nodes.length === 0) return;
      await this.#locks.withLock(`tgt:${vol.target}`, async () => {
        const live = await this.#tgtadm.showTargets();
        const removed = nodes.map((n) => [n, vol.published[n]!] as const);
        for (const [n] of removed) delete vol.published[n];
        // on a shared target an ACL stays while another of its volumes is published to that node
        const target = desiredTargetOf(desiredState(this.#state.doc), vol.target);
        try {
          await applyAll(planUnbind(target, vol.target, live, removed.map(([, p]) => p.initiator)), this.#apply);
        } catch (e) {
          for (const [n, p] of removed) vol.published[n] = p;
          throw e;
        }
        await this.#state.save();
      });
      this.#logger.info({ volumeId: id, nodes }, 'volume unpublished');
    });
  }

  // ---- expand ----------------------------------------------------------------------------------

  /**
   * Grows the backing file and makes tgtd read its new size in place (the LUN is never deleted).
   * tgtd can only do that by re-opening the file, which fails the commands in flight, so while an
   * initiator is logged in to the target nothing is changed and the call fails with FAILED_PRECONDITION
   * (the volume is in use: the resizer retries once it no longer is).
   */
  async expand(id: string, capacityBytes: number): Promise<VolumeRecord> {
    await this.#load();
    return this.#locks.withLock(`vol:${id}`, async () => {
      const vol = this.#state.volume(id);
      if (!vol) throw new NotFound(`volume ${id} does not exist`);
      checkFilled(vol);
      await this.#locks.withLock(`tgt:${vol.target}`, async () => {
        const live = await this.#tgtadm.showTargets();
        if (capacityBytes > vol.capacityBytes) {
          const target = live.find((t) => t.name === vol.target);
          if (loggedIn(target).length > 0) throw new FailedPrecondition(sizeNotRead(vol, capacityBytes, target));
          await this.#pool.checkSpace(capacityBytes, vol.capacityBytes, OutOfRange);
          await this.#pool.grow(vol.file, backingBytes(capacityBytes));
          vol.capacityBytes = capacityBytes;
          await this.#state.save();
        }
        // also when the size was reached before: a size tgtd did not read last time is read now
        const condition = await this.#sync.export(vol, live);
        if (vol.exportedBytes < backingBytes(vol.capacityBytes)) throw new FailedPrecondition(condition.message);
      });
      this.#logger.info({ volumeId: id, bytes: vol.capacityBytes }, 'volume expanded');
      return this.#record(vol);
    });
  }

  // ---- reconcile -------------------------------------------------------------------------------

  reconcile(): Promise<void> {
    this.#reconciling ??= this.#load().then(() => this.#sync.reconcileAll()).finally(() => { this.#reconciling = undefined; });
    return this.#reconciling;
  }
}
