// A JSON document on disk, written atomically (temp file, fsync, rename, fsync of the directory) so a
// crash leaves either the old or the new content, never a torn file. Writes are queued: each write
// takes a fresh snapshot when its turn comes, so the last write always stores the latest state.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { errnoCode, Internal } from '../errors.js';

export const STATE_DIR_MODE = 0o700;
export const STATE_FILE_MODE = 0o600;

export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return undefined;
    throw new Internal(`cannot read controller state ${path}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    // Never start over silently: that would forget every volume. An operator has to look at it.
    throw new Internal(`controller state ${path} is not valid JSON (${(e as Error).message}); restore it from a backup or move it away to start empty`);
  }
}

export async function writeJsonFileAtomic(path: string, value: unknown, mode = STATE_FILE_MODE): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: STATE_DIR_MODE });
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(JSON.stringify(value, null, 2) + '\n', 'utf8');
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Serialises the writes of one file; `save()` resolves once a snapshot taken after the call is on disk. */
export class StateFile<T> {
  #queue: Promise<void> = Promise.resolve();

  constructor(readonly path: string, private readonly snapshot: () => T, private readonly mode = STATE_FILE_MODE) {}

  save(): Promise<void> {
    const run = this.#queue.then(() => writeJsonFileAtomic(this.path, this.snapshot(), this.mode));
    // a failed write must not block later ones; the caller of this save sees the error
    this.#queue = run.catch(() => undefined);
    return run.catch((e: Error) => {
      throw new Internal(`cannot write controller state ${this.path}: ${e.message}`);
    });
  }

  load(): Promise<unknown> {
    return readJsonFile(this.path);
  }
}
