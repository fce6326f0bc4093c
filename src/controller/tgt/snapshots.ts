// Snapshots and clones of the tgt backend. A snapshot is an independent file in the pool: a
// point-in-time copy of its source volume's backing file (file-copy.ts; when a byte copy is allowed:
// snapshot-rules.ts). A volume made from a snapshot or a volume starts as a copy of that file, grown to
// its own size. Every copy is written under a ".partial" name and renamed when complete; the state
// records a snapshot only once its file is in place, so a crash leaves a partial file or an unrecorded
// snapshot file, both removed at start (sweep). Locks: snap:<id> around a snapshot's verbs, vol:<id>
// around reading a source volume (a publish of it waits until the copy is done).
import type { KeyedMutex } from '../../common/keyed-mutex.js';
import { stat } from 'node:fs/promises';
import { AlreadyExists, FailedPrecondition, Internal, NotFound, ResourceExhausted } from '../../errors.js';
import type { Logger } from '../../log.js';
import type { SnapshotRecord, SnapshotSupport } from '../backend.js';
import { backingBytes, formatBytes } from '../capacity.js';
import { snapshotIdFor } from '../names.js';
import { reflinkFile, removeIfExists, sparseCopyFile, type CopyMethod } from './file-copy.js';
import type { Pool } from './pool.js';
import { loggedIn } from './reconcile.js';
import { byteCopyRefusal } from './snapshot-rules.js';
import type { TgtSnapshotState, TgtState, TgtVolumeState } from './state.js';
import type { Tgtadm } from './tgtadm.js';

export interface TgtSnapshotsDeps {
  state: TgtState;
  pool: Pool;
  tgtadm: Tgtadm;
  locks: KeyedMutex;
  logger: Logger;
  /** bound of one byte copy (controller.tgt.copyTimeoutMs) */
  copyTimeoutMs: number;
  /** loads the state once (the backend's) */
  load: () => Promise<void>;
}

/** st_blocks counts 512-byte units whatever the filesystem's block size. */
const STAT_BLOCK_BYTES = 512;

export class TgtSnapshots implements SnapshotSupport {
  /** aborted by cancelCopies(): byte copies in flight stop and remove their partial files */
  #copies = new AbortController();

  constructor(private readonly deps: TgtSnapshotsDeps) {}

  /** Stops every byte copy in flight (the controller is stopping); later copies run normally. */
  cancelCopies(): void {
    this.#copies.abort();
    this.#copies = new AbortController();
  }

  getSnapshot(id: string): SnapshotRecord | undefined {
    const snap = this.deps.state.snapshot(id);
    return snap ? snapshotRecord(snap) : undefined;
  }

  listSnapshots(): SnapshotRecord[] {
    return this.deps.state.snapshots().map(snapshotRecord);
  }

  async createSnapshot(name: string, sourceVolumeId: string): Promise<SnapshotRecord> {
    const { state, pool, locks, logger } = this.deps;
    await this.deps.load();
    const id = snapshotIdFor('tgt', name);
    return locks.withLock(`snap:${id}`, async () => {
      const existing = state.snapshot(id);
      if (existing) {
        if (existing.name !== name) throw new Internal(`snapshot id ${id} of ${JSON.stringify(existing.name)} collides with the name ${JSON.stringify(name)}`);
        if (existing.sourceVolumeId !== sourceVolumeId) {
          throw new AlreadyExists(`a snapshot named ${JSON.stringify(name)} already exists (${id}) of volume ${existing.sourceVolumeId}, not of ${sourceVolumeId}`);
        }
        return snapshotRecord(existing);
      }
      return locks.withLock(`vol:${sourceVolumeId}`, async () => {
        const src = this.#sourceVolume(sourceVolumeId);
        const file = pool.snapshotFileFor(id);
        const partial = pool.partialOf(file);
        await removeIfExists(partial);
        const method = await this.#pointInTimeCopy(src, partial);
        await pool.commit(partial, file);
        const snap = state.addSnapshot({ id, name, sourceVolumeId, sizeBytes: src.capacityBytes, file, createdAt: new Date().toISOString(), method });
        try {
          await state.save();
        } catch (e) {
          state.removeSnapshot(id);
          await pool.remove(file).catch(() => undefined); // else the sweep at the next start removes it
          throw e;
        }
        logger.info({ snapshotId: id, volumeId: sourceVolumeId, method, bytes: snap.sizeBytes }, 'snapshot created');
        return snapshotRecord(snap);
      });
    });
  }

