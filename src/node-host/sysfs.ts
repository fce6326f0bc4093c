// The kernel's iSCSI/SCSI/device-mapper view under a configurable sysfs root (open-iscsi.md §4): which
// SCSI host carries the session to a portal, which block devices a LUN has, multipath holders, and the
// control files that scan a LUN or delete a device. One walk builds a topology snapshot that answers
// every question an attach or detach step asks, so an operation reads sysfs once.
import { close, constants as fsConstants, open, promises as fs, read } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errnoCode, InvalidArgument, NotFound, Unavailable } from '../errors.js';
import { portalKeyOf } from '../common/validate.js';

const SECTOR_BYTES = 512;
const MPATH_UUID_PREFIX = 'mpath-';
/**
 * Control files are opened non-blocking and without O_CREAT: a FIFO (the simulated kernel) with no
 * reader yet fails with ENXIO instead of hanging a thread-pool thread, and a missing file fails with
 * ENOENT instead of being created as a regular file that nothing reads.
 */
const CONTROL_OPEN_FLAGS = fsConstants.O_WRONLY | fsConstants.O_NONBLOCK | fsConstants.O_TRUNC;
/** How long a control-file write waits for a FIFO reader before giving up. */
const CONTROL_WRITE_WAIT_MS = 5_000;
const CONTROL_WRITE_FIRST_RETRY_MS = 1;
const CONTROL_WRITE_MAX_RETRY_MS = 50;
const DEVICE_NAME_RE = /^[A-Za-z0-9_.:-]+$/;
const HCTL_RE = /^(\d+):(\d+):(\d+):(\d+)$/;
/** A sysfs attribute's show() fills at most one page. */
const ATTR_READ_BYTES = 4096;

export interface IscsiConnectionInfo {
  /** `connection<sid>:<cid>` */
  name: string;
  address: string | null;
  port: number | null;
  persistentAddress: string | null;
  persistentPort: number | null;
}

export interface ScsiLunInfo {
  hctl: string;
  host: number;
  channel: number;
  target: number;
  lun: number;
  /** block device names (`sdb`) */
  devices: string[];
  /** `running`, `offline`, `transport-offline`, … */
  state: string | null;
}

export interface IscsiSessionInfo {
  sid: number;
  host: number;
  iqn: string;
  /** `LOGGED_IN`, `FAILED`, `FREE` */
  state: string | null;
  connections: IscsiConnectionInfo[];
  /** canonical `addr:port` keys of the session's connections (persistent first, then current) */
  portals: string[];
  luns: ScsiLunInfo[];
}

/**
 * `addr:port` → SCSI host of each session's portals; in sid order, so a portal two sessions list maps
 * to the newer one.
 */
function portalHosts(sessions: { sid: number; host: number; portals: string[] }[]): Map<string, number> {
  const map = new Map<string, number>();
  for (const s of [...sessions].sort((a, b) => a.sid - b.sid)) for (const p of s.portals) map.set(p, s.host);
  return map;
}

/** One volume's sessions (its target's, through its iface), with only its LUN listed. */
export class VolumePaths {
  readonly #hosts: Map<string, number>;

  constructor(readonly sessions: IscsiSessionInfo[]) {
    this.#hosts = portalHosts(sessions);
  }

  /** The session that serves `portal` (canonical `addr:port`), as portalHostMap maps it; none when no session does. */
  sessionAt(portal: string): IscsiSessionInfo | undefined {
    const host = this.#hosts.get(portal);
    return host === undefined ? undefined : this.sessions.find((s) => s.host === host);
  }
}

/** One read of the iSCSI part of sysfs, answering the questions of an attach/detach step without re-reading. */
export class IscsiTopology {
  constructor(readonly sessions: IscsiSessionInfo[]) {}

  sessionsForTarget(iqn: string): IscsiSessionInfo[] {
    return this.sessions.filter((s) => s.iqn === iqn);
  }
}

export interface MultipathHolder {
  /** `dm-N` */
  dm: string;
  /** `mpath-<wwid>` */
  uuid: string;
  /** the map name (`mpatha`, the WWID, or an alias; the WWID if unreadable); never used to derive the WWID */
  name: string;
  wwid: string;
}

