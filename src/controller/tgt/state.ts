// The tgt backend's own state (<stateDir>/controller/tgt/volumes.json): every volume, its target and
// LUN, where it is published. It is the truth tgtd is rebuilt from; it never holds a CHAP password
// (those are in the CHAP store's file next to it).
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { StringMap } from '../../csi/types.js';
import { DurableJsonFile, PRIVATE_DIR_MODE, RESTORE_HINT } from '../../common/durable-json.js';
import type { CapabilitySummary, Publication } from '../capabilities.js';
import type { ChapAccountNames } from './chap-store.js';

export const TGT_STATE_VERSION = 1;

export interface TgtPublication extends Publication {
  initiator: string;
}

/** What a volume was made from (CreateVolume's volume_content_source). */
export interface TgtContentSource {
  kind: 'snapshot' | 'volume';
  id: string;
}

export interface TgtVolumeState {
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
  /** CHAP account names (the passwords live in the CHAP store) */
  chap?: ChapAccountNames;
  /** created with chap: "true" but no credentials yet: they must come with ControllerPublishVolume */
  chapPending?: boolean;
  published: Record<string, TgtPublication>;
  createdAt: string;
  contentSource?: TgtContentSource;
  /** recorded, but its content is not copied in yet: its file is not exported until it is */
  contentPending?: boolean;
}

/** A snapshot: an independent file in the pool, a point-in-time copy of its source volume's file. */
export interface TgtSnapshotState {
  id: string;
  name: string;
  seq: number;
  sourceVolumeId: string;
  /** the source volume's capacity when it was taken: a restore is at least this large */
  sizeBytes: number;
  /** absolute path of the snapshot's file */
  file: string;
  createdAt: string;
  method: 'reflink' | 'copy';
}

export interface TgtTargetState {
  iqn: string;
  tid: number;
  shared: boolean;
}

export interface TgtStateDoc {
  version: number;
  nextSeq: number;
  targets: Record<string, TgtTargetState>;
  volumes: Record<string, TgtVolumeState>;
  /** absent in files written before snapshots existed */
  snapshots?: Record<string, TgtSnapshotState>;
}

export class TgtState {
  #doc: TgtStateDoc = { version: TGT_STATE_VERSION, nextSeq: 1, targets: {}, volumes: {} };
  readonly #file: DurableJsonFile<TgtStateDoc>;

  constructor(path: string) {
    this.#file = new DurableJsonFile(path, { what: 'controller state', version: TGT_STATE_VERSION, hint: RESTORE_HINT }, () => this.#doc);
  }

  get path(): string {
    return this.#file.path;
  }

  /** The document, for pure functions of the whole state (the desired tgtd configuration). */
  get doc(): Readonly<TgtStateDoc> {
    return this.#doc;
  }

  async load(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: PRIVATE_DIR_MODE });
    const doc = await this.#file.load();
    if (doc) this.#doc = doc;
  }

  save(): Promise<void> {
    return this.#file.save();
  }

  volume(id: string): TgtVolumeState | undefined {
    return this.#doc.volumes[id];
  }

  /** every volume, in creation order */
  volumes(): TgtVolumeState[] {
    return Object.values(this.#doc.volumes).sort((a, b) => a.seq - b.seq);
  }

  volumesOn(iqn: string): TgtVolumeState[] {
    return Object.values(this.#doc.volumes).filter((v) => v.target === iqn);
  }

  target(iqn: string): TgtTargetState | undefined {
    return this.#doc.targets[iqn];
  }

  targetCount(): number {
    return Object.keys(this.#doc.targets).length;
  }

  tids(): number[] {
    return Object.values(this.#doc.targets).map((t) => t.tid);
  }

  /** Whether any volume logs in with, or answers mutual CHAP with, this account. */
  usesChapUser(user: string): boolean {
    return Object.values(this.#doc.volumes).some((v) => v.chap?.user === user || v.chap?.mutualUser === user);
  }

  /** Adds a volume (and its target when new) with the next sequence number. Synchronous: the caller's tid and LUN choice stay its own. */
  add(target: TgtTargetState, vol: Omit<TgtVolumeState, 'seq'>): TgtVolumeState {
    const added = { ...vol, seq: this.#doc.nextSeq };
    this.#doc.targets[target.iqn] = target;
    this.#doc.volumes[added.id] = added;
    this.#doc.nextSeq += 1;
    return added;
  }

  snapshot(id: string): TgtSnapshotState | undefined {
    return this.#doc.snapshots?.[id];
  }

  /** every snapshot, in creation order */
  snapshots(): TgtSnapshotState[] {
    return Object.values(this.#doc.snapshots ?? {}).sort((a, b) => a.seq - b.seq);
  }

  /** Adds a snapshot with the next sequence number (shared with volumes: it only grows). */
  addSnapshot(snap: Omit<TgtSnapshotState, 'seq'>): TgtSnapshotState {
    const added = { ...snap, seq: this.#doc.nextSeq };
    this.#doc.snapshots = { ...this.#doc.snapshots, [added.id]: added };
    this.#doc.nextSeq += 1;
    return added;
  }

  removeSnapshot(id: string): void {
    if (this.#doc.snapshots) delete this.#doc.snapshots[id];
  }

  /** Removes a volume, and its target with its last volume. */
  remove(vol: TgtVolumeState): void {
    delete this.#doc.volumes[vol.id];
    if (this.volumesOn(vol.target).length === 0) delete this.#doc.targets[vol.target];
  }
}
