// Filesystems on block devices: probe (never format a device that holds anything), mkfs, online grow,
// usage statistics, device size and buffer flush. Every tool runs through the CommandRunner.
import { promises as fs } from 'node:fs';
import type { NodeConfig, TimeoutConfig } from '../config.js';
import { CsiError, errnoCode, FailedPrecondition, Internal, NotFound, Unavailable } from '../errors.js';
import type { Logger } from '../log.js';
import type { CommandRunner, RunResult } from '../runner.js';
import { parseFsType, type FsType } from '../common/validate.js';

/** `blkid -p`: 0 = something found, 2 = nothing found (also for unreadable/empty devices), 8 = several signatures. */
const BLKID_FOUND = 0;
const BLKID_NOTHING = 2;
const BLKID_AMBIVALENT = 8;
/** Enough to tell an unreadable or zero-sized device from an empty one. */
const READ_CHECK_BYTES = 4096;
/** What must read as zeros, at each end, before a device blkid finds nothing on counts as empty. */
export const EDGE_BYTES = 1024 * 1024;
const DEFAULT_DEVICE_READ_MS = 10_000;

/** Where a device blkid calls empty still holds data: a partition table, a LUKS or other header blkid misses. */
export type EdgeRegion = 'first MiB' | 'last MiB';

export interface ProbeResult {
  /**
   * null exactly when the device holds nothing at all (the only case in which formatting it is safe);
   * otherwise the filesystem type (TYPE), or `partition-table:<dos|gpt|…>`, `ambivalent` (several
   * signatures) or `unknown` (a signature blkid names no type for).
   */
  type: string | null;
  /** TYPE as blkid printed it (ext4, xfs, LVM2_member, crypto_LUKS, …) */
  fsType: string | null;
  uuid: string | null;
  label: string | null;
  /** `filesystem`, `raid`, `crypto`, `other` */
  usage: string | null;
  /** partition table type (`dos`, `gpt`) */
  ptType: string | null;
  /** anything at all: a filesystem, a partition table, a RAID/LVM/LUKS signature, or several of them */
  hasData: boolean;
  /** blkid found several signatures and would not choose (exit 8) */
  ambivalent: boolean;
  /** every key blkid printed */
  raw: Record<string, string>;
}

/** `blkid -o export`: `KEY=value` per line, values backslash-escaped (`LABEL=my\ vol`). */
export function parseBlkidExport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!.replace(/\\(.)/g, '$1');
  }
  return out;
}

/** A probe result from blkid's keys (exit 0 or 8); `{}` with ambivalent=false is an empty device. */
export function probeFrom(raw: Record<string, string>, ambivalent: boolean): ProbeResult {
  const hasData = ambivalent || Object.keys(raw).some((k) => k !== 'DEVNAME');
  const fsType = raw.TYPE ?? null;
  const ptType = raw.PTTYPE ?? null;
  let type: string | null = null;
  if (fsType !== null) type = fsType;
  else if (ptType !== null) type = `partition-table:${ptType}`;
  else if (ambivalent) type = 'ambivalent';
  else if (hasData) type = 'unknown';
  return { type, fsType, uuid: raw.UUID ?? null, label: raw.LABEL ?? null, usage: raw.USAGE ?? null, ptType, hasData, ambivalent, raw };
}

export interface FsStats {
  totalBytes: number;
  availableBytes: number;
  usedBytes: number;
  totalInodes: number;
  freeInodes: number;
  usedInodes: number;
}

export interface FilesystemConfig {
  node: Pick<NodeConfig, 'mkfsOptions'>;
  timeouts?: Pick<TimeoutConfig, 'deviceReadMs'>;
}

export class Filesystem {
  /** in-process flushes past their deadline and not finished yet */
  #stuckFlushes = 0;

  constructor(
    private readonly runner: CommandRunner,
    private readonly cfg: FilesystemConfig,
    private readonly logger?: Logger,
  ) {}

  /**
   * Reads the device's own signatures (`blkid -p`, bypassing the udev cache that once made drivers
   * reformat volumes). "Nothing found" is only believed for a device that exists and is readable,
   * because blkid reports a missing or zero-sized device the same way.
   */
  async probe(device: string): Promise<ProbeResult> {
    await this.assertReadable(device);
    const r = await this.runner.run('blkid', ['-p', '-o', 'export', device], this.runOpts());
    if (r.exitCode === BLKID_FOUND) return probeFrom(parseBlkidExport(r.stdout), false);
    if (r.exitCode === BLKID_AMBIVALENT) return probeFrom(parseBlkidExport(r.stdout), true);
    if (r.exitCode === BLKID_NOTHING && r.stderr.trim() === '') return probeFrom({}, false);
    throw this.error(`probing ${device} for a filesystem`, r, 'blkid');
  }

