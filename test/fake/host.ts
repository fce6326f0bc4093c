// An in-memory node behind the flows' ports (src/flows/ports.ts), for unit tests that run in
// milliseconds without root: targets with LUNs and portals, open-iscsi's ifaces, discovery and node
// records, sessions with their SCSI hosts, SCSI devices per (host, LUN), by-path links, multipath maps
// holding path devices, filesystems on the LUNs, the mount table, the volume records and the locks.
// Every call through a port is logged (with the locks held at that moment); faults make a step fail.
// It models what the flows depend on, not the kernel: devices appear as the scan asks for them, waits
// answer at once (found, or timed out).
import { createLogger, type Logger } from '../../src/log.js';
import { defaultConfig, type Config } from '../../src/config.js';
import { FailedPrecondition, Internal, NotFound } from '../../src/errors.js';
import { KeyedMutex } from '../../src/common/keyed-mutex.js';
import { ProbeGuard } from '../../src/common/probe-guard.js';
import { BoundedMemo } from '../../src/common/bounded-memo.js';
import { SingleFlight } from '../../src/common/single-flight.js';
import { formatPortal, parsePortal, type FsType, type Portal } from '../../src/common/validate.js';
import { iscsiExitMessage, iscsiExitName, ISCSI_EXIT } from '../../src/node-host/iscsi-exit.js';
import type { IfaceRecord, IscsiFailure, IscsiOutcome, NodeRef, PortalTarget } from '../../src/node-host/iscsiadm.js';
import type { VolumeRecord } from '../../src/node-host/metadata.js';
import { probeFrom, type EdgeRegion } from '../../src/node-host/filesystem.js';
import type { MountInfoEntry, MountState } from '../../src/node-host/mounts.js';
import { VolumePaths, type IscsiSessionInfo, type MultipathHolder } from '../../src/node-host/sysfs.js';
import type { MultipathClaim } from '../../src/node-host/udev.js';
import type { WaitOptions } from '../../src/node-host/devices.js';
import { ForgottenNodes } from '../../src/flows/node-records.js';
import type {
  DeviceNodes, FilesystemTools, IscsiAdmin, MountTable, MultipathClaims, MultipathTool, NodeHost, PortalResolver,
  ScsiView, SessionLedger, SizeWaits, TargetLocks, TargetPaths, VolumeRecords,
} from '../../src/flows/ports.js';
import { sessionKey, type SessionRef } from '../../src/node-host/session-marks.js';

export const DEV_ROOT = '/dev';
/** the node's own initiator name (the `default` iface has none of its own) */
export const NODE_INITIATOR = 'iqn.2026-12.dev.fake:node';
const FIRST_SCSI_HOST = 3;
const DEFAULT_LUN_BYTES = 1 << 30;
const FAKE_STATFS_INODES = 65_536;

export interface FakeLunSpec {
  sizeBytes?: number;
  /** a filesystem already on the LUN (ext4, xfs, …) */
  fs?: string;
  /** the kernel's WWID of the LUN (default: a made-up `naa.6001405…`); null: the device has none readable */
  wwid?: string | null;
  /** ends of the LUN holding data blkid does not recognise (a partition table, a LUKS header it misses) */
  edges?: EdgeRegion[];
}

export interface FakeTarget {
  iqn: string;
  /** `addr:port` */
  portals: string[];
  luns: Record<number, FakeLunSpec>;
  /** initiator names allowed to log in; absent: any */
  acl?: string[];
}

export interface Call {
  /** `<port>.<method>`, e.g. `iscsi.login` */
  op: string;
  /** the arguments that say what it acted on (never a secret) */
  detail: string;
  /** the lock keys held when the call was made */
  locks: string[];
}

/** A step made to fail: an exception for most calls, an iscsiadm exit status for `iscsi.*`. */
export type Failure = Error | { exit: number };

export interface Faults {
  /** portals (`addr:port`) that do not answer: discovery and login time out (exit 8, UNAVAILABLE) */
  portalsDown: Set<string>;
  /** portals whose scanned LUNs never get a block device */
  noDevice: Set<string>;
  /** what multipathd does with path devices: nothing, take them at once, or build the map only while waited for */
  multipathd: 'off' | 'at-once' | 'while-waited';
  /** what multipath's udev rules say about every path device */
  claim: MultipathClaim;
  /** when udev makes a device's by-path link: with the device, once it is mounted (lagging behind a busy node), or never */
  byPathLinks: 'with-device' | 'after-mount' | 'never';
  /** paths whose I/O (read, statfs) hangs until `releaseIo` */
  ioHangs: Set<string>;
  /** portal (`addr:port`) → the WWID its newly scanned devices present instead of their LUN's (a stale device, a LUN number reused) */
  staleWwid: Map<string, string>;
}

interface Lun {
  iqn: string;
  lun: number;
  /** the kernel's WWID (`device/wwid`), null when none is readable */
  wwid: string | null;
  edges: EdgeRegion[];
  sizeBytes: number;
  fs: string | null;
  /** size of the filesystem (as made or last grown) */
  fsBytes: number;
}

interface Session {
  sid: number;
  host: number;
  iqn: string;
  portal: Portal;
  key: string;
  iface: string;
  state: string;
}

interface ScsiDevice {
  name: string;
  sid: number;
  host: number;
  lun: Lun;
  /** the capacity the kernel knows (re-read on rescan) */
  sizeBytes: number;
  state: string;
  /** what `device/wwid` reads: the LUN's, unless the device is another LU's */
  wwid: string | null;
}

interface DmMap {
  dm: string;
  name: string;
  wwid: string;
  lun: Lun;
  sizeBytes: number;
  slaves: Set<string>;
}

interface Mount {
  id: number;
  source: string;
  target: string;
  fsType: string;
  options: string[];
  superOptions: string[];
  stale: boolean;
}

interface InjectedFailure {
  failure: Failure;
  match: string | undefined;
  left: number;
}

