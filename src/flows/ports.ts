// What the node flows and handlers need from the host, as narrow interfaces: each lists exactly the
// calls made through it, no more. The adapters in src/node-host satisfy them structurally (host.ts
// builds the real host from them); tests build an in-memory host (test/fake/host.ts) behind the same
// interfaces, so the algorithm's rules are checked without root, a kernel or a target.
import type { Config } from '../config.js';
import type { BoundedMemo } from '../common/bounded-memo.js';
import type { ProbeGuard } from '../common/probe-guard.js';
import type { VolumeUsage } from '../csi/types.js';
import type { SingleFlight } from '../common/single-flight.js';
import type { Portal } from '../common/validate.js';
import type { ChapCredentials } from '../contract/chap.js';
import type { DeviceWaitResult, HolderWaitResult, LunName, WaitFailure, WaitOptions } from '../node-host/devices.js';
import type { EdgeRegion, FsStats, ProbeResult } from '../node-host/filesystem.js';
import type { DiscoveryRef, IfaceRecord, IscsiOutcome, IscsiValue, NodeRef, PortalTarget, RecordSettings } from '../node-host/iscsiadm.js';
import type { RecordSurvey, VolumeRecord } from '../node-host/metadata.js';
import type { SessionRef } from '../node-host/session-marks.js';
import type { BindMountOptions, MountInfoEntry, MountState } from '../node-host/mounts.js';
import type { MultipathMap } from '../node-host/multipath.js';
import type { IscsiSessionInfo, MultipathHolder } from '../node-host/sysfs.js';
import type { MultipathClaim } from '../node-host/udev.js';
import type { FsType } from '../common/validate.js';
import type { ForgottenNodes } from './node-records.js';

/** open-iscsi's records and sessions (iscsiadm): ifaces, discovery records, node records, login/logout. */
export interface IscsiAdmin {
  showIface(name: string): Promise<IscsiValue<IfaceRecord | null>>;
  cloneIface(base: IfaceRecord, newName: string, initiatorName: string): Promise<IscsiOutcome>;
  deleteIface(name: string): Promise<IscsiOutcome>;
  newDiscovery(ref: DiscoveryRef): Promise<IscsiOutcome>;
  setDiscoveryChap(ref: DiscoveryRef, chap: ChapCredentials): Promise<IscsiOutcome>;
  discover(ref: DiscoveryRef, opts: { persist?: boolean }): Promise<IscsiValue<PortalTarget[]>>;
  deleteDiscovery(ref: DiscoveryRef): Promise<IscsiOutcome>;
  newNode(node: NodeRef, tpgt?: number): Promise<IscsiOutcome>;
  updateNode(node: NodeRef, settings: RecordSettings): Promise<IscsiOutcome>;
  login(node: NodeRef): Promise<IscsiOutcome>;
  logout(node: NodeRef): Promise<IscsiOutcome>;
  deleteNode(node: NodeRef): Promise<IscsiOutcome>;
}

/** One read of a target's sessions, their connections and LUNs. */
export interface SessionTopology {
  sessionsForTarget(iqn: string): IscsiSessionInfo[];
}

/** One volume's sessions (its target's, through its iface), with only its LUN listed. */
export interface VolumePathView {
  /** the session that serves `portal` (canonical `addr:port`), if any */
  sessionAt(portal: string): IscsiSessionInfo | undefined;
}

/** The kernel's SCSI/iSCSI view and control files (sysfs). */
export interface ScsiView {
  /** `addr:port` → SCSI host of the target's sessions, only those through `iface` when given */
  portalHostMap(iqn: string, iface?: string): Promise<Map<string, number>>;
  /** with `onlyLun`, each session lists that LUN only (the cost of one volume's question does not grow with its neighbours) */
  topology(iqn: string, onlyLun?: number): Promise<SessionTopology>;
  /** one volume's paths in one walk: what its condition and the healer read */
  volumePaths(iqn: string, lun: number, iface?: string): Promise<VolumePathView>;
  /** block device names (`sdb`) of one LUN of a target, one per path */
  devicesForIqnLun(iqn: string, lun: number): Promise<string[]>;
  scanLun(host: number, lun: number): Promise<void>;
  /** false when the device was already gone */
  deleteDevice(name: string): Promise<boolean>;
  rescanDevice(name: string): Promise<void>;
  multipathHolder(name: string): Promise<MultipathHolder | null>;
  /** what holds a block device as a layer over it (`block/<name>/holders`: dm-N, md, loop); empty when gone */
  holders(name: string): Promise<string[]>;
  /** `block/<name>/device/wwid` (`naa.6…`); null when the device is gone or has no identity */
  deviceWwid(name: string): Promise<string | null>;
  /** the capacity the kernel reports (`block/<name>/size`), no I/O on the device; null when it is gone */
  deviceSizeBytes(name: string): Promise<number | null>;
}

