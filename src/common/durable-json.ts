// JSON documents on disk that survive a crash at any instant: written to a temp file in the same
// directory, fsynced, renamed over the real name, and the directory fsynced (the rename), so the real
// name always holds either the old or the new content, never a torn file. Reads refuse a corrupt
// file or an unknown version with an INTERNAL error naming the file, rather than starting over empty
// (which would forget every volume). Used by every state file of the driver.
//
// Opening, writing, renaming and reading are synchronous: page-cache work on the driver's local state
// directory that answers in microseconds, where each thread-pool round trip cost more CPU than the
// call (a stage writes its record twice). Only the fsyncs, which wait for the disk, run off the event
// loop. `fs` is used through the module object on purpose: tests replace its methods to inject faults.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { errnoCode, Internal } from '../errors.js';

/** Directories holding driver state: only root may list them. */
export const PRIVATE_DIR_MODE = 0o700;
/** State files (CHAP passwords among them): only root may read them. */
export const PRIVATE_FILE_MODE = 0o600;
const TEMP_SUFFIX = '.tmp';
const TEMP_RANDOM_BYTES = 6;
/** What an operator can do about a corrupt state file the driver cannot rebuild. */
export const RESTORE_HINT = 'restore it from a backup or move it away to start empty';
/** The field every versioned document carries. */
export const VERSION_FIELD = 'version';

export interface WriteOptions {
  /** file mode of the new file (default 0600) */
  mode?: number;
  /**
   * Another directory to fsync alongside the write (e.g. the parent of a directory just created):
   * both must be durable before the write counts, neither has to wait for the other.
   */
  syncAlongside?: string | null;
}

/**
 * Writes `value` as JSON to `path` crash-safely (see the file comment). The directory must exist.
 * Errors are the file system's own (callers look at ENOENT); the temp file is removed on failure.
 */
export async function writeJsonDurably(path: string, value: unknown, opts: WriteOptions = {}): Promise<void> {
  const dir = dirname(path);
  // hidden and ending in .tmp: never mistaken for a document by a directory listing
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(TEMP_RANDOM_BYTES).toString('hex')}${TEMP_SUFFIX}`);
  const text = `${JSON.stringify(value, null, 2)}\n`;
  const writeTemp = async (): Promise<void> => {
    const fd = fs.openSync(tmp, 'wx', opts.mode ?? PRIVATE_FILE_MODE);
    try {
      try {
        fs.writeFileSync(fd, text, 'utf8');
        await fsync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(tmp, path);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
  };
  await Promise.all([writeTemp(), ...(opts.syncAlongside ? [fsyncDirectory(opts.syncAlongside)] : [])]);
  await fsyncDirectory(dir);
}

/** Makes the entries of `dir` (a rename, a new or removed file) durable. */
export async function fsyncDirectory(dir: string): Promise<void> {
  const fd = fs.openSync(dir, 'r');
  try {
    await fsync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** fsync(2) on the thread pool: it waits for the disk. */
function fsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.fsync(fd, (err) => (err ? reject(err) : resolve()));
  });
}

export interface ReadOptions {
  /** what the file is, first words of every error message ("controller state", "volume metadata") */
  what: string;
  /** appended to the corrupt-file error: what an operator can do about it */
  hint?: string;
}

/**
 * The parsed JSON of `path`, or undefined when there is no such file. A corrupt file is an INTERNAL
 * error naming it; the parser's own message is left out, as it quotes the file's content (which may
 * be a password), only the position is kept.
 */
export async function readJson(path: string, opts: ReadOptions): Promise<unknown> {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENOTDIR') return undefined;
    throw new Internal(`cannot read ${opts.what} ${path}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    const position = /at position (\d+)/.exec((e as Error).message)?.[1];
    throw new Internal(`${opts.what} ${path} is not valid JSON${position ? ` (error at position ${position})` : ''}${opts.hint ? `; ${opts.hint}` : ''}`);
  }
}

export interface VersionedReadOptions extends ReadOptions {
  /** the only version this driver reads */
  version: number;
}

/** readJson, then the document's `version` field must be the one given (a newer driver wrote it, or not this driver). */
export async function readVersionedJson<T extends { version: number }>(path: string, opts: VersionedReadOptions): Promise<T | undefined> {
  const doc = await readJson(path, opts);
  if (doc === undefined) return undefined;
  const found = doc !== null && typeof doc === 'object' && !Array.isArray(doc) ? (doc as Record<string, unknown>)[VERSION_FIELD] : undefined;
  if (found !== opts.version) {
    throw new Internal(`${opts.what} ${path} has version ${JSON.stringify(found) ?? 'none'}; this driver reads version ${opts.version}`);
  }
  return doc as T;
}

export interface DurableJsonFileOptions extends VersionedReadOptions {
  /** default 0600 */
  mode?: number;
}

/**
 * One versioned document of a long-running owner (a controller backend's state). Writes are queued:
 * each takes its snapshot when its turn comes, so the last write always stores the latest state, and
 * a failed write does not block later ones.
 */
export class DurableJsonFile<T extends { version: number }> {
  #queue: Promise<void> = Promise.resolve();

  constructor(readonly path: string, private readonly opts: DurableJsonFileOptions, private readonly snapshot: () => T) {}

  load(): Promise<T | undefined> {
    return readVersionedJson<T>(this.path, this.opts);
  }

  /** Resolves once a snapshot taken after the call is on disk. */
  save(): Promise<void> {
    const run = this.#queue.then(async () => {
      fs.mkdirSync(dirname(this.path), { recursive: true, mode: PRIVATE_DIR_MODE });
      await writeJsonDurably(this.path, this.snapshot(), { mode: this.opts.mode ?? PRIVATE_FILE_MODE });
    });
    this.#queue = run.catch(() => undefined);
    return run.catch((e: Error) => {
      throw new Internal(`cannot write ${this.opts.what} ${this.path}: ${e.message}`);
    });
  }
}