const BUILTIN_DEFAULT_IFACE: IfaceRecord = {
  name: 'default', transport: 'tcp', initiatorName: null, hwAddress: null, ipAddress: null, netIfaceName: null,
  settings: { 'iface.iscsi_ifacename': 'default', 'iface.transport_name': 'tcp' },
};

export class FakeHost {
  readonly cfg: Config;
  readonly calls: Call[] = [];
  readonly logs: { level: string; msg: string; [k: string]: unknown }[] = [];
  readonly log: Logger;
  readonly faults: Faults = {
    portalsDown: new Set(), noDevice: new Set(), multipathd: 'off', claim: 'unknown', byPathLinks: 'with-device', ioHangs: new Set(),
    staleWwid: new Map(),
  };
  readonly host: NodeHost;

  private readonly targets = new Map<string, { spec: FakeTarget; luns: Map<number, Lun> }>();
  private readonly ifaces = new Map<string, IfaceRecord>([['default', BUILTIN_DEFAULT_IFACE]]);
  private readonly discoveryRecords = new Map<string, { chapUser: string | null }>();
  private readonly nodeRecordsByKey = new Map<string, { settings: Record<string, string>; tpgt: number | undefined }>();
  private readonly sessionList: Session[] = [];
  private readonly scsiDevices = new Map<string, ScsiDevice>();
  private readonly links = new Map<string, string>();
  private readonly dmMaps = new Map<string, DmMap>();
  private readonly mountList: Mount[] = [];
  private readonly dirs = new Set<string>();
  private readonly files = new Set<string>();
  /** symbolic links kubelet's paths may be (the driver must never mount through one) */
  private readonly symlinks = new Set<string>();
  private readonly records = new Map<string, VolumeRecord>();
  /** record files that cannot be read (a survey names them) */
  private readonly unreadableRecords: string[] = [];
  /** the sessions marked as the driver's */
  private readonly marks = new Map<string, SessionRef>();
  /** holders other than a multipath map (an LVM or md layer, a loop device someone set up) */
  private readonly otherHolders = new Map<string, string[]>();
  private readonly dns = new Map<string, string>();
  private readonly held: string[] = [];
  private readonly mutex = new KeyedMutex();
  private readonly injected = new Map<string, InjectedFailure[]>();
  private readonly hungIo: (() => void)[] = [];
  private counters = { sid: 0, host: FIRST_SCSI_HOST, disk: 1, dm: 0, mount: 100, wwid: 0 };

  constructor(configure: (cfg: Config) => void = () => undefined) {
    const cfg = defaultConfig();
    cfg.timeouts.volumeProbeMs = 20;
    cfg.timeouts.sessionResyncMs = 0;
    configure(cfg);
    this.cfg = cfg;
    this.log = createLogger('debug', { write: (line: string) => void this.logs.push(JSON.parse(line)) });
    this.host = {
      cfg,
      iscsi: this.iscsiAdmin(),
      sysfs: this.scsiView(),
      devices: this.deviceNodes(),
      sizes: this.sizeWaits(),
      udev: this.multipathClaims(),
      mounts: this.mountTable(),
      fs: this.filesystemTools(),
      multipath: this.multipathTool(),
      metadata: this.volumeRecords(),
      sessionMarks: this.sessionLedger(),
      targetLocks: this.targetLocks(),
      paths: this.targetPaths(),
      resolver: this.portalResolver(),
      forgottenNodes: new ForgottenNodes(),
      probes: new ProbeGuard(),
      lastUsage: new BoundedMemo(16),
      discoveries: new SingleFlight<PortalTarget[]>(),
    };
  }

  // --- set-up ----------------------------------------------------------------------------------------

  /** Something already at a staging or target path: a symbolic link, a regular file or a directory. */
  placeAt(path: string, what: 'symlink' | 'file' | 'directory'): this {
    ({ symlink: this.symlinks, file: this.files, directory: this.dirs })[what].add(path);
    return this;
  }

  addTarget(spec: FakeTarget): this {
    const luns = new Map<number, Lun>();
    for (const [n, l] of Object.entries(spec.luns)) {
      const sizeBytes = l.sizeBytes ?? DEFAULT_LUN_BYTES;
      const wwid = l.wwid === undefined ? `naa.6001405${String(++this.counters.wwid).padStart(25, '0')}` : l.wwid;
      luns.set(Number(n), { iqn: spec.iqn, lun: Number(n), wwid, edges: l.edges ?? [], sizeBytes, fs: l.fs ?? null, fsBytes: l.fs ? sizeBytes : 0 });
    }
    this.targets.set(spec.iqn, { spec, luns });
    return this;
  }

  /** The kernel's WWID of a LUN, as a controller would hand it out. */
  wwidOf(iqn: string, lun: number): string | null {
    return this.lunOf(iqn, lun).wwid;
  }

  /** A device name now belongs to another LU (its LUN was replaced under the same sdX name). */
  presentOtherWwid(device: string, wwid: string): void {
    const d = this.scsiDevices.get(device);
    if (!d) throw new Error(`no device ${device}`);
    d.wwid = wwid;
  }

  addIface(name: string, transport = 'tcp'): this {
    this.ifaces.set(name, { ...BUILTIN_DEFAULT_IFACE, name, transport, settings: { 'iface.iscsi_ifacename': name, 'iface.transport_name': transport } });
    return this;
  }

  addHostName(name: string, address: string): this {
    this.dns.set(name, address);
    return this;
  }

  /** Makes `op` fail (every time, or `times` times), only for calls whose detail contains `match` when given. */
  fail(op: string, failure: Failure, opts: { match?: string; times?: number } = {}): this {
    const list = this.injected.get(op) ?? [];
    list.push({ failure, match: opts.match, left: opts.times ?? Infinity });
    this.injected.set(op, list);
    return this;
  }

  /** Another user of a session (an operator, the in-tree plugin): a scan of a LUN no record covers. */
  scanForeignLun(iqn: string, portal: string, lun: number): string | undefined {
    const s = this.sessionList.find((x) => x.iqn === iqn && x.key === portal);
    if (!s) throw new Error(`no session to ${portal} ${iqn}`);
    return this.scan(s, lun)?.name;
  }

