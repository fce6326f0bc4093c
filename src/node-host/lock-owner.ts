// Who holds a target lock: `<lock>.owner` next to proper-lockfile's lock directory (inside it, the
// directory could not be removed on release). It names the process (pid and its start time, so a
// reused pid is not mistaken for the owner), the PID namespace and boot it lives in, and the lock
// directory it describes (inode and birth time, so an old record never speaks for a newer lock).
// The node plugin runs with hostPID, so a restarted driver shares the crashed one's PID namespace.
//
// The record is written, read and removed with synchronous calls: it is a small file in the driver's
// local state directory (no fsync: a record lost in a crash only delays a takeover to the stale
// period), each call answers in microseconds from the dentry cache, and every stage and unstage
// writes and removes it once, where a thread-pool round trip per call cost more CPU than the call.
import { promises as fs, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { PROC_ROOT as PROC, readProcStat } from '../common/proc.js';

const OWNER_SUFFIX = '.owner';

export interface LockOwner {
  pid: number;
  startTicks: string;
  pidNamespace: string;
  bootId: string;
  lockIno: number;
  lockBirthMs: number;
}

interface ProcessIdentity {
  pidNamespace: string;
  bootId: string;
}

let selfIdentity: Promise<(ProcessIdentity & { startTicks: string }) | null> | undefined;

/** This process's identity, or null where /proc cannot tell it (then owners are never recorded). */
function self(): Promise<(ProcessIdentity & { startTicks: string }) | null> {
  selfIdentity ??= (async () => {
    try {
      const [pidNamespace, bootId, startTicks] = await Promise.all([
        fs.readlink(`${PROC}/self/ns/pid`),
        fs.readFile(`${PROC}/sys/kernel/random/boot_id`, 'utf8').then((t) => t.trim()),
        processStartTicks(process.pid),
      ]);
      return startTicks === null ? null : { pidNamespace, bootId, startTicks };
    } catch {
      return null;
    }
  })();
  return selfIdentity;
}

/** Start time of `pid` in ticks after boot, or null when there is no such process. */
async function processStartTicks(pid: number): Promise<string | null> {
  return (await readProcStat(pid))?.startTicks ?? null;
}

function ownerPath(lockPath: string): string {
  return `${lockPath}${OWNER_SUFFIX}`;
}

/** Records this process as the owner of the lock directory it has just taken. */
export async function writeLockOwner(lockPath: string): Promise<void> {
  const me = await self();
  if (!me) return;
  const st = statSync(lockPath);
  const owner: LockOwner = { pid: process.pid, ...me, lockIno: st.ino, lockBirthMs: st.birthtimeMs };
  const tmp = `${ownerPath(lockPath)}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(owner)}\n`, { mode: 0o600 });
  renameSync(tmp, ownerPath(lockPath));
}

/**
 * Removes the owner record if it still names `owner` (by default this process): a record another
 * process wrote since (it took the lock after ours was lost) stays.
 */
export async function removeLockOwner(lockPath: string, owner?: Pick<LockOwner, 'pid' | 'startTicks'>): Promise<void> {
  const expected = owner ?? (await self().then((me) => (me ? { pid: process.pid, startTicks: me.startTicks } : null)));
  const current = readLockOwner(lockPath);
  if (!current || !expected || current.pid !== expected.pid || current.startTicks !== expected.startTicks) return;
  try {
    rmSync(ownerPath(lockPath), { force: true });
  } catch {
    // left for the next owner to replace; a takeover checks the lock directory it describes
  }
}

export function readLockOwner(lockPath: string): LockOwner | null {
  try {
    const v = JSON.parse(readFileSync(ownerPath(lockPath), 'utf8')) as Partial<LockOwner>;
    if (typeof v.pid !== 'number' || typeof v.startTicks !== 'string' || typeof v.pidNamespace !== 'string' ||
      typeof v.bootId !== 'string' || typeof v.lockIno !== 'number' || typeof v.lockBirthMs !== 'number') return null;
    return v as LockOwner;
  } catch {
    return null;
  }
}

/**
 * True only when it is certain that `owner` holds the lock directory there now and is gone: the
 * record describes this very directory, it was written in this boot and this PID namespace, and no
 * process with its pid and start time exists.
 */
export async function lockOwnerGone(lockPath: string, owner: LockOwner): Promise<boolean> {
  const me = await self();
  if (!me || me.bootId !== owner.bootId || me.pidNamespace !== owner.pidNamespace) return false;
  let st;
  try {
    st = await fs.stat(lockPath);
  } catch {
    return false;
  }
  // without a birth time (some filesystems) a reused inode number could pass for the old directory
  if (owner.lockBirthMs === 0 || st.ino !== owner.lockIno || st.birthtimeMs !== owner.lockBirthMs) return false;
  if (owner.pid === process.pid && owner.startTicks === me.startTicks) return false;
  return (await processStartTicks(owner.pid).catch(() => owner.startTicks)) !== owner.startTicks;
}
