// The pool directory: one sparse backing file per volume and one file per snapshot, each named by its
// id's hash only; a file being copied in carries a ".partial" suffix until it is complete.
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, open, readdir, rename, stat, statfs, truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDirectory } from '../../common/durable-json.js';
import { errnoCode, Internal, OutOfRange, ResourceExhausted } from '../../errors.js';
import { formatBytes } from '../capacity.js';
import { backingFileNameFor, PARTIAL_FILE_SUFFIX, POOL_FILE_RE, snapshotFileNameFor } from '../names.js';

const POOL_FILE_MODE = 0o600;
const POOL_DIR_MODE = 0o700;

export interface PoolSpace {
  free: number;
  total: number;
}

export class Pool {
  /** `dir`: an absolute path (checked with the configuration) */
  constructor(readonly dir: string) {}

  fileFor(volumeId: string): string {
    return join(this.dir, backingFileNameFor(volumeId));
  }

  snapshotFileFor(snapshotId: string): string {
    return join(this.dir, snapshotFileNameFor(snapshotId));
  }

  /** The name a file is copied to before it is complete. */
  partialOf(file: string): string {
    return `${file}${PARTIAL_FILE_SUFFIX}`;
  }

  /** Moves a completed copy to its name, durably (the directory entry is synced). */
  async commit(partial: string, file: string): Promise<void> {
    try {
      await rename(partial, file);
    } catch (e) {
      throw new Internal(`cannot rename ${partial} to ${file}: ${(e as Error).message}`);
    }
    await fsyncDirectory(this.dir);
  }

  /**
   * Removes what a crash left in the pool: every partial copy, and every snapshot file the state does
   * not list (a crash between its rename and the state's save). Volume files are never swept: each is
   * recorded before it is made. Returns the removed paths.
   */
  async sweep(knownSnapshotFiles: ReadonlySet<string>): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return [];
      throw new Internal(`cannot list pool directory ${this.dir}: ${(e as Error).message}`);
    }
    const removed: string[] = [];
    for (const name of names) {
      const m = POOL_FILE_RE.exec(name);
      if (!m) continue;
      const file = join(this.dir, name);
      const partial = m[3] !== undefined;
      const straySnapshot = m[1] !== undefined && !partial && !knownSnapshotFiles.has(file);
      if (partial || straySnapshot) {
        await this.remove(file);
        removed.push(file);
      }
    }
    return removed;
  }

  async ensureDir(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: POOL_DIR_MODE });
  }

  async writable(): Promise<boolean> {
    return access(this.dir, fsConstants.W_OK).then(() => true, () => false);
  }

  async space(): Promise<PoolSpace> {
    try {
      const s = await statfs(this.dir);
      return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
    } catch (e) {
      throw new Internal(`cannot read free space of pool directory ${this.dir}: ${(e as Error).message}`);
    }
  }

  /**
   * Refuses a size the pool cannot hold: larger than its filesystem → OUT_OF_RANGE (never possible);
   * a growth larger than the free space → `notNow` (default RESOURCE_EXHAUSTED: files are sparse,
   * but a volume bigger than the free space could never be filled).
   */
  async checkSpace(capacityBytes: number, currentBytes: number, notNow: new (m: string) => Error = ResourceExhausted): Promise<void> {
    const { free, total } = await this.space();
    if (capacityBytes > total) throw new OutOfRange(`${formatBytes(capacityBytes)} is larger than the whole pool filesystem of ${this.dir} (${formatBytes(total)})`);
    const growth = capacityBytes - currentBytes;
    if (growth > free) throw new notNow(`pool ${this.dir} has ${formatBytes(free)} free, ${formatBytes(growth)} more are needed`);
  }

  /** The file's size; undefined when it does not exist. */
  async sizeOf(file: string): Promise<number | undefined> {
    try {
      return (await stat(file)).size;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return undefined;
      throw new Internal(`cannot stat backing file ${file}: ${(e as Error).message}`);
    }
  }

  /** Creates a sparse file of `bytes`, durably (file and directory entry); one a failed create left behind is grown instead. */
  async create(file: string, bytes: number): Promise<void> {
    await this.ensureDir();
    let fh;
    try {
      fh = await open(file, 'wx', POOL_FILE_MODE);
    } catch (e) {
      if (errnoCode(e) !== 'EEXIST') throw new Internal(`cannot create backing file ${file}: ${(e as Error).message}`);
      await this.grow(file, bytes);
      return;
    }
    try {
      await fh.truncate(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsyncDirectory(this.dir);
  }

  /** Grows a file (sparse) to `bytes`; never shrinks it. */
  async grow(file: string, bytes: number): Promise<void> {
    const size = await this.sizeOf(file);
    if (size === undefined) throw new Internal(`backing file ${file} is missing`);
    if (size >= bytes) return;
    try {
      await truncate(file, bytes);
    } catch (e) {
      throw new Internal(`cannot grow backing file ${file} to ${bytes} bytes: ${(e as Error).message}`);
    }
  }

  /** Removes a file; one already gone is fine. */
  async remove(file: string): Promise<void> {
    await unlink(file).catch((e) => {
      if (errnoCode(e) !== 'ENOENT') throw new Internal(`cannot remove backing file ${file}: ${(e as Error).message}`);
    });
  }
}