/** Device nodes and their stable names under the /dev root, and the event-driven waits for them. */
export interface DeviceNodes {
  devicePath(name: string): string;
  byPathLink(portal: Portal, iqn: string, lun: number): string;
  findByPath(portal: Portal, iqn: string, lun: number, transport?: string): Promise<{ device: string; link: string } | null>;
  waitForLunDevice(scsiHost: number, lun: number, name: LunName, opts: WaitOptions): Promise<DeviceWaitResult>;
  waitForDeviceRemoved(name: string, opts: WaitOptions): Promise<{ ok: true; waitedMs: number } | WaitFailure>;
  waitForMultipathHolder(name: string, opts: WaitOptions): Promise<HolderWaitResult>;
  /** the device node a recorded path (a by-path link, /dev/dm-N) leads to now, or null when gone */
  resolveDevice(path: string): Promise<string | null>;
}

/** Waits for the kernel to report a grown capacity of path devices (after their rescan). */
export interface SizeWaits {
  /** resolves once every device reports at least `minBytes`, or at the deadline (the caller checks the size) */
  waitForSizes(devices: string[], minBytes: number, opts: WaitOptions): Promise<void>;
}

/** What the real SizeWaits (host.ts) reads: the sysfs root to watch and a device's `size` attribute. */
export interface DeviceSizes {
  readonly sysRoot: string;
  /** null when the device does not exist */
  deviceSizeBytes(name: string): Promise<number | null>;
}

/** What multipath's udev rules said about a path device. */
export interface MultipathClaims {
  multipathClaim(name: string): Promise<MultipathClaim>;
}

/** The mount table (mountinfo) and mount/unmount. */
export interface MountTable {
  /** mounts whose mount point is `path`, in mount order (the last one is visible) */
  mountsAt(path: string): Promise<MountInfoEntry[]>;
  mountState(path: string): Promise<MountState>;
  isMountPoint(path: string): Promise<boolean>;
  /** the mounts of the filesystems on `devices` (and binds of them), wherever they are, each once; none for a device that is gone */
  mountsOfDevices(devices: string[]): Promise<MountInfoEntry[]>;
  mount(source: string, target: string, fsType: string, options: string[]): Promise<void>;
  bindMount(source: string, target: string, opts: BindMountOptions): Promise<void>;
  /** every mount stacked at `target`; nothing mounted is success */
  unmount(target: string): Promise<unknown>;
}

/** Filesystems on block devices, and I/O probes of a mounted volume. */
export interface FilesystemTools {
  probe(device: string): Promise<ProbeResult>;
  mkfs(device: string, fsType: FsType): Promise<void>;
  /** grows a mounted filesystem to its device's size */
  resize(device: string, mountPath: string, fsType: FsType): Promise<void>;
  statfs(path: string): Promise<FsStats>;
  /** null when the directory can be read, else what went wrong */
  readDirectory(path: string): Promise<string | null>;
  blockDeviceSize(device: string): Promise<number>;
  /** which of the device's first and last MiB hold a non-zero byte (a bounded read, with a timeout) */
  nonZeroEdges(device: string): Promise<EdgeRegion[]>;
  flushBuffers(device: string): Promise<void>;
}

/** multipath / multipathd, maps named by their dm node. */
export interface MultipathTool {
  flush(map: MultipathMap): Promise<void>;
  resize(map: MultipathMap): Promise<void>;
}