  /** The LUN grew on the target (the kernel sees it after a rescan). */
  growLun(iqn: string, lun: number, sizeBytes: number): void {
    this.lunOf(iqn, lun).sizeBytes = sizeBytes;
  }

  setSessionState(iqn: string, portal: string, state: string): void {
    for (const s of this.sessionList) if (s.iqn === iqn && s.key === portal) s.state = state;
  }

  setDeviceState(name: string, state: string): void {
    this.scsiDevices.get(name)!.state = state;
  }

  /** The mount at `target` goes stale (its device went away) or is remounted read-only by the kernel. */
  breakMount(target: string, how: 'stale' | 'remounted-ro'): void {
    const m = this.mountList.filter((x) => x.target === target).at(-1)!;
    if (how === 'stale') m.stale = true;
    else m.superOptions = ['ro'];
  }

  /** Lets every hung read and statfs return. */
  releaseIo(): void {
    this.faults.ioHangs.clear();
    for (const release of this.hungIo.splice(0)) release();
  }

  /** A session logged out behind the driver's back (`iscsiadm -m session -r SID -u`): its devices go, its node record stays. */
  logoutBehindBack(iqn: string, portal: string): void {
    const i = this.sessionList.findIndex((s) => s.iqn === iqn && s.key === portal);
    if (i < 0) throw new Error(`no session to ${portal} ${iqn}`);
    const [s] = this.sessionList.splice(i, 1);
    for (const d of [...this.scsiDevices.values()]) if (d.sid === s!.sid) this.removeDevice(d.name);
  }

  /** A device deleted behind the driver's back (`echo 1 > /sys/block/sdX/device/delete`). */
  deleteDeviceBehindBack(name: string): void {
    if (!this.scsiDevices.has(name)) throw new Error(`no device ${name}`);
    this.removeDevice(name);
  }

  /** An operator's own session (not marked as the driver's), with the LUNs it scanned. */
  operatorLogin(iqn: string, portal: string, luns: number[]): string[] {
    const key = `${portal} ${iqn} default`;
    this.nodeRecordsByKey.set(key, { settings: {}, tpgt: 1 });
    const s: Session = { sid: ++this.counters.sid, host: this.counters.host++, iqn, portal: parsePortal(portal), key: portal, iface: 'default', state: 'LOGGED_IN' };
    this.sessionList.push(s);
    return luns.map((l) => this.scan(s, l)!.name);
  }

  /** A layer someone put over a device (an LVM volume, a loop device): it is in use. */
  holdDevice(name: string, holder: string): void {
    this.otherHolders.set(name, [...(this.otherHolders.get(name) ?? []), holder]);
  }

  /** A record file that cannot be read (corrupt): the survey names it. */
  addUnreadableRecord(file: string): void {
    this.unreadableRecords.push(file);
  }

  /** Drops a record without touching the host (the state directory lost it). */
  loseRecord(volumeId: string): void {
    this.records.delete(volumeId);
  }

  /** `iqn portal iface` of every session marked as the driver's */
  markedSessions(): string[] {
    return [...this.marks.keys()].sort();
  }

  /** A record as a crash or an earlier driver left it. */
  putRecord(record: VolumeRecord): void {
    this.records.set(record.volumeId, structuredClone(record));
  }

  // --- what a user would check -----------------------------------------------------------------------

  ops(prefix = ''): string[] {
    return this.calls.filter((c) => c.op.startsWith(prefix)).map((c) => c.op);
  }

  callsOf(op: string): Call[] {
    return this.calls.filter((c) => c.op === op);
  }

  /** Index of the first call of `op` (whose detail contains `match`), -1 when none. */
  indexOf(op: string, match = ''): number {
    return this.calls.findIndex((c) => c.op === op && c.detail.includes(match));
  }

  sessions(): { iqn: string; portal: string; iface: string; state: string }[] {
    return this.sessionList.map((s) => ({ iqn: s.iqn, portal: s.key, iface: s.iface, state: s.state }));
  }

  /** `<addr:port> <iqn> <iface>` of every node record */
  nodeRecords(): string[] {
    return [...this.nodeRecordsByKey.keys()].sort();
  }

  nodeRecordSettings(portal: string, iqn: string, iface: string): Record<string, string> | undefined {
    return this.nodeRecordsByKey.get(`${portal} ${iqn} ${iface}`)?.settings;
  }

  discoveryRecordKeys(): string[] {
    return [...this.discoveryRecords.keys()];
  }

  /** ifaces other than the built-in `default` */
  ifaceNames(): string[] {
    return [...this.ifaces.keys()].filter((n) => n !== 'default').sort();
  }

  deviceNames(): string[] {
    return [...this.scsiDevices.keys()].sort();
  }

  mapNames(): string[] {
    return [...this.dmMaps.keys()].sort();
  }

  mountPoints(): { source: string; target: string; fsType: string; options: string[] }[] {
    return this.mountList.map((m) => ({ source: m.source, target: m.target, fsType: m.fsType, options: [...m.options] }));
  }

  record(volumeId: string): VolumeRecord | undefined {
    const r = this.records.get(volumeId);
    return r && structuredClone(r);
  }

  recordIds(): string[] {
    return [...this.records.keys()].sort();
  }

  /** The filesystem on a LUN and its size. */
  filesystemOf(iqn: string, lun: number): { fs: string | null; bytes: number } {
    const l = this.lunOf(iqn, lun);
    return { fs: l.fs, bytes: l.fsBytes };
  }

  /** Everything a stage makes, for "nothing left behind" checks. */
  leftovers(): Record<string, string[]> {
    return {
      sessions: this.sessionList.map((s) => `${s.key} ${s.iqn} ${s.iface}`),
      nodeRecords: this.nodeRecords(),
      discoveryRecords: this.discoveryRecordKeys(),
      clonedIfaces: this.ifaceNames().filter((n) => n.startsWith('csi-')),
      devices: this.deviceNames(),
      maps: this.mapNames(),
      mounts: this.mountList.map((m) => m.target),
      records: this.recordIds(),
      marks: this.markedSessions(),
      locks: [...this.held],
    };
  }