interface SessionDir {
  host: number;
  sid: number;
  /** `session<sid>` */
  name: string;
  dir: string;
  /** its target name */
  iqn: string;
}

/** What never changes while a session exists: its SCSI host and its target. */
interface KnownSession {
  host: number;
  iqn: string;
}

const SESSION_NAME_RE = /^session\d+$/;
const TARGET_DIR_RE = /^target\d+:\d+:\d+$/;
/** `class/iscsi_session/sessionS` → `…/hostH/sessionS/iscsi_session/sessionS` (open-iscsi.md §4.1). */
const SESSION_LINK_RE = /(?:^|\/)host(\d+)\/session\d+\/iscsi_session\/session\d+$/;

/** Canonical `addr:port` keys of a session's connections: persistent addresses first, then current ones. */
function portalKeys(connections: IscsiConnectionInfo[]): string[] {
  const portals: string[] = [];
  const add = (address: string | null, port: number | null): void => {
    if (address === null || port === null || address === '') return;
    const key = portalKeyOf(address, port);
    if (!portals.includes(key)) portals.push(key);
  };
  for (const c of connections) add(c.persistentAddress, c.persistentPort);
  for (const c of connections) add(c.address, c.port);
  return portals;
}

function toInt(text: string | null): number | null {
  return text !== null && /^-?\d+$/.test(text) ? Number(text) : null;
}

function assertDeviceName(name: string): string {
  if (!DEVICE_NAME_RE.test(name) || name === '.' || name === '..') throw new InvalidArgument(`${JSON.stringify(name)} is not a block device name`);
  return name;
}

// Reads stay asynchronous: on the real kernel a storm of device waits re-reads these on every new
// disk, and synchronous reads there (slow syscalls under load, an attribute read that takes a socket
// lock) held the event loop so long that other stages' bounded device reads timed out
// (make vm-test, the 32-volume ext4 storm). A question about one LUN reads only that LUN instead.
// An attribute is one open, one read at offset 0 (sysfs fills a page per read) and one close, on a
// plain descriptor: fs.promises.readFile adds an fstat and a FileHandle, about half again the CPU.
function readAttr(path: string): Promise<string | null> {
  return new Promise((resolve) => {
    open(path, 'r', (openErr, fd) => {
      // missing attribute, or a kernel read error (ENOTCONN while a connection is down, EACCES, EIO)
      if (openErr) return resolve(null);
      const buf = Buffer.allocUnsafe(ATTR_READ_BYTES);
      read(fd, buf, 0, ATTR_READ_BYTES, 0, (readErr, bytes) => {
        close(fd, () => resolve(readErr ? null : buf.toString('utf8', 0, bytes).replace(/\n$/, '')));
      });
    });
  });
}

async function listDir(path: string): Promise<string[]> {
  try {
    return await fs.readdir(path);
  } catch (e) {
    if (['ENOENT', 'ENOTDIR'].includes(errnoCode(e) ?? '')) return [];
    throw e;
  }
}

/** `targetH:C:T` → `H:C:T:L` of LUN `lun` (whether or not it exists). */
function lunName(targetDir: string, lun: number): string | null {
  const m = /target(\d+):(\d+):(\d+)$/.exec(targetDir);
  return m ? `${m[1]}:${m[2]}:${m[3]}:${lun}` : null;
}

/**
 * The block devices of one SCSI device directory (`H:C:T:L`): its `block/` entries, read first since
 * a LUN that has its disk has them (one directory read); null when there is no such LUN.
 */
async function lunBlockDevices(lunDir: string): Promise<string[] | null> {
  try {
    return (await fs.readdir(join(lunDir, 'block'))).sort();
  } catch (e) {
    if (!['ENOENT', 'ENOTDIR'].includes(errnoCode(e) ?? '')) throw e;
  }
  const entries = await listDir(lunDir);
  if (entries.length === 0) return null; // no such LUN (a device directory is never empty)
  // kernels before 2.6.25 expose the disk as a `block:sdX` link instead of a `block/` directory
  return entries.filter((e) => e.startsWith('block:')).map((e) => e.slice('block:'.length)).sort();
}

