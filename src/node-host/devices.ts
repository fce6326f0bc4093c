// Device nodes and their stable names under a configurable /dev root, and event-driven waits for them:
// the by-path link udev creates for an iSCSI LUN and the multipath map that may take the path over.
// Waits watch the directories (inotify through fs.watch) and fall back to a short poll; the watch is
// in place before the first check, so an entry created in between is never missed.
import { watch, promises as fs, type FSWatcher } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { errnoCode } from '../errors.js';
import type { MultipathHolder, Sysfs } from './sysfs.js';
import type { Portal } from '../common/validate.js';

export interface WaitOptions {
  /** give up after this long */
  deadlineMs: number;
  /** fallback poll interval, for file systems that do not report changes (sysfs) */
  pollMs: number;
  signal?: AbortSignal;
}

export type WaitFailure = { ok: false; reason: 'timeout' | 'aborted'; waitedMs: number };
/** `device`: the kernel node (`/dev/sdX`); `link`: its stable name (the by-path link, else the node). */
export type DeviceWaitResult = { ok: true; device: string; link: string; waitedMs: number } | WaitFailure;

/** What names a LUN's by-path link: the portal, the target, and the iface's transport. */
export interface LunName {
  portal: Portal;
  iqn: string;
  transport?: string;
}
export type HolderWaitResult = { ok: true; holder: MultipathHolder; device: string; waitedMs: number } | WaitFailure;

const DEFAULT_TRANSPORT = 'tcp';
/** the kernel's names for SCSI disks (sd.c): sda … sdz, sdaa … */
const SCSI_DISK_NODE_RE = /^sd[a-z]+$/;

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 100) / 100;
}

function isInside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith('..') && !rel.startsWith('/'));
}

/** A directory to watch; `root` bounds the walk up to an existing ancestor while it does not exist. */
export interface WatchTarget {
  dir: string;
  root: string;
  /** which change events in `dir` warrant a check (all when omitted; filename may be null) */
  relevant?: (filename: string | null) => boolean;
}

/**
 * Resolves with the first non-null value of `check`, re-run whenever a watched directory reports a
 * relevant change and on every poll tick. A directory that does not exist yet is watched through its
 * nearest existing ancestor (not above its root) until it appears. Every watcher and timer is released
 * on every outcome.
 */