  warnings(): string[] {
    return this.logs.filter((l) => l.level === 'warn').map((l) => l.msg);
  }

  // --- the model -------------------------------------------------------------------------------------

  /** Logs the call and throws (or returns) an injected failure of it. */
  private call(op: string, detail: string): Failure | undefined {
    this.calls.push({ op, detail, locks: [...this.held] });
    const list = this.injected.get(op) ?? [];
    const hit = list.find((f) => f.left > 0 && (f.match === undefined || detail.includes(f.match)));
    if (!hit) return undefined;
    hit.left -= 1;
    if (hit.failure instanceof Error) throw hit.failure;
    return hit.failure;
  }

  /** For calls that never return an iscsiadm status: an injected exit becomes an Internal error. */
  private step(op: string, detail: string): void {
    const f = this.call(op, detail);
    if (f && !(f instanceof Error)) throw new Internal(`${op} ${detail} failed (exit ${f.exit})`);
  }

  private lunOf(iqn: string, lun: number): Lun {
    const l = this.targets.get(iqn)?.luns.get(lun);
    if (!l) throw new Error(`the fake has no LUN ${lun} of ${iqn}`);
    return l;
  }

  private byPathName(portal: Portal, iqn: string, lun: number): string {
    return `${DEV_ROOT}/disk/by-path/ip-${portal.host}:${portal.port}-iscsi-${iqn}-lun-${lun}`;
  }

  private sessionOf(d: ScsiDevice): Session {
    return this.sessionList.find((s) => s.sid === d.sid)!;
  }

  private linkOf(d: ScsiDevice): string {
    return this.byPathName(this.sessionOf(d).portal, d.lun.iqn, d.lun.lun);
  }

  private scan(s: Session, lun: number): ScsiDevice | undefined {
    const l = this.targets.get(s.iqn)?.luns.get(lun);
    if (!l || this.faults.noDevice.has(s.key)) return undefined;
    const present = [...this.scsiDevices.values()].find((d) => d.host === s.host && d.lun === l);
    if (present) return present;
    const d: ScsiDevice = { name: diskName(this.counters.disk++), sid: s.sid, host: s.host, lun: l, sizeBytes: l.sizeBytes, state: 'running', wwid: this.faults.staleWwid.get(s.key) ?? l.wwid };
    this.scsiDevices.set(d.name, d);
    if (this.faults.byPathLinks === 'with-device') this.links.set(this.linkOf(d), d.name);
    if (this.faults.multipathd === 'at-once') this.takeIntoMap(l);
    return d;
  }

  /** multipathd builds (or grows) the map of a LUN over its path devices. */
  private takeIntoMap(l: Lun): void {
    const paths = [...this.scsiDevices.values()].filter((d) => d.lun === l);
    if (paths.length === 0) return;
    let map = [...this.dmMaps.values()].find((m) => m.lun === l);
    if (!map) {
      const n = this.counters.dm++;
      // multipath's WWID: udev's ID_SERIAL, "3" and the NAA hex
      const wwid = (paths[0]!.wwid ?? `naa.${l.iqn}/${l.lun}`).replace(/^naa\./, '3');
      map = { dm: `dm-${n}`, name: `mpath${String.fromCharCode(97 + n)}`, wwid, lun: l, sizeBytes: paths[0]!.sizeBytes, slaves: new Set() };
      this.dmMaps.set(map.dm, map);
    }
    for (const p of paths) map.slaves.add(p.name);
  }

  private removeDevice(name: string): void {
    const d = this.scsiDevices.get(name);
    if (!d) return;
    this.scsiDevices.delete(name);
    for (const [link, target] of this.links) if (target === name) this.links.delete(link);
    for (const m of this.dmMaps.values()) m.slaves.delete(name);
  }

  private holderOf(name: string): DmMap | undefined {
    return [...this.dmMaps.values()].find((m) => m.slaves.has(name));
  }

  /** The LUN behind a device path (/dev/sdX, /dev/dm-N, a by-path link) and its size as the kernel sees it. */
  private resolveDevice(path: string): { lun: Lun; sizeBytes: number } | undefined {
    const linked = this.links.get(path);
    const name = linked ?? (path.startsWith(`${DEV_ROOT}/`) ? path.slice(DEV_ROOT.length + 1) : path);
    const d = this.scsiDevices.get(name);
    if (d) return { lun: d.lun, sizeBytes: d.sizeBytes };
    const m = this.dmMaps.get(name);
    return m && { lun: m.lun, sizeBytes: m.sizeBytes };
  }

  private mountedLun(path: string): Lun | undefined {
    const m = this.mountList.filter((x) => x.target === path).at(-1);
    if (!m) return undefined;
    return this.resolveDevice(m.source)?.lun ?? this.mountedLun(m.source);
  }

  private initiatorOf(iface: string): string {
    return this.ifaces.get(iface)?.initiatorName ?? NODE_INITIATOR;
  }

  private hang<T>(path: string, value: () => T): Promise<T> {
    if (!this.faults.ioHangs.has(path)) return Promise.resolve(value());
    return new Promise((resolve) => this.hungIo.push(() => resolve(value())));
  }

  // --- the ports -------------------------------------------------------------------------------------

