// Driver configuration: every host path is under a configurable root and every external tool is a
// configurable command with its own timeout and optional prefix (e.g. `chroot /host`), so the same
// code runs on a real node, in a container, and on the simulated host used by the tests.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { parse as parseYaml } from 'yaml';

export const COMMAND_NAMES = [
  'iscsiadm', 'multipath', 'multipathd', 'blkid', 'mkfs.ext4', 'mkfs.ext3', 'mkfs.xfs', 'mkfs.btrfs',
  'mount', 'umount', 'resize2fs', 'xfs_growfs', 'btrfs', 'blockdev', 'tgtadm', 'losetup', 'truncate', 'fsck',
  'stat', 'find',
] as const;
export type CommandName = (typeof COMMAND_NAMES)[number];

export interface CommandConfig {
  /** Executable and leading arguments, e.g. ["iscsiadm"] or ["/sim/bin/iscsiadm"]. */
  argv: string[];
  /** Hard limit for one run; the process tree is killed when it expires. */
  timeoutMs: number;
  /** Overrides the global prefix for this command (e.g. [] to run a tool inside the container). */
  prefix?: string[];
}

export type Mode = 'node' | 'controller' | 'all';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

export interface HostConfig {
  sysRoot: string;            // /sys
  devRoot: string;            // /dev
  mountInfoPath: string;      // /proc/self/mountinfo
  initiatorNameFile: string;  // /etc/iscsi/initiatorname.iscsi
  udevDataDir: string;        // /run/udev/data: udev's database (which paths multipath claims)
  /** open-iscsi's lock dir (its LOCK_DIR, holding `lock` and `lock.write`) as the driver sees it: with
   *  `commandPrefix: [chroot, /host]` that is /host/run/lock/iscsi, with nsenter the host path mounted
   *  into the container at the same place */
  iscsiLockDir: string;       // /run/lock/iscsi
}

export interface TimeoutConfig {
  deviceWaitMs: number;       // how long to wait for the LUN's block device after login/scan
  devicePollMs: number;       // fallback poll while watching for the device
  multipathWaitMs: number;    // how long to wait for a dm holder when a LUN has several paths
  mapFlushMs: number;         // how long a multipath map's flush is retried while it is open (udev probes it briefly after writes)
  portalResolveMs: number;    // how long a portal given by host name may take to resolve
  volumeProbeMs: number;      // how long stats wait for I/O on a volume's path before calling it stuck
  sessionResyncMs: number;    // how long a logout waits for a restarted iscsid to take over a session the kernel has
  shutdownGraceMs: number;    // in-flight calls get this long after SIGTERM
  probeCacheMs: number;       // Probe results are reused for this long
  deviceReadMs: number;       // how long in-process I/O on a device may take: the read of its first and last MiB (before mkfs), the flush before its removal
  /** open-iscsi's lock.write older than this, that no live iscsiadm can hold, is removed (left by a killed
   *  iscsiadm); keep it below commands.iscsiadm.timeoutMs, or iscsiadm's own 30 s wait is killed first */
  iscsiLockStaleMs: number;
  unmountRetries: number;     // EBUSY retries
  unmountRetryDelayMs: number;
}

/** The node healer (src/node/healer.ts): re-login, rescan, reports, half-done records and orphans. */
export interface HealingConfig {
  /** the off switch: no pass at all when false */
  enabled: boolean;
  /** time between the end of one pass and the start of the next; also the first backoff of a failed repair */
  intervalMs: number;
  /** how long an orphan (or a record left half-done with no call on it) is seen before it is removed */
  orphanGraceMs: number;
  /** false: orphans are never removed (the rest of the healing still runs) */
  reapOrphans: boolean;
}

export interface NodeConfig {
  maxVolumesPerNode: number;  // 0 = no limit reported
  topology: Record<string, string>;
  defaultFsType: 'ext4' | 'xfs' | 'ext3' | 'btrfs';
  mkfsOptions: Record<string, string[]>;
  /** iface used when the volume names none */
  defaultIface: string;
  /** kubelet's root dir (its --root-dir): where the start-up check looks at mount propagation */
  kubeletDir: string;
  healing: HealingConfig;
}

