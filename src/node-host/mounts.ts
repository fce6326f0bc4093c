// Mount table and mount/unmount through the CommandRunner. Whether a path is mounted is decided from
// mountinfo (configurable path), never from stat: stat on a mount whose device went away fails with
// EIO/ENOTCONN/ESTALE, and such a stale mount must still be found and unmounted.
import { promises as fs, readFileSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HostConfig, TimeoutConfig } from '../config.js';
import { errnoCode, Internal } from '../errors.js';
import type { Logger } from '../log.js';
import { firstLine, type CommandRunner, type RunResult } from '../runner.js';

export interface MountInfoEntry {
  mountId: number;
  parentId: number;
  major: number;
  minor: number;
  /** root of the mount within its filesystem (`/` unless a bind of a subdirectory) */
  root: string;
  mountPoint: string;
  /** per-mount options (`rw`, `ro`, `relatime`, …) */
  mountOptions: string[];
  /** `shared:N`, `master:N`, `propagate_from:N`, `unbindable` */
  optionalFields: string[];
  fsType: string;
  source: string;
  /** per-superblock options */
  superOptions: string[];
}

/** Undoes the kernel's octal escaping of space, tab, newline and backslash (`\040`, `\011`, `\012`, `\134`). */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The kernel's escaping of a mount field (what unescapeMountField undoes). */
function escapeMountField(field: string): string {
  return field.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
}

/**
 * One line of /proc/<pid>/mountinfo (proc(5)): `id parent major:minor root mountpoint options
 * [optional…] - fstype source superoptions`; null when it does not follow the format.
 */
function parseMountInfoLine(line: string): MountInfoEntry | null {
  if (line.trim() === '') return null;
  const fields = line.split(' ');
  const sep = fields.indexOf('-', 6);
  if (sep < 0 || fields.length < sep + 3) return null;
  const [id, parent, dev, root, mountPoint, options] = fields;
  const devMatch = /^(\d+):(\d+)$/.exec(dev ?? '');
  if (!devMatch) return null;
  return {
    mountId: Number(id),
    parentId: Number(parent),
    major: Number(devMatch[1]),
    minor: Number(devMatch[2]),
    root: unescapeMountField(root!),
    mountPoint: unescapeMountField(mountPoint!),
    mountOptions: options!.split(','),
    optionalFields: fields.slice(6, sep),
    fsType: unescapeMountField(fields[sep + 1]!),
    source: unescapeMountField(fields[sep + 2]!),
    superOptions: (fields[sep + 3] ?? '').split(',').filter(Boolean),
  };
}

/**
 * Parses /proc/<pid>/mountinfo, only the lines `mayMatch` lets through (a cheap test before the parse:
 * a node has hundreds of mounts, a question is about one). Lines that do not follow the format are
 * skipped.
 */
export function parseMountInfo(text: string, mayMatch: (line: string) => boolean = () => true): MountInfoEntry[] {
  const out: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (!mayMatch(line)) continue;
    const entry = parseMountInfoLine(line);
    if (entry) out.push(entry);
  }
  return out;
}

export type MountState =
  | { mounted: false }
  /** `stale`: stat on the mount point fails (device gone); `entry` is the topmost mount there */
  | { mounted: true; stale: boolean; entry: MountInfoEntry };

const STALE_ERRNOS = new Set(['ENOTCONN', 'EIO', 'ESTALE', 'EHOSTDOWN']);
/** Exit status of util-linux mount/umount for "mount failure" (the only one that can mean busy). */
const MOUNT_FAILURE_EXIT = 32;
const BUSY_RE = /target is busy|device is busy|EBUSY/i;
const NOT_MOUNTED_RE = /not mounted|no mount point specified/i;

export interface BindMountOptions {
  readonly?: boolean;
  /** further options applied with the read-only remount, e.g. mount options of the volume */
  options?: string[];
}