  private iscsiAdmin(): IscsiAdmin {
    const nodeKey = (n: NodeRef): string => `${formatPortal(n.portal)} ${n.iqn} ${n.iface}`;
    const ok = (already = false): IscsiOutcome => ({ ok: true, already });
    const failed = (what: string, exit: number): IscsiFailure => ({ ok: false, code: iscsiExitName(exit), exit, message: `${what} failed: ${iscsiExitMessage(exit)} (iscsiadm exit ${exit})` });
    const injectedExit = (f: Failure | undefined, what: string): IscsiFailure | undefined => (f && !(f instanceof Error) ? failed(what, f.exit) : undefined);
    return {
      showIface: async (name) => {
        const f = injectedExit(this.call('iscsi.showIface', name), `reading iSCSI interface ${name}`);
        return f ?? { ok: true, value: this.ifaces.get(name) ?? null };
      },
      cloneIface: async (base, newName, initiatorName) => {
        const f = injectedExit(this.call('iscsi.cloneIface', `${base.name} → ${newName} ${initiatorName}`), `creating iSCSI interface ${newName}`);
        if (f) return f;
        const already = this.ifaces.has(newName);
        this.ifaces.set(newName, { ...base, name: newName, initiatorName, settings: { ...base.settings, 'iface.iscsi_ifacename': newName, 'iface.initiatorname': initiatorName } });
        return ok(already);
      },
      deleteIface: async (name) => {
        const f = injectedExit(this.call('iscsi.deleteIface', name), `deleting iSCSI interface ${name}`);
        if (f) return f;
        return ok(!this.ifaces.delete(name));
      },
      newDiscovery: async (ref) => {
        const key = `${formatPortal(ref.portal)} ${ref.iface}`;
        const f = injectedExit(this.call('iscsi.newDiscovery', key), `creating the discovery record for ${formatPortal(ref.portal)}`);
        if (f) return f;
        const already = this.discoveryRecords.has(key);
        this.discoveryRecords.set(key, { chapUser: null });
        return ok(already);
      },
      setDiscoveryChap: async (ref, chap) => {
        const key = `${formatPortal(ref.portal)} ${ref.iface}`;
        const f = injectedExit(this.call('iscsi.setDiscoveryChap', `${key} user ${chap.username}`), `updating the discovery record for ${formatPortal(ref.portal)}`);
        if (f) return f;
        const rec = this.discoveryRecords.get(key);
        if (!rec) return failed(`updating the discovery record for ${formatPortal(ref.portal)}`, ISCSI_EXIT.NO_OBJS_FOUND);
        rec.chapUser = chap.username;
        return ok();
      },
      discover: async (ref, opts) => {
        const key = formatPortal(ref.portal);
        const what = `iSCSI discovery at ${key}`;
        const f = injectedExit(this.call('iscsi.discover', `${key} ${ref.iface}${opts.persist === false ? ' nonpersistent' : ''}`), what);
        if (f) return f;
        if (this.faults.portalsDown.has(key)) return failed(what, ISCSI_EXIT.TRANS_TIMEOUT);
        const listed = [...this.targets.values()].filter((t) => t.spec.portals.includes(key));
        return { ok: true, value: listed.map((t) => ({ address: ref.portal.host, port: ref.portal.port, tpgt: 1, iqn: t.spec.iqn, portal: key })) };
      },
      deleteDiscovery: async (ref) => {
        const key = `${formatPortal(ref.portal)} ${ref.iface}`;
        const f = injectedExit(this.call('iscsi.deleteDiscovery', key), `deleting the discovery record for ${formatPortal(ref.portal)}`);
        if (f) return f;
        return ok(!this.discoveryRecords.delete(key));
      },
      newNode: async (node, tpgt) => {
        const key = nodeKey(node);
        const f = injectedExit(this.call('iscsi.newNode', `${key}${tpgt === undefined ? '' : ` tpgt ${tpgt}`}`), `creating the node record for ${key}`);
        if (f) return f;
        if (this.nodeRecordsByKey.has(key)) return ok(true);
        this.nodeRecordsByKey.set(key, { settings: {}, tpgt });
        return ok();
      },
      updateNode: async (node, settings) => {
        const key = nodeKey(node);
        const f = injectedExit(this.call('iscsi.updateNode', `${key} ${Object.keys(settings).join(',')}`), `updating the node record for ${key}`);
        if (f) return f;
        const rec = this.nodeRecordsByKey.get(key);
        if (!rec) return failed(`updating the node record for ${key}`, ISCSI_EXIT.NO_OBJS_FOUND);
        // a Secret stays a Secret: its text is the placeholder, never the password
        for (const [k, v] of Object.entries(settings)) rec.settings[k] = String(v);
        return ok();
      },
      login: async (node) => {
        const key = nodeKey(node);
        const what = `iSCSI login to ${key}`;
        const f = injectedExit(this.call('iscsi.login', key), what);
        if (f) return f;
        const portal = formatPortal(node.portal);
        if (!this.nodeRecordsByKey.has(key)) return failed(what, ISCSI_EXIT.NO_OBJS_FOUND);
        if (this.sessionList.some((s) => s.iqn === node.iqn && s.key === portal && s.iface === node.iface)) return ok(true);
        const target = this.targets.get(node.iqn);
        if (this.faults.portalsDown.has(portal) || !target?.spec.portals.includes(portal)) return failed(what, ISCSI_EXIT.TRANS_TIMEOUT);
        if (target.spec.acl && !target.spec.acl.includes(this.initiatorOf(node.iface))) return failed(what, ISCSI_EXIT.FATAL_LOGIN);
        this.sessionList.push({ sid: ++this.counters.sid, host: this.counters.host++, iqn: node.iqn, portal: node.portal, key: portal, iface: node.iface, state: 'LOGGED_IN' });
        return ok();
      },
      logout: async (node) => {
        const key = nodeKey(node);
        const f = injectedExit(this.call('iscsi.logout', key), `iSCSI logout from ${key}`);
        if (f) return f;
        const portal = formatPortal(node.portal);
        const i = this.sessionList.findIndex((s) => s.iqn === node.iqn && s.key === portal && s.iface === node.iface);
        if (i < 0) return ok(true);
        const [s] = this.sessionList.splice(i, 1);
        for (const d of [...this.scsiDevices.values()]) if (d.sid === s!.sid) this.removeDevice(d.name);
        return ok();
      },
      deleteNode: async (node) => {
        const key = nodeKey(node);
        const what = `deleting the node record for ${key}`;
        const f = injectedExit(this.call('iscsi.deleteNode', key), what);
        if (f) return f;
        const portal = formatPortal(node.portal);
        if (this.sessionList.some((s) => s.iqn === node.iqn && s.key === portal && s.iface === node.iface)) return failed(what, ISCSI_EXIT.SESS_EXISTS);
        return ok(!this.nodeRecordsByKey.delete(key));
      },
    };
  }