export interface TgtBackendConfig {
  controlPort: number;              // tgtadm -C
  portals: string[];                // what nodes connect to, host:port
  poolDir: string;                  // sparse backing files live here
  iqnPrefix: string;                // iqn.<date>.<reversed domain>
  sharedTargetName: string;         // used when a StorageClass asks for a shared target
  /** longest byte copy of a backing file (a snapshot or clone on a pool without reflinks); reflinks are instant */
  copyTimeoutMs: number;
}

export interface StaticBackendConfig {
  inventoryFile: string;
  wipeOnDeleteMiB: number;
}

export interface ControllerConfig {
  backend: 'tgt' | 'static';
  defaultVolumeSizeBytes: number;
  tgt: TgtBackendConfig;
  static: StaticBackendConfig;
}

export interface Config {
  driverName: string;
  mode: Mode;
  endpoint: string;             // unix:///abs/path.sock
  socketMode: number;           // file mode of the socket
  nodeId?: string;              // default: the initiator name
  logLevel: LogLevel;
  stateDir: string;             // driver's protected state (metadata, locks, controller state)
  host: HostConfig;
  commandPrefix: string[];      // e.g. ["chroot", "/host"] or ["nsenter", "-t", "1", "-m", "-n", "--"]
  commands: Record<CommandName, CommandConfig>;
  timeouts: TimeoutConfig;
  node: NodeConfig;
  controller: ControllerConfig;
  /** `HOST:PORT` of the Prometheus endpoint (`/metrics`, plain HTTP); empty: no endpoint, no port opened */
  metricsAddress: string;
}

export const DEFAULT_DRIVER_NAME = 'iscsi.csi.tsdriver.dev';

const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
const LONG_COMMAND_TIMEOUT_MS = 300_000; // mkfs / fsck / resize on large devices
/** a byte copy of a backing file runs at disk speed: 10 min copy a few hundred GiB of data */
export const DEFAULT_COPY_TIMEOUT_MS = 600_000;

export function defaultConfig(): Config {
  const commands = {} as Record<CommandName, CommandConfig>;
  for (const name of COMMAND_NAMES) {
    const long = name.startsWith('mkfs') || name === 'fsck' || name === 'resize2fs' || name === 'xfs_growfs' || name === 'btrfs';
    commands[name] = { argv: [name], timeoutMs: long ? LONG_COMMAND_TIMEOUT_MS : DEFAULT_COMMAND_TIMEOUT_MS };
  }
  return {
    driverName: DEFAULT_DRIVER_NAME,
    mode: 'all',
    endpoint: process.env.CSI_ENDPOINT ?? 'unix:///csi/csi.sock',
    socketMode: 0o600,
    nodeId: undefined,
    logLevel: 'info',
    stateDir: '/var/lib/iscsi-csi',
    host: {
      sysRoot: '/sys',
      devRoot: '/dev',
      mountInfoPath: '/proc/self/mountinfo',
      initiatorNameFile: '/etc/iscsi/initiatorname.iscsi',
      udevDataDir: '/run/udev/data',
      iscsiLockDir: '/run/lock/iscsi',
    },
    commandPrefix: [],
    commands,
    timeouts: {
      deviceWaitMs: 30_000,
      devicePollMs: 250,
      multipathWaitMs: 10_000,
      mapFlushMs: 10_000,
      portalResolveMs: 5_000,
      volumeProbeMs: 5_000,
      sessionResyncMs: 30_000,
      shutdownGraceMs: 10_000,
      probeCacheMs: 5_000,
      deviceReadMs: 10_000,
      iscsiLockStaleMs: 10_000,
      unmountRetries: 5,
      unmountRetryDelayMs: 200,
    },
    node: {
      maxVolumesPerNode: 0,
      topology: {},
      defaultFsType: 'ext4',
      mkfsOptions: { ext4: ['-F', '-m0'], ext3: ['-F'], xfs: ['-f'], btrfs: ['-f'] },
      defaultIface: 'default',
      kubeletDir: '/var/lib/kubelet',
      healing: { enabled: true, intervalMs: 30_000, orphanGraceMs: 300_000, reapOrphans: true },
    },
    controller: {
      backend: 'tgt',
      defaultVolumeSizeBytes: 1024 ** 3,
      tgt: {
        controlPort: 0,
        portals: ['127.0.0.1:3260'],
        poolDir: '/var/lib/iscsi-csi/pool',
        iqnPrefix: 'iqn.2026-11.dev.tsdriver',
        sharedTargetName: 'shared',
        copyTimeoutMs: DEFAULT_COPY_TIMEOUT_MS,
      },
      static: { inventoryFile: '/etc/iscsi-csi/inventory.yaml', wipeOnDeleteMiB: 0 },
    },
    metricsAddress: '',
  };
}

