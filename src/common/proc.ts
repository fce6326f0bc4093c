// What /proc says about processes: the command name and start time of one (fields 2 and 22 of
// /proc/PID/stat), the pids it lists, and the time since boot that start times count from.
import { promises as fs } from 'node:fs';
import { errnoCode } from '../errors.js';

export const PROC_ROOT = '/proc';
/** /proc/PID/stat field 22 (1-based): the process start time in clock ticks after boot */
const STARTTIME_FIELD = 22;
/** fields after the command name start at field 3 */
const FIRST_FIELD_AFTER_COMM = 3;
/** The unit of /proc/PID/stat times (`getconf CLK_TCK`): USER_HZ, 100 in the ABI of every architecture Kubernetes nodes run on. */
export const CLOCK_TICKS_PER_SECOND = 100;

export interface ProcStat {
  pid: number;
  /** the command name, at most 15 bytes (the executable's base name unless the process renamed itself) */
  comm: string;
  /** start time in clock ticks after boot, as printed */
  startTicks: string;
}

/** The command name and start time of `pid`, or null when there is no such process (or no readable line). */
export async function readProcStat(pid: number, procRoot = PROC_ROOT): Promise<ProcStat | null> {
  let text: string;
  try {
    text = await fs.readFile(`${procRoot}/${pid}/stat`, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ESRCH') return null;
    throw e;
  }
  // the command name (field 2) may hold spaces and parentheses: fields 3… follow the last ')'
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const startTicks = text.slice(close + 2).split(' ')[STARTTIME_FIELD - FIRST_FIELD_AFTER_COMM];
  return startTicks === undefined ? null : { pid, comm: text.slice(open + 1, close), startTicks };
}

/** The pids /proc lists (those this process can see: its PID namespace's). */
export async function listPids(procRoot = PROC_ROOT): Promise<number[]> {
  return (await fs.readdir(procRoot)).filter((name) => /^[1-9][0-9]*$/.test(name)).map(Number);
}

/** Milliseconds since boot (/proc/uptime, 10 ms resolution). */
export async function uptimeMs(procRoot = PROC_ROOT): Promise<number> {
  const seconds = Number((await fs.readFile(`${procRoot}/uptime`, 'utf8')).split(' ')[0]);
  if (!Number.isFinite(seconds)) throw new Error(`${procRoot}/uptime holds no uptime`);
  return seconds * 1000;
}
