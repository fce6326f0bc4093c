// The tgt backend: volumes are sparse files in a pool directory, exported by a Linux tgt daemon
// (tgtd, driven through tgtadm) as LUNs, each on its own target or as the next free LUN of a shared
// target. No initiator can log in to a volume's target until ControllerPublishVolume binds the node's
// initiator name to it; optional per-volume CHAP accounts are bound to the target as well.
//
// The driver's own state (JSON under <stateDir>/controller/tgt/) is the truth; tgtd keeps its
// configuration only in memory, so on start (and periodically) every target, LUN, account and ACL is
// re-created from the state: a tgtd restart or a controller restart loses nothing. CHAP passwords are
// needed for that, so they are kept apart in a 0600 file in the same directory, never in the volume
// state, a volume_context or a log line.
//
// StorageClass parameters:
//   targetMode:   "dedicated" (default: one target per volume) or "shared" (LUNs of one target)
//   sharedTarget: name after "<iqnPrefix>:" of the shared target (default controller.tgt.sharedTargetName)
//   chap:         "true" = session CHAP; credentials from the CreateVolume secrets (provisioner secret),
//                 or failing that the first ControllerPublishVolume secrets (attacher secret), keys
//                 node.session.auth.username/password (+ username_in/password_in for mutual CHAP)
//   fsType:       passed to the node in volume_context
// tgt binds ACLs and accounts per target, not per LUN: a node to which one LUN of a shared target is
// published can log in to the target and see its other LUNs, and CHAP is refused for shared targets.
// Use dedicated targets where volumes must be isolated from each other.
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, open, stat, statfs, truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../../config.js';
import type { StringMap, VolumeCondition } from '../../csi/types.js';
import { errnoCode, FailedPrecondition, Internal, InvalidArgument, NotFound, OutOfRange, ResourceExhausted } from '../../errors.js';
import { KeyedMutex } from '../../common/keyed-mutex.js';
import { Tgtadm, type TgtLun, type TgtTarget } from './tgtadm.js';
import { formatPortal, parseFsType, parsePortal, parseIscsiName } from '../../common/validate.js';
import { Secret, type Logger } from '../../log.js';
import type { CommandRunner } from '../../runner.js';
import {
  checkSameVolume, EXPANSION_BY_BACKEND, HEALTHY, unknownParameters,
  type CapacityInfo, type CreateSpec, type PublishSpec, type VolumeBackend, type VolumeRecord,
} from '../backend.js';
import type { CapabilitySummary, Publication } from '../capabilities.js';
import { checkPublish } from '../capabilities.js';
import { backingBytes, formatBytes } from '../capacity.js';
import { sameCredentials, type ChapCredentials } from '../../contract/chap.js';
import { encodeLocation, encodeVolumeContext } from '../../contract/volume-context.js';
import { tgtChapFromSecrets } from './accounts.js';
import {
  backingFileNameFor, checkIqnPrefix, dedicatedTargetIqn, scsiIdsFor, sharedTargetIqn, volumeIdFor,
} from '../names.js';
import { StateFile } from '../state-file.js';

export const TGT_PARAMS = {
  targetMode: 'targetMode',
  sharedTarget: 'sharedTarget',
  chap: 'chap',
  fsType: 'fsType',
} as const;

const STATE_VERSION = 1;
const DEFAULT_RECONCILE_INTERVAL_MS = 30_000;
const POOL_FILE_MODE = 0o600;
const POOL_DIR_MODE = 0o700;
/** LUN 0 of every tgt target is its controller LUN; volumes start at 1. */
const FIRST_VOLUME_LUN = 1;
const MAX_TGT_LUN = 16383;

interface TgtPublication extends Publication {
  initiator: string;
}

interface TgtVolumeState {
  id: string;
  name: string;
  seq: number;
  capacityBytes: number;
  /** absolute path of the backing file */
  file: string;
  target: string;
  lun: number;
  scsiId: string;
  scsiSn: string;
  /** file size tgtd last read for this LUN: lower than the file after a growth whose reload did not happen */
  exportedBytes: number;
  capabilities: CapabilitySummary[];
  parameters: StringMap;
  context: StringMap;
  /** CHAP account names (the passwords live in the secrets file) */
  chap?: { user: string; mutualUser?: string };
  /** created with chap: "true" but no credentials yet: they must come with ControllerPublishVolume */
  chapPending?: boolean;
  published: Record<string, TgtPublication>;
  createdAt: string;
}

interface TgtTargetState {
  iqn: string;
  tid: number;
  shared: boolean;
}

interface TgtStateDoc {
  version: number;
  nextSeq: number;
  targets: Record<string, TgtTargetState>;
  volumes: Record<string, TgtVolumeState>;
}

interface ChapDoc {
  version: number;
  accounts: Record<string, { password: string }>;
}