export class ConfigError extends Error {}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/**
 * Overlays `src` onto `dst` key by key, checking each key exists and has the default's type, so a typo
 * or a wrong type in a config file is reported with its dotted path instead of silently ignored.
 */
function overlay(dst: Record<string, unknown>, src: Record<string, Json>, where: string, openKeys: Set<string>): void {
  for (const [key, value] of Object.entries(src)) {
    const path = where ? `${where}.${key}` : key;
    const cur = dst[key];
    if (!(key in dst) && !openKeys.has(where)) throw new ConfigError(`unknown key ${path}`);
    if (cur === undefined) {
      dst[key] = value; // open maps (topology, mkfsOptions, commands' optional prefix) and optional keys
      continue;
    }
    if (Array.isArray(cur)) {
      if (!Array.isArray(value)) throw new ConfigError(`${path} must be a list`);
      dst[key] = value;
    } else if (typeof cur === 'object' && cur !== null) {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError(`${path} must be a map`);
      overlay(cur as Record<string, unknown>, value, path, openKeys);
    } else if (typeof cur !== typeof value) {
      throw new ConfigError(`${path} must be a ${typeof cur}, got ${JSON.stringify(value)}`);
    } else {
      dst[key] = value;
    }
  }
}

const OPEN_MAPS = new Set(['node.topology', 'node.mkfsOptions']);
const COMMAND_KEYS = new Set(['argv', 'timeoutMs', 'prefix']);

