// multipathd on the node: whether it runs, and the two settings that decide what a volume with several
// portals (or one) becomes: find_multipaths and user_friendly_names, read from the running daemon's
// merged configuration (`multipathd show config`, the same text as `multipath -t` and the syntax of
// /etc/multipath.conf).
import type { Config } from '../config.js';
import { DeadlineExceeded } from '../errors.js';
import { firstLine, type CommandRunner, type RunResult } from '../runner.js';
import { CHECK, ok, warn, type Check } from './check.js';
import { describeHostAccess, hostAccessOf, prefixOf } from './host-access.js';

export interface MultipathDefaults {
  /** normalised: on (yes), off (no), strict, greedy, smart */
  findMultipaths?: string;
  /** normalised: yes, no */
  userFriendlyNames?: string;
  findMultipathsTimeout?: number;
}

/** A value: one word, or a double-quoted string; outside quotes `#` and `!` start a comment (multipath.conf(5)). */
function valueOf(rest: string): string {
  const t = rest.trim();
  if (t.startsWith('"')) {
    const end = t.indexOf('"', 1);
    return end < 0 ? t.slice(1) : t.slice(1, end);
  }
  return t.split(/[\s#!]/)[0] ?? '';
}

const FIND_MULTIPATHS_ALIASES: Record<string, string> = { yes: 'on', no: 'off', '1': 'on', '0': 'off' };
const BOOL_ALIASES: Record<string, string> = { on: 'yes', off: 'no', '1': 'yes', '0': 'no' };

/** Keys of the top-level `defaults { … }` section (device and multipath subsections have their own). */
export function parseMultipathDefaults(text: string): MultipathDefaults {
  const out: MultipathDefaults = {};
  const stack: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^\s+/, '');
    if (line === '' || line.startsWith('#') || line.startsWith('!')) continue;
    if (/^}/.test(line)) {
      stack.pop();
      continue;
    }
    const m = /^(\S+)\s*(.*)$/.exec(line)!;
    const key = m[1]!;
    const rest = m[2]!;
    if (/^\{/.test(rest.trim())) {
      stack.push(key);
      continue;
    }
    if (stack.length !== 1 || stack[0] !== 'defaults') continue;
    const value = valueOf(rest).toLowerCase();
    if (key === 'find_multipaths') out.findMultipaths = FIND_MULTIPATHS_ALIASES[value] ?? value;
    else if (key === 'user_friendly_names') out.userFriendlyNames = BOOL_ALIASES[value] ?? value;
    else if (key === 'find_multipaths_timeout' && /^-?\d+$/.test(value)) out.findMultipathsTimeout = Number(value);
  }
  return out;
}

/** What each find_multipaths value means for this driver's volumes (multipath.conf(5)). */
const FIND_MULTIPATHS_MEANING: Record<string, string> = {
  on: 'a LUN becomes a map once a second path with its WWID appears: volumes with several portals get one, single-portal volumes stay plain disks',
  off: 'multipathd makes a map over every path, a single one too; the driver waits for the map of volumes with several portals',
  greedy: 'every path becomes a map and udev hands it to multipathd: the driver waits for the map (timeouts.multipathWaitMs)',
  smart: 'udev holds a new LUN\'s first path until a second appears or find_multipaths_timeout passes; the driver waits up to timeouts.multipathWaitMs for the map',
};

const STRICT_FIX = 'set `find_multipaths yes` (or greedy) in the defaults section of /etc/multipath.conf on the host and `systemctl reload multipathd`';

function namesText(d: MultipathDefaults): string {
  if (d.userFriendlyNames === undefined) return '';
  const how = d.userFriendlyNames === 'yes' ? 'maps are named mpathN' : 'maps are named by WWID';
  return `; user_friendly_names ${d.userFriendlyNames} (${how}; the driver finds a map by the WWID in dm/uuid, never by its name, so either works)`;
}

/** The advice for a running multipathd with these settings. */
export function multipathAdvice(d: MultipathDefaults): Check {
  const fm = d.findMultipaths;
  if (fm === 'strict') {
    return warn(CHECK.multipathd, `running; find_multipaths strict (multipath-tools' built-in default when /etc/multipath.conf does not set it): only WWIDs already in /etc/multipath/wwids get a map, so a new volume with several portals gets none and the driver uses its first path, without failover${namesText(d)}`, STRICT_FIX);
  }
  const meaning = fm ? FIND_MULTIPATHS_MEANING[fm] : undefined;
  const fmText = fm === undefined ? 'find_multipaths not shown' : `find_multipaths ${fm}${meaning ? ` (${meaning})` : ''}`;
  return ok(CHECK.multipathd, `running; ${fmText}${namesText(d)}`);
}

const NOT_RUNNING_FIX = 'needed only for volumes with several portals: on the host `apt install multipath-tools` (RHEL: device-mapper-multipath), set `find_multipaths yes` in /etc/multipath.conf, `systemctl enable --now multipathd`';

export async function checkMultipathd(cfg: Config, runner: CommandRunner): Promise<Check> {
  const via = describeHostAccess(hostAccessOf(prefixOf(cfg, 'multipathd')));
  let r: RunResult;
  try {
    r = await runner.run('multipathd', ['show', 'config']);
  } catch (e) {
    if (e instanceof DeadlineExceeded) return warn(CHECK.multipathd, `multipathd show config did not answer (host access: ${via}): ${e.message}`, 'check multipathd on the host (`systemctl status multipathd`); a hung multipathd also stalls flushing maps at unstage');
    return warn(CHECK.multipathd, `${(e as Error).message} (host access: ${via}); volumes with several portals get no multipath map (the driver uses their first path, without failover)`, NOT_RUNNING_FIX);
  }
  if (r.exitCode === 0 && /^defaults\s*\{/m.test(r.stdout)) return multipathAdvice(parseMultipathDefaults(r.stdout));
  // multipath-tools 0.9.4 prints nothing and exits 1 when no daemon listens; older ones say so on stderr
  const said = r.stdout.trim() || r.stderr.trim() ? `: ${firstLine(r)}` : ' (no output)';
  return warn(CHECK.multipathd, `not running (multipathd show config exited ${r.exitCode}${said}; host access: ${via}); volumes with several portals get no multipath map (the driver uses their first path, without failover)`, NOT_RUNNING_FIX);
}