  async deleteSnapshot(id: string): Promise<void> {
    const { state, pool, locks, logger } = this.deps;
    await this.deps.load();
    await locks.withLock(`snap:${id}`, async () => {
      const snap = state.snapshot(id);
      if (!snap) return;
      await pool.remove(pool.partialOf(snap.file));
      await pool.remove(snap.file);
      state.removeSnapshot(id);
      await state.save();
      logger.info({ snapshotId: id }, 'snapshot deleted');
    });
  }

  /**
   * Copies a new volume's content source into its backing file (under its partial name, then renamed),
   * grown to the volume's size. The caller holds vol:<vol.id> and no tgt lock (a source volume's
   * publish holds vol:<source> and then takes its target's lock).
   */
  async fill(vol: TgtVolumeState): Promise<void> {
    const { state, pool, locks, logger } = this.deps;
    const source = vol.contentSource;
    if (!source) throw new Internal(`volume ${vol.id} has no content source to copy`);
    const partial = pool.partialOf(vol.file);
    await removeIfExists(partial);
    let method: CopyMethod;
    if (source.kind === 'snapshot') {
      method = await locks.withLock(`snap:${source.id}`, async () => {
        const snap = state.snapshot(source.id);
        if (!snap) throw new NotFound(`snapshot ${source.id} does not exist`);
        // nothing writes to a snapshot's file: any copy of it is point-in-time
        if (await reflinkFile(snap.file, partial)) return 'reflink';
        await this.#byteCopy(snap.file, partial, logger.child({ volumeId: vol.id }));
        return 'copy';
      });
    } else {
      method = await locks.withLock(`vol:${source.id}`, () => this.#pointInTimeCopy(this.#sourceVolume(source.id), partial));
    }
    try {
      await pool.grow(partial, backingBytes(vol.capacityBytes));
      await pool.commit(partial, vol.file);
    } catch (e) {
      await removeIfExists(partial).catch(() => undefined);
      throw e;
    }
    delete vol.contentPending;
    await state.save();
    logger.info({ volumeId: vol.id, source: `${source.kind} ${source.id}`, method }, 'volume content copied from its source');
  }

  /** Removes partial copies and unrecorded snapshot files a crash left (at start, before serving). */
  async sweep(): Promise<void> {
    const known = new Set(this.deps.state.snapshots().map((s) => s.file));
    for (const file of await this.deps.pool.sweep(known)) this.deps.logger.warn({ file }, 'removed a half-made copy left by an earlier run');
  }

  #sourceVolume(id: string): TgtVolumeState {
    const src = this.deps.state.volume(id);
    if (!src) throw new NotFound(`source volume ${id} does not exist`);
    if (src.contentPending) throw new FailedPrecondition(`source volume ${id} is still being filled from its own source; retry once its CreateVolume has succeeded`);
    return src;
  }

  /** A reflink clone of a volume's file; else a byte copy when nothing can write to it (or FAILED_PRECONDITION). Caller holds vol:<src.id>. */
  async #pointInTimeCopy(src: TgtVolumeState, dst: string): Promise<CopyMethod> {
    const { pool, logger } = this.deps;
    if (await reflinkFile(src.file, dst)) return 'reflink';
    const live = (await this.deps.tgtadm.showTargets()).find((t) => t.name === src.target);
    const refusal = byteCopyRefusal({ volumeId: src.id, poolDir: pool.dir, publishedTo: Object.keys(src.published), loggedIn: loggedIn(live) });
    if (refusal) throw new FailedPrecondition(refusal);
    logger.info({ volumeId: src.id, file: src.file }, 'the pool cannot make reflinks; copying the unpublished volume\'s file (sparse)');
    await this.#byteCopy(src.file, dst, logger.child({ volumeId: src.id }));
    return 'copy';
  }

  /** A sparse byte copy, refused (RESOURCE_EXHAUSTED) when the pool cannot hold the source's allocated blocks. */
  async #byteCopy(src: string, dst: string, logger: Logger): Promise<void> {
    const allocated = (await stat(src)).blocks * STAT_BLOCK_BYTES;
    const { free } = await this.deps.pool.space();
    if (allocated > free) throw new ResourceExhausted(`pool ${this.deps.pool.dir} has ${formatBytes(free)} free; a copy of ${src} needs up to ${formatBytes(allocated)}`);
    await sparseCopyFile(src, dst, { timeoutMs: this.deps.copyTimeoutMs, logger, signal: this.#copies.signal });
  }
}

function snapshotRecord(s: TgtSnapshotState): SnapshotRecord {
  return { id: s.id, name: s.name, seq: s.seq, sourceVolumeId: s.sourceVolumeId, sizeBytes: s.sizeBytes, createdAt: new Date(s.createdAt), readyToUse: true };
}
