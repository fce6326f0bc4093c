// The staging and target paths kubelet hands us: created when missing, removed when the driver is done
// with them (only what the driver created: an empty directory or a file).
import { promises as fs, constants } from 'node:fs';
import { dirname } from 'node:path';
import { errnoCode, FailedPrecondition } from '../errors.js';

export async function ensureDir(path: string): Promise<void> {
  await fs.mkdir(path, { recursive: true, mode: 0o750 });
}

/** A regular file to bind a block device onto (a CSI block target path is a file). */
export async function ensureFile(path: string): Promise<void> {
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o750 });
  const h = await fs.open(path, constants.O_CREAT | constants.O_WRONLY, 0o640);
  await h.close();
}

/** Removes an unmounted target path: an empty directory or a (block-target) file. */
export async function removeTarget(path: string): Promise<void> {
  try {
    const st = await fs.lstat(path);
    if (st.isDirectory()) await fs.rmdir(path);
    else await fs.unlink(path);
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ENOENT') return;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new FailedPrecondition(`${path} is not empty after unmount; refusing to delete its content`);
    throw e;
  }
}