  private scsiView(): ScsiView {
    const sessionInfo = (s: Session): IscsiSessionInfo => {
      const devices = [...this.scsiDevices.values()].filter((d) => d.sid === s.sid);
      const luns = [...new Set(devices.map((d) => d.lun.lun))].sort((a, b) => a - b).map((lun) => {
        const onLun = devices.filter((d) => d.lun.lun === lun);
        return { hctl: `${s.host}:0:0:${lun}`, host: s.host, channel: 0, target: 0, lun, devices: onLun.map((d) => d.name), state: onLun[0]!.state };
      });
      const conn = { name: `connection${s.sid}:0`, address: s.portal.host, port: s.portal.port, persistentAddress: s.portal.host, persistentPort: s.portal.port };
      return { sid: s.sid, host: s.host, iqn: s.iqn, state: s.state, connections: [conn], portals: [s.key], luns };
    };
    return {
      portalHostMap: async (iqn, iface) => {
        this.step('sysfs.portalHostMap', `${iqn}${iface === undefined ? '' : ` ${iface}`}`);
        return new Map(this.sessionList.filter((s) => s.iqn === iqn && (iface === undefined || s.iface === iface)).map((s) => [s.key, s.host]));
      },
      topology: async (iqn, onlyLun) => {
        this.step('sysfs.topology', iqn);
        const sessions = this.sessionList.filter((s) => s.iqn === iqn).map(sessionInfo)
          .map((s) => (onlyLun === undefined ? s : { ...s, luns: s.luns.filter((l) => l.lun === onlyLun) }));
        return { sessionsForTarget: (q: string) => sessions.filter((s) => s.iqn === q) };
      },
      volumePaths: async (iqn, lun, iface) => {
        this.step('sysfs.volumePaths', `${iqn} ${lun}${iface === undefined ? '' : ` ${iface}`}`);
        const sessions = this.sessionList.filter((s) => s.iqn === iqn && (iface === undefined || s.iface === iface)).map(sessionInfo)
          .map((s) => ({ ...s, luns: s.luns.filter((l) => l.lun === lun) }));
        return new VolumePaths(sessions);
      },
      devicesForIqnLun: async (iqn, lun) => {
        this.step('sysfs.devicesForIqnLun', `${iqn} ${lun}`);
        return [...this.scsiDevices.values()].filter((d) => d.lun.iqn === iqn && d.lun.lun === lun).sort((a, b) => a.sid - b.sid).map((d) => d.name);
      },
      scanLun: async (host, lun) => {
        this.step('sysfs.scanLun', `host${host} ${lun}`);
        const s = this.sessionList.find((x) => x.host === host);
        if (!s) throw new NotFound(`SCSI host ${host} is gone; the iSCSI session ended`);
        this.scan(s, lun);
      },
      deleteDevice: async (name) => {
        this.step('sysfs.deleteDevice', name);
        if (!this.scsiDevices.has(name)) return false;
        this.removeDevice(name);
        return true;
      },
      rescanDevice: async (name) => {
        this.step('sysfs.rescanDevice', name);
        const d = this.scsiDevices.get(name);
        if (!d) throw new NotFound(`SCSI device ${name} does not exist`);
        d.sizeBytes = d.lun.sizeBytes;
      },
      multipathHolder: async (name) => {
        this.step('sysfs.multipathHolder', name);
        return holder(this.holderOf(name));
      },
      holders: async (name) => {
        this.step('sysfs.holders', name);
        const map = this.holderOf(name);
        return [...(map ? [map.dm] : []), ...(this.otherHolders.get(name) ?? [])].sort();
      },
      deviceWwid: async (name) => {
        this.step('sysfs.deviceWwid', name);
        return this.scsiDevices.get(name)?.wwid ?? null;
      },
      deviceSizeBytes: async (name) => {
        this.step('sysfs.deviceSizeBytes', name);
        return this.scsiDevices.get(name)?.sizeBytes ?? null;
      },
    };
  }

  private deviceNodes(): DeviceNodes {
    const timedOut = (opts: WaitOptions): { ok: false; reason: 'timeout'; waitedMs: number } => ({ ok: false, reason: 'timeout', waitedMs: opts.deadlineMs });
    return {
      devicePath: (name) => `${DEV_ROOT}/${name}`,
      byPathLink: (portal, iqn, lun) => this.byPathName(portal, iqn, lun),
      findByPath: async (portal, iqn, lun, transport) => {
        const link = this.byPathName(portal, iqn, lun);
        this.step('devices.findByPath', `${link}${transport ? ` ${transport}` : ''}`);
        const name = this.links.get(link);
        return name ? { device: `${DEV_ROOT}/${name}`, link } : null;
      },
      waitForLunDevice: async (scsiHost, lun, name, opts) => {
        this.step('devices.waitForLunDevice', `host${scsiHost} ${lun} ${formatPortal(name.portal)}`);
        const d = [...this.scsiDevices.values()].find((x) => x.host === scsiHost && x.lun.lun === lun);
        if (!d) return timedOut(opts);
        const node = `${DEV_ROOT}/${d.name}`;
        const link = this.linkOf(d);
        return { ok: true, device: node, link: this.links.get(link) === d.name ? link : node, waitedMs: 0 };
      },
      waitForDeviceRemoved: async (name, opts) => {
        this.step('devices.waitForDeviceRemoved', name);
        return this.scsiDevices.has(name) ? timedOut(opts) : { ok: true, waitedMs: 0 };
      },
      waitForMultipathHolder: async (name, opts) => {
        this.step('devices.waitForMultipathHolder', name);
        const d = this.scsiDevices.get(name);
        if (d && this.faults.multipathd === 'while-waited') this.takeIntoMap(d.lun);
        const map = this.holderOf(name);
        return map ? { ok: true, holder: holder(map)!, device: `${DEV_ROOT}/${map.dm}`, waitedMs: 0 } : timedOut(opts);
      },
      resolveDevice: async (path) => {
        this.step('devices.resolveDevice', path);
        const name = this.links.get(path) ?? (path.startsWith(`${DEV_ROOT}/`) ? path.slice(DEV_ROOT.length + 1) : undefined);
        return name !== undefined && (this.scsiDevices.has(name) || this.dmMaps.has(name)) ? `${DEV_ROOT}/${name}` : null;
      },
    };
  }

