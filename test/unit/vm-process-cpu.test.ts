// The real-kernel tier's per-process CPU between two snapshots: a child reaped within the window is
// charged to its parent for what it used within the window only.
import { describe, expect, it } from 'vitest';
import { parseProcStat, ticksUsedByName, type ProcessTicks } from '../vm/process-cpu.js';

const stat = (pid: number, comm: string, ppid: number, utime: number, stime: number, cutime: number, cstime: number, start = 100) =>
  `${pid} (${comm}) S ${ppid} ${pid} ${pid} 0 -1 4194560 100 0 0 0 ${utime} ${stime} ${cutime} ${cstime} 20 0 1 0 ${start} 1000 10`;

function snapshot(lines: string[]): Map<number, ProcessTicks> {
  return new Map(lines.map((l) => [Number(l.split(' ')[0]), parseProcStat(l)!]));
}

describe('per-process CPU of the real-kernel tier', () => {
  it('reads the name, the parent and the ticks of a /proc/PID/stat line (a name with spaces and parentheses too)', () => {
    expect(parseProcStat(stat(7, 'kworker/u4:5-iscsi_q_1', 2, 3, 4, 5, 6, 4242))).toEqual({ comm: 'kworker/u4:5-iscsi_q_', ppid: 2, start: 4242, own: 7, children: 11 });
    expect(parseProcStat(stat(8, '(udev-worker)', 1, 10, 0, 0, 0))).toMatchObject({ comm: '(udev-worker)', own: 10 });
    expect(parseProcStat('garbage')).toBeNull();
  });

  it('charges a parent only the window part of a child reaped in it, and a child born and reaped in it whole', () => {
    const before = snapshot([
      stat(100, 'systemd-udevd', 1, 5, 5, 0, 0),
      // a worker that used 300 ticks before the window and 20 in it, then was reaped
      stat(201, '(udev-worker)', 100, 250, 50, 0, 0),
      // one alive at both snapshots
      stat(202, '(udev-worker)', 100, 100, 0, 0, 0),
    ]);
    const after = snapshot([
      // cutime+cstime: 320 from worker 201, 15 from a worker started and reaped within the window
      stat(100, 'systemd-udevd', 1, 6, 5, 300, 35),
      stat(202, '(udev-worker)', 100, 140, 0, 0, 0),
    ]);
    expect(Object.fromEntries(ticksUsedByName(before, after))).toEqual({ 'systemd-udevd': 1 + 20 + 15, '(udev-worker)': 40 });
  });

  it('counts a reused pid (another start time) as a new process, a renamed kernel worker as the same, and leaves out the skipped one', () => {
    const before = snapshot([stat(300, 'blkid', 1, 9, 0, 0, 0, 500), stat(400, 'node', 1, 50, 0, 0, 0), stat(12, 'kworker/u4:6-events_unbound', 2, 900, 0, 0, 0, 5)]);
    const after = snapshot([stat(300, 'sg_inq', 1, 2, 0, 0, 0, 800), stat(400, 'node', 1, 90, 0, 0, 0), stat(12, 'kworker/u4:6-flush-8', 2, 930, 0, 0, 0, 5)]);
    expect(Object.fromEntries(ticksUsedByName(before, after, 400))).toEqual({ sg_inq: 2, 'kworker/u4:6-flush-': 30 });
  });
});
