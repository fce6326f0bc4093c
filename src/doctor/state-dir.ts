// The driver's state directory (volume records, session marks, locks, controller state) must be
// writable. Probed with one temp file of the doctor's own, created exclusively and removed at once:
// nothing the driver keeps there is read or touched. The only write any check makes.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { access, open, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { errnoCode } from '../errors.js';
import { CHECK, fail, ok, type Check } from './check.js';

/** The probe file's name: a dot file no part of the driver lists or reads. */
export function probeFileName(): string {
  return `.doctor-probe-${process.pid}-${randomBytes(4).toString('hex')}`;
}

const WHY: Record<string, string> = {
  EROFS: 'it is on a read-only filesystem',
  ENOSPC: 'its filesystem is full',
  EDQUOT: 'the disk quota is used up',
  EACCES: 'the driver\'s user may not write there',
  EPERM: 'the driver\'s user may not write there',
};

/** The nearest existing ancestor of a path that does not exist. */
async function existingAncestor(path: string): Promise<string> {
  let dir = dirname(path);
  for (;;) {
    if (await stat(dir).then(() => true, () => false)) return dir;
    const up = dirname(dir);
    if (up === dir) return dir;
    dir = up;
  }
}

/**
 * A directory that does not exist: ok when the driver can create it at start (`denied` undefined), else
 * why not (`denied`: access(2)'s errno on the nearest existing ancestor) and what to do. On a read-only
 * filesystem (the real kernel answers EROFS, root or not) nobody can create it there: another path.
 */
export function missingDirCheck(name: string, dir: string, key: string, purpose: string, parent: string, denied: string | undefined): Check {
  if (denied === undefined) return ok(name, `${dir} does not exist yet; the driver creates it at start (${parent} is writable)`);
  const fix = denied === 'EROFS'
    ? `set ${key} to a path on a writable filesystem (${purpose}); ${dir} cannot be created on a read-only one`
    : `create ${dir} for the driver, or set ${key} (${purpose})`;
  return fail(name, `${dir} does not exist and ${parent} is not writable: ${WHY[denied] ?? denied}`, fix);
}

/**
 * A writable directory, or one that does not exist yet under a writable parent (the driver creates it at
 * start). `what` names it in messages, `key` is its config key.
 */
export async function checkWritableDir(name: string, dir: string, key: string, purpose: string, probe: boolean): Promise<Check> {
  const s = await stat(dir).catch((e: unknown) => e as Error);
  if (s instanceof Error) {
    if (errnoCode(s) !== 'ENOENT') return fail(name, `cannot stat ${dir}: ${errnoCode(s) ?? s.message}`, `fix the permissions on ${dir} or set ${key}`);
    const parent = await existingAncestor(dir);
    const denied = await access(parent, constants.W_OK).then(() => undefined, (e: unknown) => errnoCode(e) ?? (e as Error).message);
    return missingDirCheck(name, dir, key, purpose, parent, denied);
  }
  if (!s.isDirectory()) return fail(name, `${dir} is not a directory`, `set ${key} to a directory (${purpose})`);
  if (!probe) {
    const denied = await access(dir, constants.W_OK).then(() => undefined, (e: unknown) => e as Error);
    if (!denied) return ok(name, `${dir} is writable`);
    const code = errnoCode(denied);
    return fail(name, `${dir} is not writable: ${WHY[code ?? ''] ?? code ?? denied.message}`, `make ${dir} writable for the driver, or set ${key} (${purpose})`);
  }
  const file = join(dir, probeFileName());
  try {
    const fh = await open(file, 'wx', 0o600);
    try {
      await fh.write('doctor\n');
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (e) {
    await unlink(file).catch(() => undefined);
    const code = errnoCode(e);
    return fail(name, `cannot write in ${dir}: ${WHY[code ?? ''] ?? code ?? (e as Error).message}`, `make ${dir} writable (and not full) for the driver, or set ${key} (${purpose})`);
  }
  await unlink(file);
  return ok(name, `${dir} is writable (a probe file was created and removed)`);
}

export function checkStateDir(stateDir: string): Promise<Check> {
  return checkWritableDir(CHECK.stateDir, stateDir, 'stateDir', 'on a node a hostPath that survives the pod: volume records, locks', true);
}