  private sizeWaits(): SizeWaits {
    return {
      waitForSizes: async (devices, minBytes) => {
        this.step('sizes.waitForSizes', `${devices.join(',')} ${minBytes}`);
      },
    };
  }

  private multipathClaims(): MultipathClaims {
    return {
      multipathClaim: async (name) => {
        this.step('udev.multipathClaim', name);
        return this.faults.claim;
      },
    };
  }

  private mountTable(): MountTable {
    const entry = (m: Mount): MountInfoEntry => ({
      mountId: m.id, parentId: 1, major: 8, minor: 0, root: '/', mountPoint: m.target, mountOptions: m.options.includes('ro') ? ['ro'] : ['rw'],
      optionalFields: [], fsType: m.fsType, source: m.source, superOptions: m.superOptions,
    });
    const at = (path: string): Mount[] => this.mountList.filter((m) => m.target === path);
    return {
      mountsOfDevices: async (devices) => {
        this.step('mounts.mountsOfDevices', devices.join(','));
        const luns = new Set(devices.map((d) => this.resolveDevice(d)?.lun).filter((l) => l !== undefined));
        return this.mountList.filter((m) => {
          const lun = this.resolveDevice(m.source)?.lun ?? this.mountedLun(m.source);
          return lun !== undefined && luns.has(lun);
        }).map(entry);
      },
      mountsAt: async (path) => {
        this.step('mounts.mountsAt', path);
        return at(path).map(entry);
      },
      mountState: async (path): Promise<MountState> => {
        this.step('mounts.mountState', path);
        const m = at(path).at(-1);
        return m ? { mounted: true, stale: m.stale, entry: entry(m) } : { mounted: false };
      },
      isMountPoint: async (path) => {
        this.step('mounts.isMountPoint', path);
        return at(path).length > 0;
      },
      mount: async (source, target, fsType, options) => {
        this.step('mounts.mount', `${source} ${target} ${fsType} ${options.join(',')}`);
        const lun = this.resolveDevice(source)?.lun;
        // udev lagging behind the kernel: the link comes while the stage formats and mounts the device
        const path = this.scsiDevices.get(source.slice(DEV_ROOT.length + 1));
        if (path && this.faults.byPathLinks === 'after-mount') this.links.set(this.linkOf(path), path.name);
        if (!lun) throw new Internal(`mounting ${source} (${fsType}) at ${target} failed: special device ${source} does not exist (mount exit 32)`);
        if (lun.fs !== fsType) throw new Internal(`mounting ${source} (${fsType}) at ${target} failed: wrong fs type (mount exit 32)`);
        if (!this.dirs.has(target)) throw new Internal(`mounting ${source} (${fsType}) at ${target} failed: mount point does not exist (mount exit 32)`);
        this.mountList.push({ id: this.counters.mount++, source, target, fsType, options: [...options], superOptions: options.includes('ro') ? ['ro'] : ['rw'], stale: false });
      },
      bindMount: async (source, target, opts) => {
        this.step('mounts.bindMount', `${source} ${target}${opts.readonly ? ' ro' : ''}`);
        const options = [...(opts.readonly ? ['ro'] : []), ...(opts.options ?? [])];
        this.mountList.push({ id: this.counters.mount++, source, target, fsType: 'bind', options, superOptions: ['rw'], stale: false });
      },
      unmount: async (target) => {
        this.step('mounts.unmount', target);
        const before = this.mountList.length;
        for (let i = this.mountList.length - 1; i >= 0; i--) if (this.mountList[i]!.target === target) this.mountList.splice(i, 1);
        return before - this.mountList.length;
      },
    };
  }

  private filesystemTools(): FilesystemTools {
    const device = (path: string): { lun: Lun; sizeBytes: number } => {
      const d = this.resolveDevice(path);
      if (!d) throw new NotFound(`device ${path} does not exist`);
      return d;
    };
    return {
      probe: async (path) => {
        this.step('fs.probe', path);
        const fs = device(path).lun.fs;
        return probeFrom(fs ? { TYPE: fs, USAGE: 'filesystem' } : {}, false);
      },
      mkfs: async (path, fsType: FsType) => {
        this.step('fs.mkfs', `${path} ${fsType}`);
        const d = device(path);
        d.lun.fs = fsType;
        d.lun.fsBytes = d.sizeBytes;
      },
      resize: async (path, mountPath, fsType) => {
        this.step('fs.resize', `${path} ${mountPath} ${fsType}`);
        const d = device(path);
        d.lun.fsBytes = d.sizeBytes;
      },
      statfs: async (path) => {
        this.step('fs.statfs', path);
        return this.hang(path, () => {
          const bytes = this.mountedLun(path)?.fsBytes ?? 0;
          return { totalBytes: bytes, availableBytes: bytes, usedBytes: 0, totalInodes: FAKE_STATFS_INODES, freeInodes: FAKE_STATFS_INODES, usedInodes: 0 };
        });
      },
      readDirectory: async (path) => {
        this.step('fs.readDirectory', path);
        return this.hang(path, () => null);
      },
      nonZeroEdges: async (path) => {
        this.step('fs.nonZeroEdges', path);
        return [...device(path).lun.edges];
      },
      blockDeviceSize: async (path) => {
        this.step('fs.blockDeviceSize', path);
        const d = this.resolveDevice(path);
        if (!d) throw new Internal(`reading the size of ${path} failed: No such file or directory (blockdev exit 1)`);
        return d.sizeBytes;
      },
      flushBuffers: async (path) => {
        this.step('fs.flushBuffers', path);
      },
    };
  }