/**
 * Writes a sysfs control file (`scan`, `delete`, `rescan`) that may be a regular sysfs attribute or a
 * FIFO read by a simulated kernel. ENXIO (FIFO without a reader) and EAGAIN are retried with a short
 * bounded backoff; any other error is thrown as is.
 */
export async function writeControlFile(path: string, data: string, waitMs = CONTROL_WRITE_WAIT_MS): Promise<void> {
  const deadline = Date.now() + waitMs;
  let delay = CONTROL_WRITE_FIRST_RETRY_MS;
  for (;;) {
    try {
      await fs.writeFile(path, data, { flag: CONTROL_OPEN_FLAGS });
      return;
    } catch (e) {
      const code = errnoCode(e);
      if ((code === 'ENXIO' || code === 'EAGAIN') && Date.now() < deadline) {
        await sleep(delay);
        delay = Math.min(delay * 2, CONTROL_WRITE_MAX_RETRY_MS);
        continue;
      }
      throw e;
    }
  }
}

export class Sysfs {
  /**
   * Sessions already read, by `sessionS`, while `class/iscsi_session` lists them: a question about one
   * target reads that target's sessions (and new ones), not every session's target name, so stats and
   * stages cost the same with 1 target on the node or 256.
   */
  readonly #sessions = new Map<string, KnownSession>();

  constructor(readonly sysRoot: string) {}

  private path(...parts: string[]): string {
    return join(this.sysRoot, ...parts);
  }

  /**
   * The sessions `class/iscsi_session` lists: target name, state, connections and LUNs with their
   * block devices. With `iqn`, only that target's sessions are read; with `onlyLun`
   * too, only that LUN's directory is read (its H:C:T:L name is known), so the cost of asking about one
   * volume does not grow with the LUNs of its target already attached.
   */
  async topology(iqn?: string, onlyLun?: number): Promise<IscsiTopology> {
    const found = await this.sessionDirs(iqn);
    const sessions = await Promise.all(found.map((s) => this.readSession(s, onlyLun)));
    return new IscsiTopology(sessions.filter((s): s is IscsiSessionInfo => s !== null).sort((a, b) => a.sid - b.sid));
  }