interface TgtParams {
  shared: boolean;
  targetIqn: (name: string) => string;
  chap: boolean;
  fsType?: string;
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
  readonly #cfg: Config;
  readonly #logger: Logger;
  readonly #tgtadm: Tgtadm;
  readonly #locks = new KeyedMutex();
  readonly #dir: string;
  readonly #poolDir: string;
  readonly #portals: string[];
  readonly #iqnPrefix: string;
  readonly #reconcileIntervalMs: number;
  #state: TgtStateDoc = { version: STATE_VERSION, nextSeq: 1, targets: {}, volumes: {} };
  #chap: ChapDoc = { version: STATE_VERSION, accounts: {} };
  readonly #stateFile: StateFile<TgtStateDoc>;
  readonly #chapFile: StateFile<ChapDoc>;
  readonly #conditions = new Map<string, VolumeCondition>();
  #timer: NodeJS.Timeout | undefined;
  #reconciling: Promise<void> | undefined;
  #loaded = false;

  constructor(deps: TgtBackendDeps) {
    const tgt = deps.cfg.controller.tgt;
    this.#cfg = deps.cfg;
    this.#logger = deps.logger.child({ backend: 'tgt' });
    this.#tgtadm = new Tgtadm(deps.runner, tgt.controlPort, this.#logger);
    this.#dir = join(deps.cfg.stateDir, 'controller', 'tgt');
    this.#poolDir = tgt.poolDir;
    if (!this.#poolDir.startsWith('/')) throw new InvalidArgument(`controller.tgt.poolDir ${JSON.stringify(this.#poolDir)} must be an absolute path`);
    if (tgt.portals.length === 0) throw new InvalidArgument('controller.tgt.portals must list at least one portal nodes connect to');
    this.#portals = tgt.portals.map((p, i) => formatPortal(parsePortal(p, `controller.tgt.portals[${i}]`)));
    this.#iqnPrefix = checkIqnPrefix(tgt.iqnPrefix);
    sharedTargetIqn(this.#iqnPrefix, tgt.sharedTargetName);
    this.#reconcileIntervalMs = deps.reconcileIntervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS;
    this.#stateFile = new StateFile(join(this.#dir, 'volumes.json'), () => this.#state);
    this.#chapFile = new StateFile(join(this.#dir, 'chap-secrets.json'), () => this.#chap);
  }

  // ---- lifecycle -------------------------------------------------------------------------------

  async start(): Promise<void> {
    await this.#load();
    await mkdir(this.#poolDir, { recursive: true, mode: POOL_DIR_MODE });
    try {
      await this.reconcile();
    } catch (e) {
      // tgtd may come up after the controller: the periodic reconcile (and every publish) repairs later
      this.#logger.error({ err: (e as Error).message }, 'reconciling tgtd from the controller state failed; will retry');
    }
    if (this.#reconcileIntervalMs > 0 && !this.#timer) {
      this.#timer = setInterval(() => {
        this.reconcile().catch((e: Error) => this.#logger.error({ err: e.message }, 'periodic reconcile of tgtd failed'));
      }, this.#reconcileIntervalMs);
      this.#timer.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#reconciling?.catch(() => undefined);
  }

  async #load(): Promise<void> {
    if (this.#loaded) return;
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const doc = (await this.#stateFile.load()) as TgtStateDoc | undefined;
    if (doc) {
      if (doc.version !== STATE_VERSION) throw new Internal(`controller state ${this.#stateFile.path} has version ${doc.version}; this driver reads version ${STATE_VERSION}`);
      this.#state = doc;
    }
    const chap = (await this.#chapFile.load()) as ChapDoc | undefined;
    if (chap) this.#chap = chap;
    this.#loaded = true;
    this.#logger.info({ volumes: Object.keys(this.#state.volumes).length, targets: Object.keys(this.#state.targets).length }, 'controller state loaded');
  }

  async probe(): Promise<string | null> {
    try {
      await this.#tgtadm.showTargets();
    } catch (e) {
      return `tgtd is not reachable through tgtadm -C ${this.#cfg.controller.tgt.controlPort}: ${(e as Error).message}`;
    }
    try {
      await access(this.#poolDir, fsConstants.W_OK);
    } catch {
      return `pool directory ${this.#poolDir} is missing or not writable`;
    }
    return null;
  }

  // ---- parameters ------------------------------------------------------------------------------

  #parseParams(parameters: StringMap): TgtParams {
    const unknown = unknownParameters(parameters, Object.values(TGT_PARAMS));
    if (unknown.length > 0) throw new InvalidArgument(`unknown StorageClass parameter(s) ${unknown.join(', ')} for the tgt backend; known: ${Object.values(TGT_PARAMS).join(', ')}`);
    const mode = parameters[TGT_PARAMS.targetMode] ?? 'dedicated';
    if (mode !== 'dedicated' && mode !== 'shared') throw new InvalidArgument(`parameter ${TGT_PARAMS.targetMode} must be "dedicated" or "shared", got ${JSON.stringify(mode)}`);
    const shared = mode === 'shared';
    const sharedName = parameters[TGT_PARAMS.sharedTarget];
    if (sharedName !== undefined && !shared) throw new InvalidArgument(`parameter ${TGT_PARAMS.sharedTarget} needs ${TGT_PARAMS.targetMode}: shared`);
    const sharedIqn = shared ? sharedTargetIqn(this.#iqnPrefix, sharedName ?? this.#cfg.controller.tgt.sharedTargetName) : '';
    const chapText = parameters[TGT_PARAMS.chap] ?? 'false';
    if (chapText !== 'true' && chapText !== 'false') throw new InvalidArgument(`parameter ${TGT_PARAMS.chap} must be "true" or "false", got ${JSON.stringify(chapText)}`);
    const chap = chapText === 'true';
    if (chap && shared) throw new InvalidArgument(`parameter ${TGT_PARAMS.chap}: "true" needs a dedicated target: tgt binds CHAP accounts per target, so one account would open every LUN of the shared target`);
    const fsType = parameters[TGT_PARAMS.fsType];
    if (fsType !== undefined) parseFsType(fsType);
    return {
      shared,
      targetIqn: (name) => (shared ? sharedIqn : dedicatedTargetIqn(this.#iqnPrefix, name)),
      chap,
      ...(fsType !== undefined ? { fsType } : {}),
    };
  }

  checkParameters(parameters: StringMap, secrets: StringMap): void {
    const params = this.#parseParams(parameters);
    if (params.chap) tgtChapFromSecrets(secrets, 'CreateVolume secrets');
  }

  // ---- queries ---------------------------------------------------------------------------------

  get(id: string): VolumeRecord | undefined {
    const vol = this.#state.volumes[id];
    return vol ? this.#record(vol) : undefined;
  }

  list(): VolumeRecord[] {
    return Object.values(this.#state.volumes).sort((a, b) => a.seq - b.seq).map((v) => this.#record(v));
  }

  #record(vol: TgtVolumeState): VolumeRecord {
    return {
      id: vol.id,
      name: vol.name,
      seq: vol.seq,
      capacityBytes: vol.capacityBytes,
      capabilities: vol.capabilities,
      parameters: vol.parameters,
      context: vol.context,
      published: Object.fromEntries(Object.entries(vol.published).map(([n, p]) => [n, { readonly: p.readonly, mode: p.mode }])),
      condition: this.#conditions.get(vol.id) ?? HEALTHY,
    };
  }

  async capacity(parameters: StringMap): Promise<CapacityInfo> {
    this.#parseParams(parameters);
    const { free } = await this.#space();
    return { availableBytes: free, maximumVolumeBytes: free };
  }

  async condition(id: string): Promise<VolumeCondition> {
    const vol = this.#state.volumes[id];
    if (!vol) throw new NotFound(`volume ${id} does not exist`);
    const problems: string[] = [];
    try {
      const st = await stat(vol.file);
      if (st.size < backingBytes(vol.capacityBytes)) problems.push(`backing file ${vol.file} is ${st.size} bytes, smaller than the volume`);
    } catch {
      problems.push(`backing file ${vol.file} is missing`);
    }
    try {
      const live = (await this.#tgtadm.showTargets()).find((t) => t.name === vol.target);
      if (!live) problems.push(`target ${vol.target} is not configured in tgtd`);
      else if (!live.luns.some((l) => l.lun === vol.lun)) problems.push(`LUN ${vol.lun} of target ${vol.target} is not configured in tgtd`);
      else if (vol.exportedBytes < backingBytes(vol.capacityBytes)) problems.push(sizeNotReadMessage(vol, live, vol.capacityBytes));
    } catch (e) {
      problems.push(`tgtd cannot be queried: ${(e as Error).message}`);
    }
    const cond = problems.length > 0 ? { abnormal: true, message: problems.join('; ') } : HEALTHY;
    this.#setCondition(vol.id, cond);
    return cond;
  }

  #setCondition(id: string, cond: VolumeCondition): void {
    if (cond.abnormal) this.#conditions.set(id, cond);
    else this.#conditions.delete(id);
  }

  // ---- create / delete -------------------------------------------------------------------------

  async create(spec: CreateSpec): Promise<VolumeRecord> {
    await this.#load();
    const id = volumeIdFor('tgt', spec.name);
    return this.#locks.withLock(`vol:${id}`, async () => {
      const existing = this.#state.volumes[id];
      if (existing) {
        if (existing.name !== spec.name) throw new Internal(`volume id ${id} of ${JSON.stringify(existing.name)} collides with the name ${JSON.stringify(spec.name)}`);
        checkSameVolume(this.#record(existing), spec);
        // a create that failed half-way (or a crash) left the record: finish the export now
        await this.#locks.withLock(`tgt:${existing.target}`, () => this.#exportVolume(existing));
        return this.#record(existing);
      }
      const params = this.#parseParams(spec.parameters);
      const creds = params.chap ? tgtChapFromSecrets(spec.secrets, 'CreateVolume secrets') : undefined;
      await this.#checkSpace(spec.capacityBytes, 0);
      const iqn = params.targetIqn(spec.name);
      return this.#locks.withLock(`tgt:${iqn}`, async () => {
        const live = await this.#tgtadm.showTargets();
        const target = this.#state.targets[iqn] ?? this.#newTarget(iqn, params.shared, live);
        const lun = params.shared ? this.#freeLun(iqn, live) : FIRST_VOLUME_LUN;
        const file = join(this.#poolDir, backingFileNameFor(id));
        const vol: TgtVolumeState = {
          id,
          name: spec.name,
          seq: this.#state.nextSeq,
          capacityBytes: spec.capacityBytes,
          file,
          target: target.iqn,
          lun,
          ...scsiIdsFor(id),
          exportedBytes: 0,
          capabilities: spec.capabilities,
          parameters: spec.parameters,
          context: {
            ...encodeVolumeContext({ portals: this.#portals, iqn: target.iqn, lun }, { fsType: params.fsType, sessionChap: params.chap }),
          },
          ...(params.chap && !creds ? { chapPending: true } : {}),
          published: {},
          createdAt: new Date().toISOString(),
        };
        // the record goes to disk first: a crash from here on leaves state that reconcile and a
        // retried CreateVolume complete, never an export the driver does not know about
        this.#state.targets[target.iqn] = target;
        this.#state.volumes[id] = vol;
        this.#state.nextSeq += 1;
        try {
          if (creds) await this.#storeCredentials(vol, creds);
          await this.#stateFile.save();
          await this.#createBackingFile(vol);
          await this.#exportVolume(vol, live);
        } catch (e) {
          this.#logger.warn({ volumeId: id, err: (e as Error).message }, 'create failed; removing what was made');
          await this.#destroy(vol).catch((err: Error) => this.#logger.error({ volumeId: id, err: err.message }, 'cleanup after a failed create failed; a retry or DeleteVolume finishes it'));
          throw e;
        }
        this.#logger.info({ volumeId: id, target: vol.target, lun, tid: target.tid, bytes: vol.capacityBytes }, 'volume created');
        return this.#record(vol);
      });
    });
  }

  async delete(id: string): Promise<void> {
    await this.#load();
    await this.#locks.withLock(`vol:${id}`, async () => {
      const vol = this.#state.volumes[id];
      if (!vol) return;
      const nodes = Object.keys(vol.published);
      if (nodes.length > 0) throw new FailedPrecondition(`volume ${id} is still published to node(s) ${nodes.join(', ')}; ControllerUnpublishVolume it first`);
      await this.#locks.withLock(`tgt:${vol.target}`, () => this.#destroy(vol));
      this.#logger.info({ volumeId: id }, 'volume deleted');
    });
  }

  /** Removes a volume's LUN (or its whole target), accounts no other volume uses, file and record. Caller holds tgt:<target>. */
  async #destroy(vol: TgtVolumeState): Promise<void> {
    const target = this.#state.targets[vol.target];
    const others = this.#volumesOn(vol.target).filter((v) => v.id !== vol.id);
    if (target) {
      const live = (await this.#tgtadm.showTargets()).find((t) => t.name === target.iqn);
      if (live && others.length === 0) await this.#tgtadm.deleteTarget(live.tid);
      else if (live) await this.#tgtadm.deleteLun(live.tid, vol.lun);
    }
    await unlink(vol.file).catch((e) => {
      if (errnoCode(e) !== 'ENOENT') throw new Internal(`cannot remove backing file ${vol.file}: ${(e as Error).message}`);
    });
    delete this.#state.volumes[vol.id];
    if (others.length === 0) delete this.#state.targets[vol.target];
    this.#conditions.delete(vol.id);
    await this.#stateFile.save();
    for (const user of [vol.chap?.user, vol.chap?.mutualUser]) {
      if (user) await this.#dropAccountIfUnused(user);
    }
  }

  // ---- publish / unpublish ---------------------------------------------------------------------

  async publish(id: string, spec: PublishSpec): Promise<StringMap> {
    await this.#load();
    return this.#locks.withLock(`vol:${id}`, async () => {
      const vol = this.#state.volumes[id];
      if (!vol) throw new NotFound(`volume ${id} does not exist`);
      const decision = checkPublish(id, vol.published, spec.nodeId, spec);
      const creds = tgtChapFromSecrets(spec.secrets, 'ControllerPublishVolume secrets');
      if (vol.chapPending) {
        if (!creds) throw new FailedPrecondition(`volume ${id} requires CHAP but neither the CreateVolume nor the ControllerPublishVolume secrets carry node.session.auth.username/password; set the provisioner or attacher secret of the StorageClass`);
        await this.#storeCredentials(vol, creds);
        delete vol.chapPending;
        await this.#stateFile.save();
      } else if (creds && vol.chap) {
        const stored = this.#credentialsOf(vol);
        if (stored && !sameCredentials(stored, creds)) {
          throw new FailedPrecondition(`the ControllerPublishVolume secrets carry other CHAP credentials than volume ${id} was created with (user ${vol.chap.user}); a node using them would fail to log in`);
        }
      }
      await this.#locks.withLock(`tgt:${vol.target}`, async () => {
        if (decision === 'new') {
          vol.published[spec.nodeId] = { readonly: spec.readonly, mode: spec.mode, initiator: spec.initiator };
          await this.#stateFile.save();
        }
        try {
          await this.#exportVolume(vol);
        } catch (e) {
          if (decision === 'new') {
            delete vol.published[spec.nodeId];
            await this.#stateFile.save().catch(() => undefined);
          }
          throw e;
        }
      });
      this.#logger.info({ volumeId: id, node: spec.nodeId, readonly: spec.readonly }, decision === 'new' ? 'volume published' : 'volume already published');
      return encodeLocation({ portals: this.#portals, iqn: vol.target, lun: vol.lun });
    });
  }

  async unpublish(id: string, nodeId: string | undefined): Promise<void> {
    await this.#load();
    await this.#locks.withLock(`vol:${id}`, async () => {
      const vol = this.#state.volumes[id];
      if (!vol) return;
      const nodes = nodeId === undefined ? Object.keys(vol.published) : [nodeId].filter((n) => vol.published[n]);
      if (nodes.length === 0) return;
      await this.#locks.withLock(`tgt:${vol.target}`, async () => {
        const live = (await this.#tgtadm.showTargets()).find((t) => t.name === vol.target);
        for (const node of nodes) {
          const initiator = vol.published[node]!.initiator;
          // on a shared target the ACL stays while another of its volumes is published to that node
          const stillUsed = this.#volumesOn(vol.target).some((v) => v.id !== vol.id && Object.values(v.published).some((p) => p.initiator === initiator));
          if (live && !stillUsed) await this.#tgtadm.unbindInitiator(live.tid, initiator);
          delete vol.published[node];
        }
        await this.#stateFile.save();
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
      const vol = this.#state.volumes[id];
      if (!vol) throw new NotFound(`volume ${id} does not exist`);
      await this.#locks.withLock(`tgt:${vol.target}`, async () => {
        const liveAll = await this.#tgtadm.showTargets();
        const live = liveAll.find((t) => t.name === vol.target);
        if (capacityBytes > vol.capacityBytes) {
          if (live && live.nexuses.length > 0) throw new FailedPrecondition(sizeNotReadMessage(vol, live, capacityBytes));
          await this.#checkSpace(capacityBytes, vol.capacityBytes, OutOfRange);
          await this.#growFile(vol.file, backingBytes(capacityBytes));
          vol.capacityBytes = capacityBytes;
          await this.#stateFile.save();
        }
        // also when the size was reached before: a size tgtd did not read last time is read now
        await this.#exportVolume(vol, liveAll);
        if (vol.exportedBytes < backingBytes(vol.capacityBytes)) {
          throw new FailedPrecondition(sizeNotReadMessage(vol, liveAll.find((t) => t.name === vol.target), vol.capacityBytes));
        }
      });
      this.#logger.info({ volumeId: id, bytes: vol.capacityBytes }, 'volume expanded');
      return this.#record(vol);
    });
  }

  // ---- reconcile -------------------------------------------------------------------------------

  reconcile(): Promise<void> {
    this.#reconciling ??= this.#reconcileOnce().finally(() => { this.#reconciling = undefined; });
    return this.#reconciling;
  }

  async #reconcileOnce(): Promise<void> {
    await this.#load();
    const live = await this.#tgtadm.showTargets();
    let repaired = 0;
    for (const iqn of Object.keys(this.#state.targets)) {
      const seen = live.find((t) => t.name === iqn);
      if (seen && !this.#needsRepair(iqn, seen)) continue;
      await this.#locks.withLock(`tgt:${iqn}`, async () => {
        if (!this.#state.targets[iqn]) return; // deleted meanwhile
        const fresh = await this.#tgtadm.showTargets();
        for (const vol of this.#volumesOn(iqn)) {
          try {
            // exportVolume records what it creates in `fresh`, so later volumes of the target see it
            await this.#exportVolume(vol, fresh);
          } catch (e) {
            this.#setCondition(vol.id, { abnormal: true, message: (e as Error).message });
            this.#logger.error({ volumeId: vol.id, err: (e as Error).message }, 'cannot restore volume in tgtd');
          }
        }
        await this.#pruneTarget(iqn);
        repaired += 1;
      });
    }
    if (repaired > 0) this.#logger.info({ targets: repaired }, 'tgtd reconciled from the controller state');
  }

  /** Whether a live target differs from the state (missing LUN, ACL, account, a stale size, left offline). */
  #needsRepair(iqn: string, live: TgtTarget): boolean {
    const target = this.#state.targets[iqn]!;
    if (live.tid !== target.tid || live.state !== 'ready') return true;
    const vols = this.#volumesOn(iqn);
    const acls = new Set(vols.flatMap((v) => Object.values(v.published).map((p) => p.initiator)));
    const users = new Set(vols.flatMap((v) => (v.chap ? [v.chap.user] : [])));
    const outgoing = new Set(vols.flatMap((v) => (v.chap?.mutualUser ? [v.chap.mutualUser] : [])));
    return vols.some((v) => {
      const lun = live.luns.find((l) => l.lun === v.lun);
      return !lun || lun.backingStorePath !== v.file || v.exportedBytes < backingBytes(v.capacityBytes);
    })
      || !sameSet(acls, live.acls) || !sameSet(users, live.accounts) || !sameSet(outgoing, live.outgoingAccounts)
      || this.#conditionsOn(iqn);
  }

  #conditionsOn(iqn: string): boolean {
    return this.#volumesOn(iqn).some((v) => this.#conditions.get(v.id)?.abnormal);
  }