export function loadConfigFile(file: string): Record<string, Json> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${file}: ${(e as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConfigError(`config file ${file} is not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`config file ${file} must hold a map`);
  return parsed as Record<string, Json>;
}

/** Builds a validated config from defaults, an optional file's content and flag overrides. */
export function buildConfig(file: Record<string, Json> | undefined, overrides: Partial<Config> = {}): Config {
  const cfg = defaultConfig();
  if (file) {
    const commands = file.commands;
    const rest = { ...file };
    delete rest.commands;
    overlay(cfg as unknown as Record<string, unknown>, rest, '', OPEN_MAPS);
    if (commands !== undefined) {
      if (typeof commands !== 'object' || commands === null || Array.isArray(commands)) throw new ConfigError('commands must be a map');
      for (const [name, spec] of Object.entries(commands)) {
        if (!(COMMAND_NAMES as readonly string[]).includes(name)) throw new ConfigError(`unknown command commands.${name} (known: ${COMMAND_NAMES.join(', ')})`);
        if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new ConfigError(`commands.${name} must be a map`);
        for (const k of Object.keys(spec)) if (!COMMAND_KEYS.has(k)) throw new ConfigError(`unknown key commands.${name}.${k}`);
        overlay(cfg.commands[name as CommandName] as unknown as Record<string, unknown>, spec, `commands.${name}`, new Set([`commands.${name}`]));
      }
    }
  }
  Object.assign(cfg, Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)));
  validateConfig(cfg);
  return cfg;
}

/** A healer pass reads sysfs and the records of every volume: not more often than this. */
const MIN_HEAL_INTERVAL_MS = 100;

const DRIVER_NAME_RE = /^[a-zA-Z][A-Za-z0-9-._]{0,61}[a-zA-Z]$/;

export function validateConfig(cfg: Config): void {
  if (!DRIVER_NAME_RE.test(cfg.driverName)) throw new ConfigError(`driverName ${JSON.stringify(cfg.driverName)} must match ${DRIVER_NAME_RE.source}`);
  if (!['node', 'controller', 'all'].includes(cfg.mode)) throw new ConfigError(`mode must be node, controller or all, got ${JSON.stringify(cfg.mode)}`);
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(cfg.logLevel)) throw new ConfigError(`logLevel ${JSON.stringify(cfg.logLevel)} is not a log level`);
  socketPathOf(cfg.endpoint);
  if (cfg.nodeId !== undefined && (typeof cfg.nodeId !== 'string' || cfg.nodeId.length === 0 || cfg.nodeId.length > 256)) throw new ConfigError('nodeId must be a non-empty string of at most 256 characters');
  if (!Number.isInteger(cfg.socketMode) || cfg.socketMode < 0 || cfg.socketMode > 0o777) throw new ConfigError('socketMode must be a file mode between 0 and 0o777');
  for (const [key, dir] of Object.entries({ stateDir: cfg.stateDir, ...prefixKeys('host', cfg.host) })) {
    if (typeof dir !== 'string' || !dir.startsWith('/')) throw new ConfigError(`${key} must be an absolute path`);
  }
  for (const [name, c] of Object.entries(cfg.commands)) {
    if (!Array.isArray(c.argv) || c.argv.length === 0 || !c.argv.every((a) => typeof a === 'string' && a.length > 0)) throw new ConfigError(`commands.${name}.argv must be a non-empty list of strings`);
    if (!(Number.isInteger(c.timeoutMs) && c.timeoutMs > 0)) throw new ConfigError(`commands.${name}.timeoutMs must be a positive integer`);
    if (c.prefix !== undefined && !isStringList(c.prefix)) throw new ConfigError(`commands.${name}.prefix must be a list of strings`);
  }
  if (!isStringList(cfg.commandPrefix)) throw new ConfigError('commandPrefix must be a list of strings');
  for (const [key, v] of Object.entries(cfg.timeouts)) {
    if (!(Number.isInteger(v) && v >= 0)) throw new ConfigError(`timeouts.${key} must be a non-negative integer`);
  }
  if (!(Number.isInteger(cfg.node.maxVolumesPerNode) && cfg.node.maxVolumesPerNode >= 0)) throw new ConfigError('node.maxVolumesPerNode must be a non-negative integer');
  if (!cfg.node.kubeletDir.startsWith('/')) throw new ConfigError('node.kubeletDir must be an absolute path');
  const healing = cfg.node.healing;
  if (!(Number.isInteger(healing.intervalMs) && healing.intervalMs >= MIN_HEAL_INTERVAL_MS)) throw new ConfigError(`node.healing.intervalMs must be an integer of at least ${MIN_HEAL_INTERVAL_MS}`);
  if (!(Number.isInteger(healing.orphanGraceMs) && healing.orphanGraceMs >= 0)) throw new ConfigError('node.healing.orphanGraceMs must be a non-negative integer');
  if (!['tgt', 'static'].includes(cfg.controller.backend)) throw new ConfigError('controller.backend must be tgt or static');
  if (!(Number.isInteger(cfg.controller.tgt.copyTimeoutMs) && cfg.controller.tgt.copyTimeoutMs > 0)) throw new ConfigError('controller.tgt.copyTimeoutMs must be a positive integer');
  if (typeof cfg.metricsAddress !== 'string') throw new ConfigError('metricsAddress must be a string');
  if (cfg.metricsAddress !== '') parseListenAddress(cfg.metricsAddress, 'metricsAddress');
}

export interface ListenAddress {
  /** an IP address or a host name; empty: every interface */
  host: string;
  /** 0: any free port */
  port: number;
}

const HOST_NAME_RE = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const MAX_PORT = 65_535;

/** `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (every interface), as Go's net.Listen and the CSI sidecars take it. */
export function parseListenAddress(text: string, key: string): ListenAddress {
  const bad = (why: string): never => { throw new ConfigError(`${key} ${JSON.stringify(text)} ${why} (HOST:PORT, [IPv6]:PORT or :PORT)`); };
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  if (!m) return bad('is not an address to listen on');
  const host = m[1] ?? m[2] ?? '';
  if (m[1] !== undefined && isIP(host) !== 6) return bad('has no IPv6 address in its brackets');
  if (m[2] !== undefined && host !== '' && isIP(host) === 0 && (!HOST_NAME_RE.test(host) || /^[\d.]+$/.test(host))) return bad('names no IP address or host name');
  const port = Number(m[3]);
  if (port > MAX_PORT) return bad(`has a port above ${MAX_PORT}`);
  return { host, port };
}

function prefixKeys(prefix: string, obj: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(obj).map(([k, v]) => [`${prefix}.${k}`, v]));
}

/** `unix:///abs/path.sock` → `/abs/path.sock`; also accepts `unix:/abs/path`. */
export function socketPathOf(endpoint: string): string {
  const m = /^unix:\/\/(\/.+)$/.exec(endpoint) ?? /^unix:(\/[^/].*)$/.exec(endpoint);
  if (!m || !m[1]) throw new ConfigError(`endpoint ${JSON.stringify(endpoint)} must be unix:///absolute/path.sock`);
  return m[1];
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((a) => typeof a === 'string');
}
