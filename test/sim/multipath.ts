// Fake multipath-tools commands over the simulated kernel's dm maps: `multipath -ll | -l | -f | -F`
// and `multipathd show maps | show topology | show config | resize map | del map` with the formats of
// open-iscsi.md §5 (libmultipath/print.c). Without --multipath the host behaves like one with
// multipath-tools installed but no multipathd running: no maps, and multipathd cannot be reached.
import type { DmMap, SimKernel } from './kernel.js';
import type { Reply } from './iscsiadm.js';

/** ≥0.8.6 log prefix: monotonic "<sec>.<usec> | ". */
function logPrefix(): string {
  const t = performance.now() / 1000;
  return `${Math.floor(t)}.${String(Math.floor((t % 1) * 1e6)).padStart(6, '0')} | `;
}

/** libmultipath snprint_size: KiB scaled by 1024, one decimal below 10. */
export function formatSize(sectors: number): string {
  let s = sectors / 2;
  const units = ['K', 'M', 'G', 'T', 'P'];
  let u = 0;
  while (s >= 1024 && u < units.length - 1) {
    s /= 1024;
    u++;
  }
  return `${s < 10 ? s.toFixed(1) : s.toFixed(0)}${units[u]}`;
}

function pad(rows: string[][], lastPadded = false): string[] {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c < r.length - 1 || lastPadded ? cell.padEnd(widths[c]!) : cell)).join(' '));
}

/** `multipath -ll` / `multipathd show topology` for one map; failover grouping (one path per group). */
export function formatTopology(map: DmMap): string[] {
  const first = map.paths[0];
  const vendor = first ? `${first.vendor.trim()},${first.model.trim()}` : '##,##';
  const lines = [
    `${map.name} (${map.wwid}) dm-${map.index} ${vendor}`,
    `size=${formatSize(map.sectors)} features='0' hwhandler='0' wp=${first?.disk?.readonly ? 'ro' : 'rw'}`,
  ];
  const cols = pad(map.paths.map((p) => {
    const failed = p.session.state !== 'LOGGED_IN';
    return [p.hctl, p.disk!.name, `${p.disk!.loop.major}:${p.disk!.loop.minor}`, failed ? 'failed' : 'active', failed ? 'faulty' : 'ready', 'running'];
  }), false);
  map.paths.forEach((_, i) => {
    const last = i === map.paths.length - 1;
    lines.push(`${last ? '`' : '|'}-+- policy='service-time 0' prio=1 status=${i === 0 ? 'active' : 'enabled'}`);
    lines.push(`${last ? ' ' : '|'} \`- ${cols[i]}`);
  });
  return lines;
}

function reply(stdout: string[], stderr: string[], code: number): Reply {
  return { stdout: stdout.map((l) => `${l}\n`).join(''), stderr: stderr.map((l) => `${l}\n`).join(''), code };
}

function sortedMaps(kernel: SimKernel): DmMap[] {
  return [...kernel.maps.values()].sort((a, b) => a.index - b.index);
}

export async function multipath(kernel: SimKernel, argv: string[]): Promise<Reply> {
  let flush: string | undefined;
  let flushAll = false;
  let list = false;
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-f') flush = argv[++i];
    else if (a === '-F') flushAll = true;
    else if (a === '-l' || a === '-ll') list = true;
    else if (a === '-v' || a === '-R' || a === '-p' || a === '-b') i++;
    else if (a.startsWith('-')) continue;
    else positional.push(a);
  }
  if (flush !== undefined) {
    if (!flush) return reply([], ['the -f option requires a map name to remove'], 1);
    const map = kernel.findMap(flush);
    if (!map) return reply([], [`${logPrefix()}${flush} is not a multipath device`], 1);
    if (kernel.mapInUse(map)) return reply([], [`${logPrefix()}${map.name}: map in use`], 1);
    await kernel.removeMap(map);
    return reply([], [], 0);
  }
  if (flushAll) {
    const errors: string[] = [];
    for (const map of sortedMaps(kernel)) {
      if (kernel.mapInUse(map)) errors.push(`${logPrefix()}${map.name}: map in use`);
      else await kernel.removeMap(map);
    }
    return reply([], errors, errors.length ? 1 : 0);
  }
  if (list || positional.length) {
    const maps = sortedMaps(kernel).filter((m) => !positional.length || positional.some((p) => kernel.findMap(p) === m || m.paths.some((x) => p.endsWith(`/${x.disk?.name}`) || p === x.disk?.name)));
    return reply(maps.flatMap(formatTopology), [], 0);
  }
  return reply([], [], 0);
}