  /** Unbinds ACLs and accounts of a target that no volume in the state asks for. Caller holds tgt:<iqn>. */
  async #pruneTarget(iqn: string): Promise<void> {
    const live = (await this.#tgtadm.showTargets()).find((t) => t.name === iqn);
    if (!live) return;
    const vols = this.#volumesOn(iqn);
    const acls = new Set(vols.flatMap((v) => Object.values(v.published).map((p) => p.initiator)));
    for (const acl of live.acls) {
      if (acls.has(acl)) continue;
      if (isIscsiName(acl)) await this.#tgtadm.unbindInitiator(live.tid, acl);
      else await this.#tgtadm.unbindAddress(live.tid, acl);
      this.#logger.warn({ target: iqn, acl }, 'removed an ACL the controller state does not know');
    }
    const users = new Set(vols.flatMap((v) => (v.chap ? [v.chap.user] : [])));
    for (const user of live.accounts.filter((u) => !users.has(u))) await this.#tgtadm.unbindAccount(live.tid, user);
    const outgoing = new Set(vols.flatMap((v) => (v.chap?.mutualUser ? [v.chap.mutualUser] : [])));
    for (const user of live.outgoingAccounts.filter((u) => !outgoing.has(u))) await this.#tgtadm.unbindAccount(live.tid, user, true);
    for (const lun of live.luns) {
      if (lun.lun !== 0 && !vols.some((v) => v.lun === lun.lun)) {
        this.#logger.warn({ target: iqn, lun: lun.lun, file: lun.backingStorePath }, 'target has a LUN the controller state does not know; left alone');
      }
    }
  }