  private async assertReadable(device: string): Promise<void> {
    let handle: fs.FileHandle | undefined;
    try {
      handle = await fs.open(device, 'r');
      const { bytesRead } = await handle.read(Buffer.alloc(READ_CHECK_BYTES), 0, READ_CHECK_BYTES, 0);
      if (bytesRead === 0) throw new FailedPrecondition(`device ${device} has no data to read (size 0); refusing to treat it as empty`);
    } catch (e) {
      throw readFailure(device, e);
    } finally {
      await handle?.close();
    }
  }

  /**
   * Which of the device's first and last MiB hold a non-zero byte: read in this process (two bounded
   * reads), given timeouts.deviceReadMs in all; a read that does not finish by then fails (UNAVAILABLE):
   * a device that cannot be read is never called empty.
   */
  async nonZeroEdges(device: string): Promise<EdgeRegion[]> {
    const sizeBytes = await this.blockDeviceSize(device);
    const timeoutMs = this.cfg.timeouts?.deviceReadMs ?? DEFAULT_DEVICE_READ_MS;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Unavailable(`reading the first and last MiB of ${device} did not finish within ${timeoutMs} ms; refusing to treat it as empty`)), timeoutMs);
    });
    try {
      return await Promise.race([readEdges(device, sizeBytes), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** `mkfs.<fsType> <configured node.mkfsOptions[fsType]> <extra> <device>` */
  async mkfs(device: string, fsType: FsType, extraOptions: string[] = []): Promise<void> {
    const type = parseFsType(fsType);
    const args = [...(this.cfg.node.mkfsOptions[type] ?? []), ...extraOptions, device];
    const r = await this.runner.run(`mkfs.${type}`, args, this.runOpts());
    if (r.exitCode !== 0) throw this.error(`creating a ${type} filesystem on ${device}`, r, `mkfs.${type}`);
  }

  /**
   * Grows a mounted filesystem to its device's size: resize2fs on the device for ext3/ext4,
   * xfs_growfs and `btrfs filesystem resize max` on the mount path.
   */
  async resize(device: string, mountPath: string, fsType: FsType): Promise<void> {
    const type = parseFsType(fsType);
    let r: RunResult;
    if (type === 'ext4' || type === 'ext3') r = await this.runner.run('resize2fs', [device], this.runOpts());
    else if (type === 'xfs') r = await this.runner.run('xfs_growfs', ['-d', mountPath], this.runOpts());
    else r = await this.runner.run('btrfs', ['filesystem', 'resize', 'max', mountPath], this.runOpts());
    if (r.exitCode !== 0) throw this.error(`growing the ${type} filesystem on ${device} (mounted at ${mountPath})`, r, r.argv[0] ?? type);
  }

  /**
   * Capacity and inode usage of the filesystem holding `path`: `stat -f` (statfs) in its own process,
   * so a filesystem whose device stopped answering holds up a command, not the driver.
   */
  async statfs(path: string): Promise<FsStats> {
    const r = await this.runner.run('stat', ['-f', '-c', STATFS_FORMAT, '--', path], this.runOpts());
    if (r.exitCode !== 0) throw this.error(`reading the usage of ${path}`, r, 'stat');
    return parseStatfs(r.stdout, path);
  }

  /**
   * Whether the directory at `path` can be read (its entries listed, in its own process): null when it
   * can, else what went wrong. A filesystem that lost its device answers EIO here.
   */
  async readDirectory(path: string): Promise<string | null> {
    const r = await this.runner.run('find', [path, '-mindepth', '1', '-maxdepth', '1', '-quit'], this.runOpts());
    return r.exitCode === 0 ? null : `${path} cannot be read: ${lastLine(r) || `find exit ${r.exitCode}`}`;
  }

  /** `blockdev --getsize64 <device>` in bytes. */
  async blockDeviceSize(device: string): Promise<number> {
    const r = await this.runner.run('blockdev', ['--getsize64', device], this.runOpts());
    const text = r.stdout.trim();
    if (r.exitCode !== 0 || !/^\d+$/.test(text)) throw this.error(`reading the size of ${device}`, r, 'blockdev');
    return Number(text);
  }

  /**
   * Writes the device's dirty buffers out (and the device's write cache: fsync on a block device sends
   * a cache flush too, which BLKFLSBUF does not) before the device is removed. Done in this process
   * (no process spawned per device of an unstage), given timeouts.deviceReadMs; a flush that does not
   * finish by then fails, and while one is stuck in a kernel wait (it holds a thread-pool thread until
   * the device answers) later flushes run `blockdev --flushbufs` in their own process instead, so dead
   * devices never take the driver's thread pool.
   */
  async flushBuffers(device: string): Promise<void> {
    if (this.#stuckFlushes > 0) return this.flushInItsOwnProcess(device);
    const timeoutMs = this.cfg.timeouts?.deviceReadMs ?? DEFAULT_DEVICE_READ_MS;
    const flush = fsyncDevice(device);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), timeoutMs); });
    try {
      if ((await Promise.race([flush, late])) === 'late') {
        this.#stuckFlushes++;
        void flush.catch(() => undefined).finally(() => this.#stuckFlushes--);
        throw new Unavailable(`flushing ${device} did not finish within ${timeoutMs} ms (the device does not answer)`);
      }
    } catch (e) {
      if (e instanceof CsiError) throw e;
      throw new Internal(`flushing buffers of ${device} failed: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** `blockdev --flushbufs <device>` in its own process (bounded by its command timeout). */
  private async flushInItsOwnProcess(device: string): Promise<void> {
    const r = await this.runner.run('blockdev', ['--flushbufs', device], this.runOpts());
    if (r.exitCode !== 0) throw this.error(`flushing buffers of ${device}`, r, 'blockdev');
  }

  private runOpts(): { logger?: Logger } {
    return this.logger ? { logger: this.logger } : {};
  }

  private error(what: string, r: RunResult, tool: string): Internal {
    return new Internal(`${what} failed: ${lastLine(r)} (${tool} exit ${r.exitCode})`);
  }
}

async function fsyncDevice(device: string): Promise<'done'> {
  const handle = await fs.open(device, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  return 'done';
}

/** A failed read of a device that was to be found empty: never "empty", always an error saying why. */
function readFailure(device: string, e: unknown): CsiError {
  if (e instanceof CsiError) return e;
  if (errnoCode(e) === 'ENOENT') return new NotFound(`device ${device} does not exist`);
  return new Unavailable(`device ${device} cannot be read (${errnoCode(e) ?? (e as Error).message}); refusing to treat it as empty`);
}

/** The device's first and last EDGE_BYTES (the whole device when it is smaller), each checked for a non-zero byte. */
async function readEdges(device: string, sizeBytes: number): Promise<EdgeRegion[]> {
  const length = Math.min(EDGE_BYTES, sizeBytes);
  if (length === 0) throw new FailedPrecondition(`device ${device} has no data to read (size 0); refusing to treat it as empty`);
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(device, 'r');
    const zeros = Buffer.alloc(length);
    const found: EdgeRegion[] = [];
    for (const [region, offset] of [['first MiB', 0], ['last MiB', sizeBytes - length]] as const) {
      const buf = Buffer.alloc(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) throw new Unavailable(`device ${device} ended at byte ${offset + done}, before its size of ${sizeBytes} bytes; refusing to treat it as empty`);
        done += bytesRead;
      }
      if (!buf.equals(zeros)) found.push(region);
    }
    return found;
  } catch (e) {
    throw readFailure(device, e);
  } finally {
    await handle?.close();
  }
}

/** `stat -f` fields: total, free and available blocks, fundamental block size, total and free inodes. */
const STATFS_FORMAT = '%b %f %a %S %c %d';

/** Parses the `stat -f -c STATFS_FORMAT` line. */
export function parseStatfs(stdout: string, path: string): FsStats {
  const fields = stdout.trim().split(/\s+/);
  if (fields.length !== 6 || !fields.every((f) => /^\d+$/.test(f))) throw new Internal(`unexpected \`stat -f\` output for ${path}: ${JSON.stringify(stdout.slice(0, 200))}`);
  const [blocks, bfree, bavail, frsize, files, ffree] = fields.map((f) => BigInt(f)) as [bigint, bigint, bigint, bigint, bigint, bigint];
  return {
    totalBytes: Number(blocks * frsize),
    availableBytes: Number(bavail * frsize),
    usedBytes: Number((blocks - bfree) * frsize),
    totalInodes: Number(files),
    freeInodes: Number(ffree),
    usedInodes: Number(files - ffree),
  };
}

/**
 * The line that says what went wrong: e2fsprogs/xfsprogs print a version banner first and the error
 * last (`resize2fs 1.47.0 (5-Feb-2023)` … `resize2fs: Permission denied to resize filesystem`).
 */
export function lastLine(r: Pick<RunResult, 'stdout' | 'stderr' | 'exitCode'>): string {
  const pick = (text: string): string | undefined => text.split('\n').map((l) => l.trim()).filter(Boolean).pop();
  return pick(r.stderr) ?? pick(r.stdout) ?? `exit ${r.exitCode}`;
}