  /**
   * The sessions `class/iscsi_session` lists (one directory read), each as its
   * `class/iscsi_host/hostH/device/sessionS` directory; with `iqn`, only that target's. A session kept
   * from an earlier call as another target's is not read again; one kept as this target's has its
   * target name read again, since the name may be a newer session's by now.
   */
  private async sessionDirs(iqn?: string): Promise<SessionDir[]> {
    const names = (await listDir(this.path('class', 'iscsi_session'))).filter((n) => SESSION_NAME_RE.test(n));
    const listed = new Set(names);
    for (const name of this.#sessions.keys()) if (!listed.has(name)) this.#sessions.delete(name);
    const found = await Promise.all(names.map(async (name): Promise<SessionDir | null> => {
      const known = this.#sessions.get(name);
      if (known && iqn !== undefined && known.iqn !== iqn) return null;
      let dir = known ? await this.confirmedSession(name, known) : null;
      if (!dir) {
        this.#sessions.delete(name);
        dir = await this.readSessionPlace(name);
        if (!dir) return null; // gone meanwhile, or not laid out as the kernel does
        this.#sessions.set(name, { host: dir.host, iqn: dir.iqn });
      }
      return iqn === undefined || dir.iqn === iqn ? dir : null;
    }));
    return found.filter((d): d is SessionDir => d !== null);
  }

  private sessionDir(name: string, known: KnownSession): SessionDir {
    return { host: known.host, sid: Number(name.slice('session'.length)), name, dir: this.path('class', 'iscsi_host', `host${known.host}`, 'device', name), iqn: known.iqn };
  }

  /** The kept session, when its directory under its host still names its target. */
  private async confirmedSession(name: string, known: KnownSession): Promise<SessionDir | null> {
    const s = this.sessionDir(name, known);
    return (await readAttr(join(s.dir, 'iscsi_session', name, 'targetname'))) === known.iqn ? s : null;
  }

  /** A session's SCSI host (from its class link) and target name, read afresh. */
  private async readSessionPlace(name: string): Promise<SessionDir | null> {
    let link: string;
    try {
      link = await fs.readlink(this.path('class', 'iscsi_session', name));
    } catch {
      return null;
    }
    const m = SESSION_LINK_RE.exec(link);
    if (!m) return null;
    const s = this.sessionDir(name, { host: Number(m[1]), iqn: '' });
    const iqn = await readAttr(join(s.dir, 'iscsi_session', name, 'targetname'));
    return iqn === null ? null : { ...s, iqn };
  }

  private readConnections(s: SessionDir, entries: string[]): Promise<IscsiConnectionInfo[]> {
    return Promise.all(entries.filter((e) => /^connection\d+:\d+$/.test(e)).sort().map((c) => this.readConnection(join(s.dir, c, 'iscsi_connection', c), c)));
  }

  private async readSession(s: SessionDir, onlyLun?: number): Promise<IscsiSessionInfo | null> {
    const entries = await listDir(s.dir);
    if (entries.length === 0) return null; // gone meanwhile
    const [state, connections, luns] = await Promise.all([
      this.readSessionState(s.dir, s.name),
      this.readConnections(s, entries),
      Promise.all(entries.filter((e) => TARGET_DIR_RE.test(e)).map((t) => this.readTargetLuns(join(s.dir, t), onlyLun))).then((l) => l.flat()),
    ]);
    return { sid: s.sid, host: s.host, iqn: s.iqn, state, connections, portals: portalKeys(connections), luns: luns.sort((a, b) => a.lun - b.lun) };
  }

  private async readSessionState(sessionDir: string, name: string): Promise<string | null> {
    return (await readAttr(this.path('class', 'iscsi_session', name, 'state'))) ?? (await readAttr(join(sessionDir, 'iscsi_session', name, 'state')));
  }

  private async readConnection(dir: string, name: string): Promise<IscsiConnectionInfo> {
    const [address, port, persistentAddress, persistentPort] = await Promise.all(
      ['address', 'port', 'persistent_address', 'persistent_port'].map((a) => readAttr(join(dir, a))),
    );
    return { name, address: address ?? null, port: toInt(port ?? null), persistentAddress: persistentAddress ?? null, persistentPort: toInt(persistentPort ?? null) };
  }

  private async readTargetLuns(targetDir: string, onlyLun?: number): Promise<ScsiLunInfo[]> {
    const one = onlyLun === undefined ? null : lunName(targetDir, onlyLun);
    const luns = onlyLun === undefined ? (await listDir(targetDir)).filter((e) => HCTL_RE.test(e)) : one === null ? [] : [one];
    const read = await Promise.all(
      luns.map(async (hctl): Promise<ScsiLunInfo | null> => {
        const [, h, c, t, l] = HCTL_RE.exec(hctl)!.map(Number);
        const lunDir = join(targetDir, hctl);
        const [devices, state] = await Promise.all([lunBlockDevices(lunDir), readAttr(join(lunDir, 'state'))]);
        return devices === null ? null : { hctl, host: h!, channel: c!, target: t!, lun: l!, devices, state };
      }),
    );
    return read.filter((x): x is ScsiLunInfo => x !== null);
  }

  /**
   * `addr:port` → SCSI host number for the target's sessions (IPv6 bracketed, canonical: the portals
   * `topology(iqn)` lists for them), limited to the sessions made through `iface` when one is
   * given. Every stage asks for it under the target lock, so it reads only the target's sessions'
   * ifaces and connections, never the LUN directories: its cost does not grow with the LUNs already
   * attached (a storm of N stages would otherwise walk O(N²) LUN directories) nor with other targets.
   */
  async portalHostMap(iqn: string, iface?: string): Promise<Map<string, number>> {
    const found = await this.sessionDirs(iqn);
    const sessions = await Promise.all(
      found.map(async (s) => {
        if (!(await this.usesIface(s, iface))) return null;
        return { sid: s.sid, host: s.host, portals: portalKeys(await this.readConnections(s, await listDir(s.dir))) };
      }),
    );
    return portalHosts(sessions.filter((x) => x !== null));
  }

  /**
   * One volume's paths in one walk: the target's sessions through `iface` (all, when none is given),
   * each with its state, connections and LUN `lun` only. What a volume's condition and the healer ask
   * of every staged volume, so neither reads the sessions twice.
   */
  async volumePaths(iqn: string, lun: number, iface?: string): Promise<VolumePaths> {
    const found = await this.sessionDirs(iqn);
    const sessions = await Promise.all(found.map(async (s) => ((await this.usesIface(s, iface)) ? this.readSession(s, lun) : null)));
    return new VolumePaths(sessions.filter((s): s is IscsiSessionInfo => s !== null));
  }

  /**
   * Whether a session was made through `iface` (its `ifacename` attribute, set by iscsid). A volume with
   * its own initiator name has its own iface and sessions: a LUN must be scanned on those, not on
   * another volume's session to the same portal. No iface asked, or an unreadable attribute, matches.
   */
  private async usesIface(s: SessionDir, iface: string | undefined): Promise<boolean> {
    if (iface === undefined) return true;
    const name = await readAttr(join(s.dir, 'iscsi_session', s.name, 'ifacename'));
    return name === null || name === '' || name === '(null)' || name === iface;
  }

  /**
   * Block devices of LUN `lun` on SCSI host `host`: `class/scsi_device/H:0:0:L/device/block/*`, else
   * `class/iscsi_host/hostH/device/session*\/target*\/H:C:T:L/block/*`.
   * Reads only that LUN's directory, not its neighbours': a storm of N waits asks this on every new
   * device node, and its cost must not grow with the LUNs already attached.
   */
  async devicesForLun(host: number, lun: number): Promise<string[]> {
    // a software iSCSI host has its LUNs at channel 0, target 0 (as scanLun asks): one directory read
    // through class/scsi_device when the LUN is there; the walk finds it anywhere else, or not at all
    const direct = await lunBlockDevices(this.path('class', 'scsi_device', `${host}:0:0:${lun}`, 'device'));
    if (direct !== null) return direct;
    const deviceDir = this.path('class', 'iscsi_host', `host${host}`, 'device');
    const sessions = (await listDir(deviceDir)).filter((s) => /^session\d+$/.test(s));
    const found = await Promise.all(
      sessions.map(async (s) => {
        const targets = (await listDir(join(deviceDir, s))).filter((t) => TARGET_DIR_RE.test(t));
        const perTarget = await Promise.all(targets.map(async (t) => {
          const targetDir = join(deviceDir, s, t);
          const names = (await listDir(targetDir)).filter((e) => {
            const m = HCTL_RE.exec(e);
            return m !== null && Number(m[1]) === host && Number(m[4]) === lun;
          });
          return (await Promise.all(names.map(async (n) => (await lunBlockDevices(join(targetDir, n))) ?? []))).flat();
        }));
        return perTarget.flat();
      }),
    );
    return found.flat().sort();
  }

  /**
   * Block device names (`sdb`) of one LUN of a target across all its sessions (one per path), in
   * session order. Reads only what the names need: each session's target directories and that LUN's
   * `block/`, not the sessions' states and connections (asked at every stats call, publish and unstage).
   */
  async devicesForIqnLun(iqn: string, lun: number): Promise<string[]> {
    const sessions = (await this.sessionDirs(iqn)).sort((a, b) => a.sid - b.sid);
    const perSession = await Promise.all(sessions.map(async (s) => {
      const targets = (await listDir(s.dir)).filter((e) => TARGET_DIR_RE.test(e)).sort();
      const perTarget = await Promise.all(targets.map(async (t) => {
        const hctl = lunName(join(s.dir, t), lun);
        return hctl === null ? [] : ((await lunBlockDevices(join(s.dir, t, hctl))) ?? []);
      }));
      return perTarget.flat();
    }));
    return perSession.flat();
  }

  /** Asks the SCSI host to scan exactly one LUN (channel 0, target 0, as for every software iSCSI host). */
  async scanLun(host: number, lun: number): Promise<void> {
    const file = this.path('class', 'scsi_host', `host${host}`, 'scan');
    try {
      await writeControlFile(file, `0 0 ${lun}`);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new NotFound(`SCSI host ${host} is gone (no ${file}); the iSCSI session ended`);
      throw new Unavailable(`scanning LUN ${lun} on SCSI host ${host} failed: ${(e as Error).message}`);
    }
  }

  /** Removes a SCSI device (`echo 1 > block/sdX/device/delete`); false when it was already gone. */
  async deleteDevice(name: string): Promise<boolean> {
    const file = this.path('block', assertDeviceName(name), 'device', 'delete');
    try {
      await writeControlFile(file, '1');
      return true;
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return false;
      throw new Unavailable(`deleting SCSI device ${name} failed: ${(e as Error).message}`);
    }
  }

  /** Re-reads a device's capacity (`echo 1 > block/sdX/device/rescan`). */
  async rescanDevice(name: string): Promise<void> {
    const file = this.path('block', assertDeviceName(name), 'device', 'rescan');
    try {
      await writeControlFile(file, '1');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new NotFound(`SCSI device ${name} does not exist (no ${file})`);
      throw new Unavailable(`rescanning SCSI device ${name} failed: ${(e as Error).message}`);
    }
  }

  /** Size in bytes from `block/<name>/size` (512-byte sectors); null when the device does not exist. */
  async deviceSizeBytes(name: string): Promise<number | null> {
    const sectors = toInt(await readAttr(this.path('block', assertDeviceName(name), 'size')));
    return sectors === null ? null : sectors * SECTOR_BYTES;
  }

  /** `major:minor` of a block device (`block/<name>/dev`), or null when it is gone. */
  async deviceNumber(name: string): Promise<string | null> {
    const text = await readAttr(this.path('block', assertDeviceName(name), 'dev'));
    return text !== null && /^\d+:\d+$/.test(text) ? text : null;
  }

  /**
   * The LUN's identity as the kernel read it from VPD page 0x83 (`block/<name>/device/wwid`, e.g.
   * `naa.6000…`); null when the device is gone or the kernel has none for it (no page 0x83: ENXIO).
   */
  async deviceWwid(name: string): Promise<string | null> {
    const text = await readAttr(this.path('block', assertDeviceName(name), 'device', 'wwid'));
    return text === null || text === '' ? null : text;
  }

  /** Whether `block/<name>` exists. */
  async deviceExists(name: string): Promise<boolean> {
    try {
      await fs.access(this.path('block', assertDeviceName(name)));
      return true;
    } catch {
      return false;
    }
  }

  /** What holds a block device open as a layer over it (`block/<name>/holders`: dm maps, md, loop); empty when gone. */
  async holders(name: string): Promise<string[]> {
    return (await listDir(this.path('block', assertDeviceName(name), 'holders'))).sort();
  }

  /**
   * The multipath map holding a path device: a `dm-*` entry in `block/sdX/holders` whose `dm/uuid`
   * starts with `mpath-`. The WWID comes from the uuid, never from the map's name (user_friendly_names).
   */
  async multipathHolder(name: string): Promise<MultipathHolder | null> {
    const holders = (await listDir(this.path('block', assertDeviceName(name), 'holders'))).filter((h) => /^dm-\d+$/.test(h)).sort();
    for (const dm of holders) {
      const uuid = await readAttr(this.path('block', dm, 'dm', 'uuid'));
      if (uuid === null || !uuid.startsWith(MPATH_UUID_PREFIX)) continue;
      const mapName = await readAttr(this.path('block', dm, 'dm', 'name'));
      const wwid = uuid.slice(MPATH_UUID_PREFIX.length);
      return { dm, uuid, name: mapName && mapName.length > 0 ? mapName : wwid, wwid };
    }
    return null;
  }
}