  /**
   * Makes tgtd export one volume as the state says: target (with its stable tid), LUN with the file's
   * current size and the volume's SCSI ids, CHAP accounts, and an ACL entry per published node.
   * Idempotent. Never deletes a LUN: a missing one is created; a grown file is re-read in place, and
   * only while no initiator is logged in to the target (until then the volume's condition says so);
   * a LUN on another file is pointed at the volume's only while no initiator is logged in and the
   * volume is published nowhere, else it is left alone and an error is thrown. Caller holds tgt:<target>.
   */
  async #exportVolume(vol: TgtVolumeState, known?: TgtTarget[]): Promise<void> {
    const target = this.#state.targets[vol.target];
    if (!target) throw new Internal(`controller state lists volume ${vol.id} on target ${vol.target}, which it does not list`);
    const liveAll = known ?? (await this.#tgtadm.showTargets());
    let live = liveAll.find((t) => t.name === target.iqn);
    let changed = false;
    if (!live) {
      if (liveAll.some((t) => t.tid === target.tid)) {
        const old = target.tid;
        target.tid = this.#freeTid(liveAll);
        this.#logger.warn({ target: target.iqn, oldTid: old, tid: target.tid }, 'tid taken by another target in tgtd; using another');
      }
      await this.#tgtadm.newTarget(target.tid, target.iqn);
      live = { tid: target.tid, name: target.iqn, state: 'ready', nexuses: [], luns: [], accounts: [], outgoingAccounts: [], acls: [] };
      liveAll.push(live);
      changed = true;
    } else if (live.tid !== target.tid) {
      target.tid = live.tid; // tgtd knows the target under another tid (made by hand): follow it
      changed = true;
    }
    if (live.state !== 'ready') {
      // refuses logins, holds back commands: left so by an interrupted reopen (or by hand)
      await this.#tgtadm.setTargetState(live.tid, 'ready');
      this.#logger.warn({ target: target.iqn, state: live.state }, 'target was not ready in tgtd; set ready');
      live.state = 'ready';
    }
    const fileBytes = await this.#fileSize(vol.file);
    if (fileBytes === undefined) {
      throw new Internal(`backing file ${vol.file} of volume ${vol.id} is missing; the volume's data is gone`);
    }
    if (fileBytes < backingBytes(vol.capacityBytes)) await this.#growFile(vol.file, backingBytes(vol.capacityBytes));
    const size = Math.max(fileBytes, backingBytes(vol.capacityBytes));
    const lun = live.luns.find((l) => l.lun === vol.lun);
    let condition = HEALTHY;
    if (!lun) {
      await this.#tgtadm.newLun(live.tid, vol.lun, vol.file);
      await this.#tgtadm.setLunIds(live.tid, vol.lun, vol.scsiId, vol.scsiSn);
      live.luns.push(exportedLun(vol, size));
      vol.exportedBytes = size;
      changed = true;
    } else if (lun.backingStorePath !== vol.file) {
      const nodes = Object.keys(vol.published);
      if (live.nexuses.length > 0 || nodes.length > 0 || !(await this.#reopenLun(live, vol, size))) {
        throw new FailedPrecondition(`LUN ${vol.lun} of target ${vol.target} exports ${lun.backingStorePath ?? 'no file'}, not the volume's ${vol.file}; left alone while ${nodes.length > 0 ? `the volume is published to ${nodes.join(', ')}` : 'an initiator is logged in to the target'}: an initiator may be using that data`);
      }
      changed = true;
    } else if (vol.exportedBytes < size) {
      if (live.nexuses.length === 0 && (await this.#reopenLun(live, vol, size))) changed = true;
      else condition = { abnormal: true, message: sizeNotReadMessage(vol, live, vol.capacityBytes) };
    }
    if (vol.chap) {
      const creds = this.#credentialsOf(vol);
      if (!creds) throw new Internal(`CHAP password of account ${vol.chap.user} (volume ${vol.id}) is missing from ${this.#chapFile.path}; create the volume's account again with tgtadm or restore that file`);
      // an account bound to the target exists: only an unbound one is created (its password is argv)
      if (!live.accounts.includes(creds.username)) {
        await this.#ensureAccount(creds.username, creds.password);
        await this.#tgtadm.bindAccount(live.tid, creds.username);
        live.accounts.push(creds.username);
      }
      if (creds.usernameIn && creds.passwordIn) {
        if (!live.outgoingAccounts.includes(creds.usernameIn)) {
          await this.#ensureAccount(creds.usernameIn, creds.passwordIn);
          await this.#tgtadm.bindAccount(live.tid, creds.usernameIn, true);
          live.outgoingAccounts.push(creds.usernameIn);
        }
      }
    }
    for (const pub of Object.values(vol.published)) {
      if (!live.acls.includes(pub.initiator)) {
        await this.#tgtadm.bindInitiator(live.tid, pub.initiator);
        live.acls.push(pub.initiator);
      }
    }
    this.#setCondition(vol.id, condition);
    if (changed) await this.#stateFile.save();
  }

  /**
   * Has tgtd re-open the volume's file for its LUN (new size, or the volume's file instead of
   * another), keeping the LUN and setting the volume's SCSI ids. Logins to the target are refused
   * meanwhile, so no session can start between the check that there is none and the re-open; false
   * (nothing done) if one is there after all. Caller holds tgt:<target> and saw no nexus in `live`.
   */
  async #reopenLun(live: TgtTarget, vol: TgtVolumeState, size: number): Promise<boolean> {
    await this.#tgtadm.setTargetState(live.tid, 'offline');
    try {
      const now = (await this.#tgtadm.showTargets()).find((t) => t.tid === live.tid);
      if (now && now.nexuses.length > 0) {
        live.nexuses = now.nexuses;
        return false;
      }
      await this.#tgtadm.reopenLun(live.tid, vol.lun, vol.file);
      await this.#tgtadm.setLunIds(live.tid, vol.lun, vol.scsiId, vol.scsiSn);
    } finally {
      await this.#tgtadm.setTargetState(live.tid, 'ready');
    }
    live.luns = [...live.luns.filter((l) => l.lun !== vol.lun), exportedLun(vol, size)];
    vol.exportedBytes = size;
    this.#logger.info({ volumeId: vol.id, target: vol.target, lun: vol.lun, bytes: size }, 'tgtd re-opened the backing file of the LUN in place');
    return true;
  }

  // ---- allocation ------------------------------------------------------------------------------

  /** A new target in the state with the lowest tid free in both the state and tgtd. Synchronous: no other call can take the same tid. */
  #newTarget(iqn: string, shared: boolean, live: TgtTarget[]): TgtTargetState {
    const target = { iqn, tid: this.#freeTid(live), shared };
    this.#state.targets[iqn] = target;
    return target;
  }

  #freeTid(live: TgtTarget[]): number {
    const used = new Set([...Object.values(this.#state.targets).map((t) => t.tid), ...live.map((t) => t.tid)]);
    let tid = 1;
    while (used.has(tid)) tid += 1;
    return tid;
  }

  /** Lowest LUN number of a shared target used neither in the state nor in tgtd. Caller holds tgt:<iqn>. */
  #freeLun(iqn: string, live: TgtTarget[]): number {
    const used = new Set([...this.#volumesOn(iqn).map((v) => v.lun), ...(live.find((t) => t.name === iqn)?.luns.map((l) => l.lun) ?? [])]);
    let lun = FIRST_VOLUME_LUN;
    while (used.has(lun)) lun += 1;
    if (lun > MAX_TGT_LUN) throw new ResourceExhausted(`shared target ${iqn} has no free LUN number left`);
    return lun;
  }

  #volumesOn(iqn: string): TgtVolumeState[] {
    return Object.values(this.#state.volumes).filter((v) => v.target === iqn);
  }

  // ---- CHAP accounts ---------------------------------------------------------------------------

  #credentialsOf(vol: TgtVolumeState): ChapCredentials | undefined {
    if (!vol.chap) return undefined;
    const pw = this.#chap.accounts[vol.chap.user]?.password;
    if (pw === undefined) return undefined;
    const creds: ChapCredentials = { username: vol.chap.user, password: new Secret(pw) };
    if (vol.chap.mutualUser) {
      const mpw = this.#chap.accounts[vol.chap.mutualUser]?.password;
      if (mpw === undefined) return undefined;
      creds.usernameIn = vol.chap.mutualUser;
      creds.passwordIn = new Secret(mpw);
    }
    return creds;
  }

  /**
   * Records a volume's CHAP accounts (passwords to the 0600 secrets file). tgt keeps one account per
   * user name for all targets, so a name already in use with another password is refused.
   */
  async #storeCredentials(vol: TgtVolumeState, creds: ChapCredentials): Promise<void> {
    const pairs: [string, Secret][] = [[creds.username, creds.password]];
    if (creds.usernameIn && creds.passwordIn) pairs.push([creds.usernameIn, creds.passwordIn]);
    for (const [user, pw] of pairs) {
      const known = this.#chap.accounts[user];
      if (known && known.password !== pw.reveal()) {
        throw new FailedPrecondition(`CHAP user ${user} is already used by other volumes with a different password; tgt has one account per user name, so use another user name or the same password`);
      }
    }
    for (const [user, pw] of pairs) this.#chap.accounts[user] = { password: pw.reveal() };
    vol.chap = creds.usernameIn ? { user: creds.username, mutualUser: creds.usernameIn } : { user: creds.username };
    await this.#chapFile.save();
  }

  async #ensureAccount(user: string, password: Secret): Promise<void> {
    await this.#locks.withLock(`acct:${user}`, () => this.#tgtadm.newAccount(user, password));
  }

  async #dropAccountIfUnused(user: string): Promise<void> {
    await this.#locks.withLock(`acct:${user}`, async () => {
      const used = Object.values(this.#state.volumes).some((v) => v.chap?.user === user || v.chap?.mutualUser === user);
      if (used) return;
      await this.#tgtadm.deleteAccount(user);
      delete this.#chap.accounts[user];
      await this.#chapFile.save();
    });
  }

  // ---- pool files ------------------------------------------------------------------------------

  async #space(): Promise<{ free: number; total: number }> {
    try {
      const s = await statfs(this.#poolDir);
      return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
    } catch (e) {
      throw new Internal(`cannot read free space of pool directory ${this.#poolDir}: ${(e as Error).message}`);
    }
  }

  /**
   * Refuses a size the pool cannot hold: larger than its filesystem → OUT_OF_RANGE (never possible);
   * larger than the free space → RESOURCE_EXHAUSTED (files are sparse, but a volume bigger than the
   * free space could never be filled).
   */
  async #checkSpace(capacityBytes: number, currentBytes: number, notNow: new (m: string) => Error = ResourceExhausted): Promise<void> {
    const { free, total } = await this.#space();
    if (capacityBytes > total) throw new OutOfRange(`${formatBytes(capacityBytes)} is larger than the whole pool filesystem of ${this.#poolDir} (${formatBytes(total)})`);
    const growth = capacityBytes - currentBytes;
    if (growth > free) throw new notNow(`pool ${this.#poolDir} has ${formatBytes(free)} free, ${formatBytes(growth)} more are needed`);
  }