/** The per-volume records of this node (what a detach needs after a restart; never a secret). */
export interface VolumeRecords {
  save(record: VolumeRecord): Promise<void>;
  load(volumeId: string): Promise<VolumeRecord | null>;
  remove(volumeId: string): Promise<void>;
  /** the records of other volumes of the target `iqn` */
  listByTarget(iqn: string, exceptVolumeId?: string): Promise<VolumeRecord[]>;
  /** every record, and the record files that cannot be read */
  survey(): Promise<RecordSurvey>;
}

/** The sessions this driver logged in (marked before the login), so an orphan is known to be its own. */
export interface SessionLedger {
  mark(ref: SessionRef): Promise<void>;
  unmark(ref: SessionRef): Promise<void>;
  list(): Promise<SessionRef[]>;
}

/** A lock per key (a target's IQN, a portal's discovery record), held in this process and on this node. */
export interface TargetLocks {
  withLock<T>(key: string, fn: () => Promise<T> | T): Promise<T>;
}

/** The staging and target paths kubelet hands over: created when missing, removed when done. */
export interface TargetPaths {
  /** refuses a symbolic link, or a path of the wrong kind; a missing path is fine */
  checkTarget(path: string, kind: 'directory' | 'file'): Promise<void>;
  /** a directory to mount on (never through a symbolic link) */
  ensureDir(path: string): Promise<void>;
  /** a regular file to bind a block device onto (never through a symbolic link) */
  ensureFile(path: string): Promise<void>;
  /** an unmounted target path: an empty directory or a file; anything else is refused */
  removeTarget(path: string): Promise<void>;
}

/** Portals given by host name, resolved to an address. */
export interface PortalResolver {
  resolvePortals(portals: Portal[], timeoutMs: number): Promise<Portal[]>;
}

/** `ok`; `already`: iscsiadm found the session there (login) or gone (logout); `failed` */
export type SessionChangeOutcome = 'ok' | 'already' | 'failed';

/** What the node's work reports to the metrics (src/metrics); without it nothing is counted. */
export interface NodeMetrics {
  /** one `iscsiadm --login` */
  login(outcome: SessionChangeOutcome): void;
  /** one logout of a session (a retried "no such session" counts once, by how it ended) */
  logout(outcome: SessionChangeOutcome): void;
  /** the wait for a LUN's block device after a login or scan */
  deviceWait(outcome: 'found' | 'timeout' | 'aborted', seconds: number): void;
  /** the time from asking for a target lock (or a portal's discovery lock) to holding it */
  lockWait(seconds: number): void;
}

const NO_METRICS: NodeMetrics = { login() {}, logout() {}, deviceWait() {}, lockWait() {} };

/** The host's metrics, or ones that count nothing (the fake host, unit tests). */
export function metricsOf(host: NodeHost): NodeMetrics {
  return host.metrics ?? NO_METRICS;
}

/**
 * Everything a node flow or handler touches on the host. The in-memory parts (records of logged-out
 * nodes, I/O probes in flight, discoveries under way) are plain objects shared between requests.
 */
export interface NodeHost {
  cfg: Config;
  iscsi: IscsiAdmin;
  sysfs: ScsiView;
  devices: DeviceNodes;
  sizes: SizeWaits;
  udev: MultipathClaims;
  mounts: MountTable;
  fs: FilesystemTools;
  multipath: MultipathTool;
  metadata: VolumeRecords;
  /** the sessions this driver logged in */
  sessionMarks: SessionLedger;
  targetLocks: TargetLocks;
  paths: TargetPaths;
  resolver: PortalResolver;
  /** node records this process logged out of and deleted (see node-records.ts) */
  forgottenNodes: ForgottenNodes;
  /** I/O probes of volume paths (stats): bounded, never two at once per path */
  probes: ProbeGuard;
  /** the last usage figures read per volume path, reported while a new read cannot complete */
  lastUsage: BoundedMemo<string, VolumeUsage[]>;
  /** SendTargets discoveries under way, shared by the stages that ask the same portal the same way */
  discoveries: SingleFlight<PortalTarget[]>;
  /** where logins, logouts and device waits are counted; absent: nowhere */
  metrics?: NodeMetrics;
}