export interface MountsConfig {
  host: Pick<HostConfig, 'mountInfoPath'>;
  timeouts: Pick<TimeoutConfig, 'unmountRetries' | 'unmountRetryDelayMs'>;
}

export class Mounts {
  constructor(
    private readonly runner: CommandRunner,
    private readonly cfg: MountsConfig,
    private readonly logger?: Logger,
  ) {}

  /**
   * The whole mount table, read fresh. Synchronously: procfs generates it from memory (no device I/O),
   * and one read costs less than the thread-pool round trips of an asynchronous one.
   */
  async list(mayMatch?: (line: string) => boolean): Promise<MountInfoEntry[]> {
    return parseMountInfo(readFileSync(this.cfg.host.mountInfoPath, 'utf8'), mayMatch);
  }

  /**
   * The path as the mount table spells it: symlinks in the parent resolved (a stale mount point itself
   * cannot be resolved, its parent can), falling back to the plain absolute path.
   */
  async canonicalPath(path: string): Promise<string> {
    const abs = resolve(path);
    try {
      // the native realpath(3), synchronously: a walk of local directories in the dentry cache
      return join(realpathSync.native(dirname(abs)), basename(abs));
    } catch {
      return abs;
    }
  }

  /** Mounts whose mount point is `path`, in mount order (the last one is visible). */
  async mountsAt(path: string): Promise<MountInfoEntry[]> {
    const target = await this.canonicalPath(path);
    const field = ` ${escapeMountField(target)} `;
    return (await this.list((line) => line.includes(field))).filter((m) => m.mountPoint === target);
  }

  /**
   * The mounts of the filesystems on block devices `devices` (any path to their nodes), wherever they are:
   * matched by the device number (mountinfo's major:minor), or for a filesystem with an anonymous one
   * (btrfs: 0:N) by the device number of the mount's source. Bind mounts count too. A device whose
   * node is gone adds nothing (nothing can be told by its number). Several devices (a LUN's paths
   * and its map) take one read of the mount table; each mount is listed once.
   */
  async mountsOfDevices(devices: string[]): Promise<MountInfoEntry[]> {
    const numbers = new Set<string>();
    for (const device of devices) {
      const dev = await blockDeviceNumber(device);
      if (dev) numbers.add(`${dev.major}:${dev.minor}`);
    }
    if (numbers.size === 0) return [];
    const own = [...numbers].map((n) => ` ${n} `);
    const out: MountInfoEntry[] = [];
    for (const m of await this.list((line) => line.includes(' 0:') || own.some((n) => line.includes(n)))) {
      if (numbers.has(`${m.major}:${m.minor}`)) out.push(m);
      else if (m.major === 0 && m.source.startsWith('/')) {
        const src = await blockDeviceNumber(m.source);
        if (src && numbers.has(`${src.major}:${src.minor}`)) out.push(m);
      }
    }
    return out;
  }

  /** Whether `path` is a mount point, and whether that mount is stale. */
  async mountState(path: string): Promise<MountState> {
    const entries = await this.mountsAt(path);
    const entry = entries[entries.length - 1];
    if (!entry) return { mounted: false };
    try {
      await fs.stat(path);
      return { mounted: true, stale: false, entry };
    } catch (e) {
      return { mounted: true, stale: STALE_ERRNOS.has(errnoCode(e) ?? ''), entry };
    }
  }

  /** True for a mount point, stale or not (decided from mountinfo). */
  async isMountPoint(path: string): Promise<boolean> {
    return (await this.mountsAt(path)).length > 0;
  }

  /** `mount -t <fsType> [-o <options>] <source> <target>` */
  async mount(source: string, target: string, fsType: string, options: string[] = []): Promise<void> {
    const args = ['-t', fsType, ...(options.length ? ['-o', options.join(',')] : []), source, target];
    const r = await this.runner.run('mount', args, this.runOpts());
    if (r.exitCode !== 0) throw this.error(`mounting ${source} (${fsType}) at ${target}`, r, 'mount');
  }

