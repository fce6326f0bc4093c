// The staging and target paths kubelet hands us: created when missing, removed when the driver is done
// with them (only what the driver created: an empty directory or a file).
//
// A path whose last component is a symbolic link is never mounted on: mount(8) follows it, so the
// filesystem or bind would land at the link's destination (another volume's mount, /etc), hiding what
// is there, and the mount table would not list it under the path kubelet knows, so unpublish/unstage
// would not find it. The check runs before the stage does anything and again right before each mount
// (a link swapped in meanwhile). Directories above the last component may be links (an operator may
// move the kubelet root elsewhere): they are resolved as mount(8) and the mount table lookups
// (Mounts.canonicalPath) resolve them.
import { promises as fs, constants, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import { errnoCode, FailedPrecondition } from '../errors.js';

export type TargetKind = 'directory' | 'file';

/**
 * Refuses what the driver must not mount on: a symbolic link, or something of another kind than
 * `kind` (a filesystem is mounted on a directory, a block device bound onto a file). A missing path is
 * fine (it is created before the mount).
 */
export async function checkTarget(path: string, kind: TargetKind): Promise<void> {
  refuseWrongKind(path, kind, await lstatOrNull(path));
}

export async function ensureDir(path: string): Promise<void> {
  await checkTarget(path, 'directory');
  try {
    await fs.mkdir(path, { recursive: true, mode: 0o750 });
  } catch (e) {
    // EEXIST: a file (or a link made meanwhile) is there; ENOTDIR: a parent is not a directory
    if (errnoCode(e) !== 'EEXIST' && errnoCode(e) !== 'ENOTDIR') throw e;
    const st = await lstatOrNull(path);
    refuseWrongKind(path, 'directory', st);
    throw new FailedPrecondition(`cannot create the directory ${path}: a parent of it is not a directory`);
  }
  refuseWrongKind(path, 'directory', await lstatOrNull(path));
}

/** A regular file to bind a block device onto (a CSI block target path is a file). */
export async function ensureFile(path: string): Promise<void> {
  await checkTarget(path, 'file');
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o750 });
  let h;
  try {
    // O_NOFOLLOW: a link swapped in after the check is refused, not followed
    h = await fs.open(path, constants.O_CREAT | constants.O_WRONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o640);
  } catch (e) {
    if (errnoCode(e) === 'ELOOP') refuseWrongKind(path, 'file', await lstatOrNull(path));
    if (errnoCode(e) === 'EISDIR') throw new FailedPrecondition(kindMessage(path, 'file', 'a directory'));
    throw e;
  }
  try {
    refuseWrongKind(path, 'file', await h.stat());
  } finally {
    await h.close();
  }
}

/**
 * Removes an unmounted target path: an empty directory or a (block-target) file. A symbolic link is
 * left alone: the driver never made one, nor mounted through one.
 */
export async function removeTarget(path: string): Promise<void> {
  try {
    const st = await fs.lstat(path);
    if (st.isSymbolicLink()) return;
    if (st.isDirectory()) await fs.rmdir(path);
    else await fs.unlink(path);
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ENOENT') return;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') throw new FailedPrecondition(`${path} is not empty after unmount; refusing to delete its content`);
    throw e;
  }
}

async function lstatOrNull(path: string): Promise<Stats | null> {
  try {
    return await fs.lstat(path);
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return null;
    throw e;
  }
}

function refuseWrongKind(path: string, kind: TargetKind, st: Stats | null): void {
  if (!st) return;
  if (st.isSymbolicLink()) {
    throw new FailedPrecondition(`${path} is a symbolic link; the driver does not mount through links (the mount would land at the link's destination): replace it with a ${kind === 'directory' ? 'directory' : 'regular file'}`);
  }
  if (kind === 'directory' && !st.isDirectory()) throw new FailedPrecondition(kindMessage(path, kind, st.isFile() ? 'a regular file' : 'not a directory'));
  if (kind === 'file' && !st.isFile()) throw new FailedPrecondition(kindMessage(path, kind, st.isDirectory() ? 'a directory' : 'not a regular file'));
}

function kindMessage(path: string, kind: TargetKind, found: string): string {
  return kind === 'directory'
    ? `${path} exists and is ${found}: a filesystem volume is mounted on a directory (remove it, or publish the volume as a block volume)`
    : `${path} exists and is ${found}: a block volume is bound onto a regular file (remove it, or publish the volume as a filesystem volume)`;
}