export function waitUntil<T>(
  targets: WatchTarget[],
  check: () => Promise<T | null>,
  opts: WaitOptions,
): Promise<{ ok: true; value: T; waitedMs: number } | WaitFailure> {
  const started = performance.now();
  return new Promise((resolve) => {
    const watchers = new Map<string, FSWatcher>();
    let done = false;
    let checking = false;
    let again = false;
    let pollTimer: NodeJS.Timeout | undefined;
    let deadlineTimer: NodeJS.Timeout | undefined;

    const finish = (result: { ok: true; value: T; waitedMs: number } | WaitFailure): void => {
      if (done) return;
      done = true;
      for (const w of watchers.values()) w.close();
      watchers.clear();
      clearInterval(pollTimer);
      clearTimeout(deadlineTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve(result);
    };
    const onAbort = (): void => finish({ ok: false, reason: 'aborted', waitedMs: elapsed(started) });

    const runCheck = async (): Promise<void> => {
      if (done) return;
      if (checking) {
        again = true; // a change arrived while a check was running: check once more afterwards
        return;
      }
      checking = true;
      try {
        do {
          again = false;
          let value: T | null = null;
          try {
            value = await check();
          } catch {
            value = null; // a half-created entry; the next event or poll looks again
          }
          if (value !== null) return finish({ ok: true, value, waitedMs: elapsed(started) });
        } while (again && !done);
      } finally {
        checking = false;
      }
    };

    const relevantFor = (dir: string, filename: string | null): boolean => {
      // an ancestor standing in for a missing directory: any change may be that directory appearing
      if (targets.some((t) => t.dir !== dir && !watchers.has(t.dir) && isInside(dir, t.dir))) return true;
      return targets.some((t) => t.dir === dir && (!t.relevant || t.relevant(filename)));
    };

    const ensureWatches = (): void => {
      for (const { dir, root } of targets) {
        if (done || watchers.has(dir)) continue;
        for (let d = dir; isInside(root, d); d = dirname(d)) {
          if (watchers.has(d)) break; // an ancestor already watches for `dir` to appear
          try {
            const w = watch(d, (_event, filename) => {
              if (!relevantFor(d, filename === null ? null : String(filename))) return;
              ensureWatches();
              void runCheck();
            });
            w.on('error', () => {
              // the directory went away (e.g. by-path removed with its last link): watch from above again
              w.close();
              if (watchers.get(d) === w) watchers.delete(d);
            });
            watchers.set(d, w);
            break;
          } catch (e) {
            const code = errnoCode(e);
            if ((code !== 'ENOENT' && code !== 'ENOTDIR') || d === dirname(d)) break;
          }
        }
      }
    };

    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    deadlineTimer = setTimeout(() => finish({ ok: false, reason: 'timeout', waitedMs: elapsed(started) }), opts.deadlineMs);
    if (opts.pollMs > 0) {
      pollTimer = setInterval(() => {
        ensureWatches();
        void runCheck();
      }, opts.pollMs);
    }
    ensureWatches(); // before the first check: nothing created from here on can be missed
    void runCheck();
  });
}

export class Devices {
  constructor(
    readonly devRoot: string,
    private readonly sysfs: Sysfs,
  ) {}

  /** `<devRoot>/disk/by-path` */
  byPathDir(): string {
    return join(this.devRoot, 'disk', 'by-path');
  }

  /**
   * udev's by-path name for a software-iSCSI LUN: `ip-<addr>:<port>-iscsi-<iqn>-lun-<lun>`, the address
   * raw as in sysfs `persistent_address` (IPv6 without brackets).
   */
  byPathName(portal: Portal, iqn: string, lun: number): string {
    return `ip-${portal.host}:${portal.port}-iscsi-${iqn}-lun-${lun}`;
  }

  /** `<devRoot>/disk/by-path/ip-<addr>:<port>-iscsi-<iqn>-lun-<lun>` */
  byPathLink(portal: Portal, iqn: string, lun: number): string {
    return join(this.byPathDir(), this.byPathName(portal, iqn, lun));
  }

  /** `<devRoot>/<name>`, e.g. `/dev/sdb`, `/dev/dm-3` */
  devicePath(name: string): string {
    return join(this.devRoot, name);
  }

  /**
   * Waits until the kernel has a block device for LUN `lun` on SCSI host `scsiHost` and its node is in
   * the /dev root, and returns it with its stable name. The kernel's own view decides, not udev's: the
   * disk is listed in sysfs (`…/session*\/target*\/H:C:T:L/block/sdX`) and devtmpfs makes `/dev/sdX`
   * as the disk is added, while udev writes `disk/by-path` whenever it gets to the event, which under
   * load (a storm of stages formatting and mounting, each change event re-running the rules) can be
   * long after. The by-path link is the device's name when udev has made it and it points at this
   * device; otherwise the kernel node is. sysfs reports nothing through inotify, so a new SCSI disk
   * node under the /dev root wakes the wait (not the sg/bsg nodes and links that come with it: in a
   * storm every wake re-checks every waiting LUN), and the poll covers the rest.
   */
  async waitForLunDevice(scsiHost: number, lun: number, name: LunName, opts: WaitOptions): Promise<DeviceWaitResult> {
    const r = await waitUntil(
      [{ dir: this.devRoot, root: this.devRoot, relevant: (f) => f === null || SCSI_DISK_NODE_RE.test(f) }],
      () => this.findLunDevice(scsiHost, lun, name),
      opts,
    );
    return r.ok ? { ok: true, ...r.value, waitedMs: r.waitedMs } : r;
  }

  /** The LUN's block device on `scsiHost` right now, with its stable name, or null (see waitForLunDevice). */
  async findLunDevice(scsiHost: number, lun: number, name: LunName): Promise<{ device: string; link: string } | null> {
    for (const disk of await this.sysfs.devicesForLun(scsiHost, lun)) {
      const node = this.devicePath(disk);
      if (!(await this.isNodeOf(node, disk))) continue;
      const byPath = await this.findByPath(name.portal, name.iqn, lun, name.transport);
      return { device: node, link: byPath?.device === node ? byPath.link : node };
    }
    return null;
  }

  /** Whether `node` is the block device the kernel lists as `disk` (same major:minor). */
  private async isNodeOf(node: string, disk: string): Promise<boolean> {
    let st;
    try {
      st = await fs.stat(node);
    } catch {
      return false;
    }
    if (!st.isBlockDevice()) return false;
    const number = await this.sysfs.deviceNumber(disk);
    return number === null || number === `${major(st.rdev)}:${minor(st.rdev)}`;
  }

  /** The device node `path` (a by-path link, /dev/dm-N) leads to now, or null when it is gone. */
  resolveDevice(path: string): Promise<string | null> {
    return resolveExisting(path);
  }

  /** An existing, resolving by-path link for the LUN right now (no waiting), or null. */
  async findByPath(portal: Portal, iqn: string, lun: number, transport = DEFAULT_TRANSPORT): Promise<{ device: string; link: string } | null> {
    if (transport !== DEFAULT_TRANSPORT) return this.findOffloadLink(this.offloadLinkMatcher(portal, iqn, lun));
    const link = this.byPathLink(portal, iqn, lun);
    const device = await resolveExisting(link);
    return device === null ? null : { device, link };
  }

  private offloadLinkMatcher(portal: Portal, iqn: string, lun: number): (name: string) => boolean {
    const suffix = `-${this.byPathName(portal, iqn, lun)}`;
    return (name) => name.startsWith('pci-') && name.endsWith(suffix);
  }

  private async findOffloadLink(matches: (name: string) => boolean): Promise<{ device: string; link: string } | null> {
    const dir = this.byPathDir();
    let entries: string[];
    try {
      entries = await fs.readdir(dir);
    } catch {
      return null;
    }
    for (const entry of entries.filter(matches).sort()) {
      const device = await resolveExisting(join(dir, entry));
      if (device !== null) return { device, link: join(dir, entry) };
    }
    return null;
  }

  /**
   * Waits until the SCSI device `name` is gone from sysfs (`block/<name>`) after a delete. A kernel
   * removes it before the write to `delete` returns, so this returns at once there; a simulated host
   * removes it a moment later. A detach counts on it: a volume whose devices are gone stops holding
   * the session, and a device still listed would look like another user's.
   */
  async waitForDeviceRemoved(name: string, opts: WaitOptions): Promise<{ ok: true; waitedMs: number } | WaitFailure> {
    const r = await waitUntil(
      [{ dir: join(this.sysfs.sysRoot, 'block'), root: this.sysfs.sysRoot, relevant: (f) => f === null || f === name }],
      async () => ((await this.sysfs.deviceExists(name)) ? null : true),
      opts,
    );
    return r.ok ? { ok: true, waitedMs: r.waitedMs } : r;
  }

  /**
   * Waits until a multipath map holds the path device `name` and its `/dev/dm-N` node exists. sysfs
   * does not report new holders through inotify on a real kernel, so the dm node's appearance under the
   * /dev root (and /dev/mapper) is what wakes the wait; the poll covers the rest.
   */
  async waitForMultipathHolder(name: string, opts: WaitOptions): Promise<HolderWaitResult> {
    const holdersDir = join(this.sysfs.sysRoot, 'block', name, 'holders');
    const r = await waitUntil(
      [
        { dir: this.devRoot, root: this.devRoot },
        { dir: join(this.devRoot, 'mapper'), root: this.devRoot },
        { dir: holdersDir, root: this.sysfs.sysRoot },
      ],
      async () => {
        const holder = await this.sysfs.multipathHolder(name);
        if (!holder) return null;
        const device = this.devicePath(holder.dm);
        return (await resolveExisting(device)) === null ? null : { holder, device };
      },
      opts,
    );
    return r.ok ? { ok: true, holder: r.value.holder, device: r.value.device, waitedMs: r.waitedMs } : r;
  }
}

/** Linux `dev_t` → major (glibc's encoding: major bits 8–19 and 32 up, minor bits 0–7 and 20–51). */
function major(rdev: number): number {
  const high = Math.floor(rdev / 2 ** 32);
  return (Math.floor(rdev / 2 ** 8) % 2 ** 12) + (high - (high % 2 ** 12));
}

function minor(rdev: number): number {
  const mid = Math.floor(rdev / 2 ** 12) % 2 ** 32;
  return (rdev % 2 ** 8) + (mid - (mid % 2 ** 8));
}

/** The real path of `path` if it (and, for a link, its target) exists, else null. */
export async function resolveExisting(path: string): Promise<string | null> {
  try {
    return await fs.realpath(path);
  } catch (e) {
    if (['ENOENT', 'ENOTDIR', 'ELOOP'].includes(errnoCode(e) ?? '')) return null;
    throw e;
  }
}
