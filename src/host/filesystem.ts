// Filesystems on block devices: probe (never format a device that holds anything), mkfs, online grow,
// usage statistics, device size and buffer flush. Every tool runs through the CommandRunner.
import { promises as fs } from 'node:fs';
import type { NodeConfig } from '../config.js';
import { errnoCode, FailedPrecondition, Internal, NotFound, Unavailable } from '../errors.js';
import type { Logger } from '../log.js';
import type { CommandRunner, RunResult } from '../runner.js';
import { parseFsType, type FsType } from './validate.js';

/** `blkid -p`: 0 = something found, 2 = nothing found (also for unreadable/empty devices), 8 = several signatures. */
const BLKID_FOUND = 0;
const BLKID_NOTHING = 2;
const BLKID_AMBIVALENT = 8;
/** Enough to tell an unreadable or zero-sized device from an empty one. */
const READ_CHECK_BYTES = 4096;

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
}

export class Filesystem {
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
      if (e instanceof FailedPrecondition) throw e;
      if (errnoCode(e) === 'ENOENT') throw new NotFound(`device ${device} does not exist`);
      throw new Unavailable(`device ${device} cannot be read (${errnoCode(e) ?? (e as Error).message}); refusing to treat it as empty`);
    } finally {
      await handle?.close();
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

  /** Capacity and inode usage of the filesystem holding `path`. */
  async statfs(path: string): Promise<FsStats> {
    const s = await fs.statfs(path, { bigint: true });
    const total = s.blocks * s.bsize;
    return {
      totalBytes: Number(total),
      availableBytes: Number(s.bavail * s.bsize),
      usedBytes: Number((s.blocks - s.bfree) * s.bsize),
      totalInodes: Number(s.files),
      freeInodes: Number(s.ffree),
      usedInodes: Number(s.files - s.ffree),
    };
  }

  /** `blockdev --getsize64 <device>` in bytes. */
  async blockDeviceSize(device: string): Promise<number> {
    const r = await this.runner.run('blockdev', ['--getsize64', device], this.runOpts());
    const text = r.stdout.trim();
    if (r.exitCode !== 0 || !/^\d+$/.test(text)) throw this.error(`reading the size of ${device}`, r, 'blockdev');
    return Number(text);
  }

  /** `blockdev --flushbufs <device>`: writes dirty buffers out before a device is removed. */
  async flushBuffers(device: string): Promise<void> {
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

/**
 * The line that says what went wrong: e2fsprogs/xfsprogs print a version banner first and the error
 * last (`resize2fs 1.47.0 (5-Feb-2023)` … `resize2fs: Permission denied to resize filesystem`).
 */
export function lastLine(r: Pick<RunResult, 'stdout' | 'stderr' | 'exitCode'>): string {
  const pick = (text: string): string | undefined => text.split('\n').map((l) => l.trim()).filter(Boolean).pop();
  return pick(r.stderr) ?? pick(r.stdout) ?? `exit ${r.exitCode}`;
}
