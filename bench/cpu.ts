// CPU time during a benchmark window, read from /proc: the whole machine's busy time (/proc/stat) and
// each process's own time plus that of its reaped children (/proc/PID/stat utime, stime, cutime,
// cstime), grouped by role. It answers whether a storm is limited by the machine's cores rather than by
// waiting: no schedule can finish work that needs N ms of CPU on C cores in less than N / C ms.
import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';

/** USER_HZ: /proc reports CPU time in ticks of 1/100 s on Linux (`getconf CLK_TCK`) */
const TICKS_PER_SECOND = 100;
const MS_PER_TICK = 1000 / TICKS_PER_SECOND;

interface ProcTimes {
  ppid: number;
  comm: string;
  /** own CPU (utime + stime), in ticks */
  own: number;
  /** reaped children's CPU (cutime + cstime), in ticks */
  reaped: number;
}

export interface CpuSnapshot {
  at: number;
  /** machine-wide, in ticks summed over all CPUs */
  busy: number;
  total: number;
  procs: Map<number, ProcTimes>;
}

/**
 * A process whose tree is counted apart: its own time under `name`; the processes below it (live, or
 * reaped inside the window) under `children` when given, else under `name` too.
 */
export interface CpuRole {
  name: string;
  pid: number;
  children?: string;
}

export interface CpuUse {
  wallMs: number;
  cores: number;
  /** machine-wide busy CPU time in the window */
  busyMs: number;
  /** busy / (wall × cores) */
  utilisation: number;
  /** the shortest the window's work could take on these cores: busy / cores */
  floorMs: number;
  /** CPU ms per role (a role's process and everything below it), plus 'other' */
  byRole: Map<string, number>;
}

function readProcStat(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.slice(0, 8).reduce((a, b) => a + b, 0); // user … steal (guest time is inside user)
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

function readProcs(): Map<number, ProcTimes> {
  const procs = new Map<number, ProcTimes>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let text: string;
    try {
      text = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // comm may hold spaces and parentheses: it ends at the last ')'
    const close = text.lastIndexOf(')');
    const f = text.slice(close + 2).split(' ');
    procs.set(Number(entry), {
      ppid: Number(f[1]),
      comm: text.slice(text.indexOf('(') + 1, close),
      own: Number(f[11]) + Number(f[12]),
      reaped: Number(f[13]) + Number(f[14]),
    });
  }
  return procs;
}

export function cpuSnapshot(): CpuSnapshot {
  return { at: performance.now(), ...readProcStat(), procs: readProcs() };
}

/**
 * CPU used between two snapshots. A process is attributed to the first role found walking up from it
 * (so the simulated kernel's losetup counts as the kernel's, not as the bench process's); processes
 * that came and went inside the window show up in their reaping parent's children time.
 */
export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot, roles: CpuRole[]): CpuUse {
  const byPid = new Map(roles.map((r) => [r.pid, r]));
  /** the nearest role at or above `pid`, and whether `pid` is that role's own process */
  const roleOf = (pid: number): { role: CpuRole; self: boolean } | undefined => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
      const role = byPid.get(p);
      if (role) return { role, self: p === pid };
      p = b.procs.get(p)?.ppid ?? a.procs.get(p)?.ppid ?? 0;
    }
    return undefined;
  };
  const byRole = new Map<string, number>();
  for (const r of roles) {
    byRole.set(r.name, 0);
    if (r.children) byRole.set(r.children, 0);
  }
  let attributed = 0;
  const add = (name: string, ticks: number): void => {
    const ms = ticks * MS_PER_TICK;
    byRole.set(name, (byRole.get(name) ?? 0) + ms);
    attributed += ms;
  };
  for (const [pid, after] of b.procs) {
    const found = roleOf(pid);
    if (!found) continue;
    const before = a.procs.get(pid) ?? { own: 0, reaped: 0 };
    const below = found.role.children ?? found.role.name;
    add(found.self ? found.role.name : below, after.own - before.own);
    add(below, after.reaped - before.reaped);
  }
  const cores = os.availableParallelism();
  const busyMs = (b.busy - a.busy) * MS_PER_TICK;
  const wallMs = b.at - a.at;
  byRole.set(OTHER, Math.max(0, busyMs - attributed));
  return { wallMs, cores, busyMs, utilisation: wallMs > 0 ? busyMs / (wallMs * cores) : 0, floorMs: busyMs / cores, byRole };
}

export const OTHER = 'rest of the machine (kernel threads, other work)';