  private multipathTool(): MultipathTool {
    return {
      flush: async (map) => {
        this.step('multipath.flush', map.dm);
        if (this.mountList.some((m) => m.source === `${DEV_ROOT}/${map.dm}`)) throw new Internal(`multipath map ${map.dm} (wwid ${map.wwid}) is still in use; unmount it first`);
        this.dmMaps.delete(map.dm);
      },
      resize: async (map) => {
        this.step('multipath.resize', map.name ?? map.dm);
        const m = this.dmMaps.get(map.dm);
        if (!m) throw new Internal(`resizing multipath map ${map.dm} failed: fail (multipathd exit 1)`);
        m.sizeBytes = Math.max(...[...m.slaves].map((s) => this.scsiDevices.get(s)!.sizeBytes));
      },
    };
  }

  private volumeRecords(): VolumeRecords {
    return {
      save: async (record) => {
        this.step('metadata.save', `${record.volumeId} ${record.phase}`);
        this.records.set(record.volumeId, structuredClone(record));
      },
      load: async (volumeId) => {
        this.step('metadata.load', volumeId);
        const r = this.records.get(volumeId);
        return r ? structuredClone(r) : null;
      },
      remove: async (volumeId) => {
        this.step('metadata.remove', volumeId);
        this.records.delete(volumeId);
      },
      listByTarget: async (iqn, exceptVolumeId) => {
        this.step('metadata.listByTarget', `${iqn}${exceptVolumeId ? ` except ${exceptVolumeId}` : ''}`);
        return [...this.records.values()].filter((r) => r.iqn === iqn && r.volumeId !== exceptVolumeId).map((r) => structuredClone(r));
      },
      survey: async () => {
        this.step('metadata.survey', '');
        const records = [...this.records.values()].map((r) => structuredClone(r)).sort((a, b) => a.volumeId.localeCompare(b.volumeId));
        return { records, unreadable: [...this.unreadableRecords] };
      },
    };
  }

  private sessionLedger(): SessionLedger {
    return {
      mark: async (ref) => {
        this.step('marks.mark', sessionKey(ref));
        this.marks.set(sessionKey(ref), { ...ref });
      },
      unmark: async (ref) => {
        this.step('marks.unmark', sessionKey(ref));
        this.marks.delete(sessionKey(ref));
      },
      list: async () => {
        this.step('marks.list', '');
        return [...this.marks.values()].map((m) => ({ ...m }));
      },
    };
  }

  private targetLocks(): TargetLocks {
    return {
      withLock: (key, fn) => this.mutex.withLock(key, async () => {
        this.held.push(key);
        this.calls.push({ op: 'lock.take', detail: key, locks: [...this.held] });
        try {
          return await fn();
        } finally {
          this.held.splice(this.held.lastIndexOf(key), 1);
          this.calls.push({ op: 'lock.release', detail: key, locks: [...this.held] });
        }
      }),
    };
  }

  private targetPaths(): TargetPaths {
    // the rules of src/node-host/target-paths.ts, with the same codes
    const checkKind = (path: string, kind: 'directory' | 'file'): void => {
      if (this.symlinks.has(path)) throw new FailedPrecondition(`${path} is a symbolic link; the driver does not mount through links`);
      if (kind === 'directory' && this.files.has(path)) throw new FailedPrecondition(`${path} exists and is a regular file: a filesystem volume is mounted on a directory`);
      if (kind === 'file' && this.dirs.has(path)) throw new FailedPrecondition(`${path} exists and is a directory: a block volume is bound onto a regular file`);
    };
    return {
      checkTarget: async (path, kind) => {
        this.step('paths.checkTarget', `${path} ${kind}`);
        checkKind(path, kind);
      },
      ensureDir: async (path) => {
        this.step('paths.ensureDir', path);
        checkKind(path, 'directory');
        this.dirs.add(path);
      },
      ensureFile: async (path) => {
        this.step('paths.ensureFile', path);
        checkKind(path, 'file');
        this.files.add(path);
      },
      removeTarget: async (path) => {
        this.step('paths.removeTarget', path);
        this.dirs.delete(path);
        this.files.delete(path);
      },
    };
  }

  private portalResolver(): PortalResolver {
    return {
      resolvePortals: async (portals) => {
        this.step('resolver.resolvePortals', portals.map(formatPortal).join(' '));
        const resolved = portals.map((p) => {
          if (p.family !== 'hostname') return p;
          const address = this.dns.get(p.host);
          if (!address) throw new FailedPrecondition(`portal ${formatPortal(p)}: host name ${p.host} does not resolve on this node (ENOTFOUND)`);
          return parsePortal(`${address}:${p.port}`);
        });
        return resolved.filter((p, i) => resolved.findIndex((q) => formatPortal(q) === formatPortal(p)) === i);
      },
    };
  }
}

function holder(map: DmMap | undefined): MultipathHolder | null {
  return map ? { dm: map.dm, uuid: `mpath-${map.wwid}`, name: map.name, wwid: map.wwid } : null;
}

/** sd.c's names: sda … sdz, sdaa … */
function diskName(index: number): string {
  let name = '';
  for (let n = index; n >= 0; n = Math.floor(n / 26) - 1) name = String.fromCharCode(97 + (n % 26)) + name;
  return `sd${name}`;
}

/** The error `promise` rejects with (a CsiError carries the gRPC code); fails when it resolves. */
export async function rejectionOf(promise: Promise<unknown>): Promise<Error & { code?: number }> {
  return promise.then(() => { throw new Error('expected a failure, but it succeeded'); }, (e: Error) => e);
}