  async #fileSize(file: string): Promise<number | undefined> {
    try {
      return (await stat(file)).size;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return undefined;
      throw new Internal(`cannot stat backing file ${file}: ${(e as Error).message}`);
    }
  }

  /** Creates a sparse backing file of the volume's size (grows one a failed create left behind). */
  async #createBackingFile(vol: TgtVolumeState): Promise<void> {
    const bytes = backingBytes(vol.capacityBytes);
    await mkdir(this.#poolDir, { recursive: true, mode: POOL_DIR_MODE });
    let fh;
    try {
      fh = await open(vol.file, 'wx', POOL_FILE_MODE);
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') throw new Internal(`cannot create backing file ${vol.file}: ${(e as Error).message}`);
      await this.#growFile(vol.file, bytes);
      return;
    }
    try {
      await fh.truncate(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    const dir = await open(this.#poolDir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  /** Grows a backing file (sparse) to `bytes`; never shrinks it. */
  async #growFile(file: string, bytes: number): Promise<void> {
    const size = await this.#fileSize(file);
    if (size === undefined) throw new Internal(`backing file ${file} is missing`);
    if (size >= bytes) return;
    try {
      await truncate(file, bytes);
    } catch (e) {
      throw new Internal(`cannot grow backing file ${file} to ${bytes} bytes: ${(e as Error).message}`);
    }
  }
}

/** What tgtd shows for a LUN the driver just created (to keep a fetched listing current). */
function exportedLun(vol: TgtVolumeState, size: number): TgtLun {
  return {
    lun: vol.lun, type: 'disk', scsiId: vol.scsiId, scsiSn: vol.scsiSn, sizeMb: Math.floor(size / 1e6), online: true,
    readonly: false, backingStoreType: 'rdwr', backingStorePath: vol.file,
  };
}

/** Why a volume's LUN does not show `bytes` (yet): tgtd is told only while nobody is logged in to the target. */
function sizeNotReadMessage(vol: TgtVolumeState, live: TgtTarget | undefined, bytes: number): string {
  const who = [...new Set((live?.nexuses ?? []).map((n) => n.initiator))];
  if (who.length === 0) return `LUN ${vol.lun} of target ${vol.target} still has ${formatBytes(vol.exportedBytes)}; tgtd reads the volume's ${formatBytes(bytes)} at the next reconcile or expand`;
  return `volume ${vol.id} cannot grow to ${formatBytes(bytes)} while ${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} logged in to target ${vol.target}: `
    + "tgtd reads a LUN's new size only by re-opening its backing file, which fails the commands in flight, "
    + `and re-creating the LUN would take it away from the node; the LUN keeps ${formatBytes(vol.exportedBytes)} until no initiator is logged in`;
}

function sameSet(want: Set<string>, have: string[]): boolean {
  return want.size === have.length && have.every((h) => want.has(h));
}

function isIscsiName(value: string): boolean {
  try {
    parseIscsiName(value);
    return true;
  } catch {
    return false;
  }
}
