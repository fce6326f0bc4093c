// Which processes used the guest's CPUs between two snapshots of /proc/PID/stat. A process's own ticks
// count while it lives; a child's ticks reach its parent's cutime/cstime only when the child is reaped,
// and then all of them, from the child's start. So a parent is charged what its reaped children used
// within the window only: what they had used before it, when the first snapshot saw them, is taken off.
// Counting the whole of it put a storm's udev workers, reaped during the unstage, into that window
// ("systemd-udevd 594%"). A process is the same one at both snapshots when its pid and its start time
// are: a kernel worker's name changes with the queue it serves (kworker/u4:6-flush-8, …-events_unbound).

export interface ProcessTicks {
  comm: string;
  ppid: number;
  /** clock ticks after boot when it started: with the pid, the process's identity */
  start: number;
  /** utime + stime */
  own: number;
  /** cutime + cstime: the reaped children's, whole */
  children: number;
}

/** One /proc/PID/stat line; null for one that cannot be parsed. */
export function parseProcStat(stat: string): ProcessTicks | null {
  const open = stat.indexOf('(');
  const close = stat.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  // kernel threads' numbers dropped (kworker/u4:5 → kworker/u4), so they add up by kind
  const comm = stat.slice(open + 1, close).replace(/\d+$/, '').replace(/[/:]+$/, '');
  // after the name: state ppid … utime (12th) stime cutime cstime … starttime (20th)
  const f = stat.slice(close + 2).split(' ');
  const n = (i: number) => Number(f[i]);
  if (![1, 11, 12, 13, 14, 19].every((i) => Number.isFinite(n(i)))) return null;
  return { comm, ppid: n(1), start: n(19), own: n(11) + n(12), children: n(13) + n(14) };
}

/** Ticks per process name used between `before` and `after` (pid → ticks), children reaped within it included once. */
export function ticksUsedByName(before: Map<number, ProcessTicks>, after: Map<number, ProcessTicks>, skip?: number): Map<string, number> {
  // what each parent's children that were alive before and are gone now had used before the window
  const usedBeforeByReaped = new Map<number, number>();
  for (const [pid, b] of before) {
    const a = after.get(pid);
    if (a && a.start === b.start) continue;
    usedBeforeByReaped.set(b.ppid, (usedBeforeByReaped.get(b.ppid) ?? 0) + b.own + b.children);
  }
  const byName = new Map<string, number>();
  for (const [pid, a] of after) {
    if (pid === skip) continue;
    const b = before.get(pid);
    const same = b !== undefined && b.start === a.start;
    const used = a.own - (same ? b.own : 0) + Math.max(0, a.children - (same ? b.children : 0) - (usedBeforeByReaped.get(pid) ?? 0));
    if (used > 0) byName.set(a.comm, (byName.get(a.comm) ?? 0) + used);
  }
  return byName;
}
