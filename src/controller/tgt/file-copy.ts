// Point-in-time copies of backing files inside the pool: a reflink clone (FICLONE) where the pool's
// filesystem shares extents (xfs with reflink=1, btrfs), else a sparse byte copy. A reflink is
// instant and atomic with respect to tgtd's writes; a byte copy is neither, so callers allow it only
// for files nothing writes to meanwhile (see snapshot-rules.ts).
import { constants as fsConstants } from 'node:fs';
import { copyFile, open, unlink } from 'node:fs/promises';
import { Aborted, DeadlineExceeded, errnoCode, Internal } from '../../errors.js';
import type { Logger } from '../../log.js';
import { formatBytes } from '../capacity.js';

/** Errors of FICLONE that mean "this filesystem (or this pair of files) cannot share extents". */
const NO_REFLINK_CODES = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY']);
/** Read and compare in chunks of this size: all-zero chunks are left as holes. */
const COPY_CHUNK_BYTES = 1024 * 1024;
/** A long byte copy logs its progress this often. */
const PROGRESS_LOG_INTERVAL_MS = 5_000;

export type CopyMethod = 'reflink' | 'copy';

/**
 * Reflink-clones `src` to a new file `dst`. Returns false (leaving no `dst`) when the filesystem cannot:
 * the caller decides whether a byte copy is allowed. `dst` must not exist.
 */
export async function reflinkFile(src: string, dst: string): Promise<boolean> {
  try {
    // FICLONE_FORCE: libuv issues the FICLONE ioctl and fails instead of falling back to a byte copy
    await copyFile(src, dst, fsConstants.COPYFILE_FICLONE_FORCE | fsConstants.COPYFILE_EXCL);
    return true;
  } catch (e) {
    const code = errnoCode(e);
    if (code && NO_REFLINK_CODES.has(code)) {
      await removeIfExists(dst);
      return false;
    }
    throw new Internal(`cannot clone ${src} to ${dst}: ${(e as Error).message}`);
  }
}

export interface SparseCopyOptions {
  /** the copy fails with DEADLINE_EXCEEDED (and leaves no `dst`) after this long */
  timeoutMs: number;
  logger: Logger;
  /** stops the copy (same cleanup as the timeout) */
  signal?: AbortSignal;
}

export interface SparseCopyResult {
  bytes: number;
  /** bytes actually written (the rest are holes) */
  dataBytes: number;
}

/**
 * Copies `src` to a new file `dst` of the same size, writing only the chunks that hold data (a chunk
 * of zeros stays a hole, so a sparse volume stays sparse), then fsyncs it. Bounded by the timeout;
 * on any failure `dst` is removed.
 */
export async function sparseCopyFile(src: string, dst: string, opts: SparseCopyOptions): Promise<SparseCopyResult> {
  const started = Date.now();
  const deadline = started + opts.timeoutMs;
  const input = await open(src, 'r').catch((e: Error) => { throw new Internal(`cannot open ${src} to copy it: ${e.message}`); });
  let output;
  try {
    output = await open(dst, 'wx', (await input.stat()).mode & 0o777).catch((e: Error) => { throw new Internal(`cannot create ${dst}: ${e.message}`); });
  } catch (e) {
    await input.close();
    throw e;
  }
  const buf = Buffer.alloc(COPY_CHUNK_BYTES);
  const zero = Buffer.alloc(COPY_CHUNK_BYTES);
  let ok = false;
  try {
    const bytes = (await input.stat()).size;
    await output.truncate(bytes);
    let offset = 0;
    let dataBytes = 0;
    let nextLog = started + PROGRESS_LOG_INTERVAL_MS;
    while (offset < bytes) {
      if (opts.signal?.aborted) throw new Aborted(`copy of ${src} was cancelled at ${formatBytes(offset)} of ${formatBytes(bytes)}: the controller is stopping; retry`);
      const now = Date.now();
      if (now > deadline) {
        throw new DeadlineExceeded(`copy of ${src} did not finish within ${opts.timeoutMs} ms (${formatBytes(offset)} of ${formatBytes(bytes)} done); put the pool on a filesystem with reflinks (xfs made with -m reflink=1, or btrfs) for instant snapshots, or raise controller.tgt.copyTimeoutMs`);
      }
      if (now >= nextLog) {
        opts.logger.info({ src, doneBytes: offset, totalBytes: bytes, percent: Math.floor((offset / bytes) * 100) }, 'copying backing file');
        nextLog = now + PROGRESS_LOG_INTERVAL_MS;
      }
      const { bytesRead } = await input.read(buf, 0, Math.min(COPY_CHUNK_BYTES, bytes - offset), offset);
      if (bytesRead === 0) break; // the source shrank under us: the rest stays a hole
      const chunk = buf.subarray(0, bytesRead);
      if (!chunk.equals(zero.subarray(0, bytesRead))) {
        await output.write(chunk, 0, bytesRead, offset);
        dataBytes += bytesRead;
      }
      offset += bytesRead;
    }
    await output.sync();
    ok = true;
    opts.logger.info({ src, totalBytes: bytes, dataBytes, durationMs: Date.now() - started }, 'backing file copied');
    return { bytes, dataBytes };
  } finally {
    await input.close();
    await output.close();
    if (!ok) await removeIfExists(dst);
  }
}

export async function removeIfExists(file: string): Promise<void> {
  await unlink(file).catch((e) => {
    if (errnoCode(e) !== 'ENOENT') throw new Internal(`cannot remove ${file}: ${(e as Error).message}`);
  });
}
