// The staging and target paths kubelet hands us: created when missing, checked for health, removed
// when the driver is done with them (only what the driver created: an empty directory or a file).
import { promises as fs, constants } from 'node:fs';
import { dirname } from 'node:path';
import { errnoCode, FailedPrecondition } from '../errors.js';
import type { Mounts } from './mounts.js';

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

export async function unmountIfMounted(mounts: Mounts, path: string): Promise<void> {
  if (await mounts.isMountPoint(path)) await mounts.unmount(path);
}

/**
 * null when the mount at `path` is healthy and writable as mounted, else what is wrong. `readable`
 * reads the directory (bounded by the caller: a dead device can make that read hang).
 */
export async function mountHealth(mounts: Mounts, path: string, readable: (path: string) => Promise<string | null>): Promise<string | null> {
  const state = await mounts.mountState(path);
  if (!state.mounted) return `${path} is not mounted`;
  if (state.stale) return `the mount at ${path} is stale (the device is gone)`;
  if (state.entry.superOptions.includes('ro') && !state.entry.mountOptions.includes('ro')) {
    return `the filesystem at ${path} was remounted read-only (I/O errors?)`;
  }
  return readable(path);
}