const MAP_FIELDS: Record<string, { header: string; get: (m: DmMap) => string }> = {
  n: { header: 'name', get: (m) => m.name },
  d: { header: 'sysfs', get: (m) => `dm-${m.index}` },
  w: { header: 'uuid', get: (m) => m.wwid },
  N: { header: 'paths', get: (m) => String(m.paths.length) },
  S: { header: 'size', get: (m) => formatSize(m.sectors) },
  t: { header: 'dm-st', get: () => 'active' },
};

function showMaps(maps: DmMap[], format: string, pretty: boolean): string[] {
  const fields = [...format.matchAll(/%(\w)/g)].map((m) => MAP_FIELDS[m[1]!]).filter((f): f is (typeof MAP_FIELDS)[string] => !!f);
  if (!maps.length || !fields.length) return [];
  const rows = maps.map((m) => fields.map((f) => f.get(m)));
  return pretty ? pad([fields.map((f) => f.header), ...rows]) : rows.map((r) => r.join(' '));
}

/**
 * `multipathd show config` (= `multipath -t`): the head of the defaults section in multipath-tools
 * 0.9.4's format (TAB indent, quoted strings), with the two settings that describe this simulated
 * multipathd: every path becomes a map (find_multipaths greedy; every disk's udev entry carries
 * DM_MULTIPATH_DEVICE_PATH=1) and maps are named mpatha… (user_friendly_names yes).
 */
const SHOW_CONFIG = [
  'defaults {', '\tverbosity 2', '\tpolling_interval 5', '\tpath_selector "service-time 0"', '\tpath_grouping_policy "failover"',
  '\tuser_friendly_names "yes"', '\tbindings_file "/etc/multipath/bindings"', '\twwids_file "/etc/multipath/wwids"',
  '\tfind_multipaths "greedy"', '\tfind_multipaths_timeout -10', '}', 'blacklist {', '}', 'blacklist_exceptions {', '}', 'devices {', '}', 'overrides {', '}',
];

export async function multipathd(kernel: SimKernel, argv: string[]): Promise<Reply> {
  if (!kernel.multipath) return reply([], ['ERROR: failed to connect to multipathd'], 1);
  const words = argv.flatMap((a) => (a.startsWith('-k') ? a.slice(2).split(/\s+/) : [a])).filter(Boolean);
  const cmd = words.join(' ');
  const maps = sortedMaps(kernel);
  let m: RegExpExecArray | null;
  if ((m = /^(?:show|list) maps(?: (raw))?(?: format (.+))?$/.exec(cmd))) {
    return reply(showMaps(maps, m[2] ?? '%n %d %w', m[1] !== 'raw'), [], 0);
  }
  if (/^(?:show|list) (?:topology|maps topology)$/.test(cmd)) return reply(maps.flatMap(formatTopology), [], 0);
  if (/^(?:show|list) config$/.test(cmd)) return reply(SHOW_CONFIG, [], 0);
  if ((m = /^(?:show|list) (?:map (\S+) topology|topology map (\S+))$/.exec(cmd))) {
    const map = kernel.findMap(m[1] ?? m[2]!);
    return map ? reply(formatTopology(map), [], 0) : reply(['fail'], [], 1);
  }
  if ((m = /^resize map (\S+)$/.exec(cmd))) {
    const map = kernel.findMap(m[1]!);
    return map && (await kernel.resizeMap(map)) ? reply(['ok'], [], 0) : reply(['fail'], [], 1);
  }
  if ((m = /^(?:del|remove) map (\S+)$/.exec(cmd))) {
    const map = kernel.findMap(m[1]!);
    if (!map || kernel.mapInUse(map)) return reply(['fail'], [], 1);
    await kernel.removeMap(map);
    return reply(['ok'], [], 0);
  }
  if (/^(reconfigure|add path \S+|del path \S+|remove path \S+)$/.test(cmd)) return reply(['ok'], [], 0);
  return reply(['fail'], [], 1);
}