  /**
   * `mount --bind <source> <target>`; read-only (or extra options) needs a second step, because the
   * kernel ignores flags on the bind itself: `mount -o remount,bind,ro[,…] <target>`. If that fails the
   * writable bind is undone, so no caller ever sees a writable mount it asked to be read-only.
   */
  async bindMount(source: string, target: string, opts: BindMountOptions = {}): Promise<void> {
    const r = await this.runner.run('mount', ['--bind', source, target], this.runOpts());
    if (r.exitCode !== 0) throw this.error(`bind-mounting ${source} at ${target}`, r, 'mount');
    const extra = (opts.options ?? []).filter((o) => o !== 'bind' && o !== 'rw' && o !== 'ro');
    if (!opts.readonly && extra.length === 0) return;
    const remountOptions = ['remount', 'bind', ...(opts.readonly ? ['ro'] : []), ...extra];
    const remount = await this.runner.run('mount', ['-o', remountOptions.join(','), target], this.runOpts());
    if (remount.exitCode !== 0) {
      const undo = await this.runner.run('umount', [target], this.runOpts());
      if (undo.exitCode !== 0) this.logger?.warn({ target, error: firstLine(undo) }, 'could not undo a bind mount whose remount failed');
      throw this.error(`remounting ${target} ${remountOptions.slice(2).join(',')}`, remount, 'mount');
    }
  }

  /**
   * Unmounts every mount stacked at `target`; nothing mounted is success. "Target is busy" is retried
   * `unmountRetries` times, `unmountRetryDelayMs` apart (a process may be leaving the directory; there
   * is no event for that). Returns how many mounts were removed.
   */
  async unmount(target: string): Promise<number> {
    const { unmountRetries, unmountRetryDelayMs } = this.cfg.timeouts;
    let entries = await this.mountsAt(target);
    // every pass removes a mount or uses up a retry; the bound also stops a loop if the mount table
    // and the umount command disagree (e.g. mountInfoPath of another mount namespace)
    const maxPasses = entries.length + unmountRetries + 1;
    let removed = 0;
    let busyRetries = 0;
    for (let pass = 0; entries.length > 0; pass++) {
      const mountPoint = entries[entries.length - 1]!.mountPoint;
      if (pass >= maxPasses) throw new Internal(`unmounting ${mountPoint} did not finish: ${entries.length} mount(s) still listed in ${this.cfg.host.mountInfoPath}`);
      const r = await this.runner.run('umount', [mountPoint], this.runOpts());
      const text = `${r.stderr}\n${r.stdout}`;
      if (r.exitCode === 0) {
        removed += 1;
      } else if (NOT_MOUNTED_RE.test(text)) {
        // raced with another unmount; the mount table decides below
      } else if (r.exitCode === MOUNT_FAILURE_EXIT && BUSY_RE.test(text) && busyRetries < unmountRetries) {
        busyRetries += 1;
        this.logger?.debug({ target: mountPoint, attempt: busyRetries }, 'unmount: target busy, retrying');
        await sleep(unmountRetryDelayMs);
      } else {
        throw this.error(`unmounting ${mountPoint}`, r, 'umount');
      }
      entries = await this.mountsAt(target);
    }
    return removed;
  }

  private runOpts(): { logger?: Logger } {
    return this.logger ? { logger: this.logger } : {};
  }

  private error(what: string, r: RunResult, tool: string): Internal {
    return new Internal(`${what} failed: ${firstLine(r).replace(/^(mount|umount): /, '')} (${tool} exit ${r.exitCode})`);
  }
}

/** major:minor of a block device node (Linux dev_t layout), or null when `path` is not one. */
export async function blockDeviceNumber(path: string): Promise<{ major: number; minor: number } | null> {
  try {
    const st = await fs.stat(path, { bigint: true });
    if (!st.isBlockDevice()) return null;
    const rdev = st.rdev;
    return {
      major: Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)),
      minor: Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)),
    };
  } catch {
    return null;
  }
}
