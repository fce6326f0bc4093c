// A real filesystem on a real loop device for the tgt backend's pool: xfs with reflinks (snapshots by
// FICLONE) or ext4 (no reflinks: the byte-copy path). Made with mkfs and mounted; destroy() unmounts
// and detaches it.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const COMMAND_TIMEOUT_MS = 60_000;
const DEFAULT_SIZE = '1G';

export type PoolFsKind = 'xfs-reflink' | 'ext4';

export interface PoolFs {
  /** the mounted filesystem's root (the pool directory goes under it) */
  mountPoint: string;
  device: string;
  destroy(): Promise<void>;
}

const MKFS: Record<PoolFsKind, string[]> = {
  'xfs-reflink': ['mkfs.xfs', '-q', '-f', '-m', 'reflink=1'],
  ext4: ['mkfs.ext4', '-q', '-F'],
};

export async function makePoolFs(kind: PoolFsKind, size = DEFAULT_SIZE): Promise<PoolFs> {
  const dir = mkdtempSync(`/tmp/iscsi-csi-poolfs-${kind}-`);
  const image = join(dir, 'fs.img');
  const mountPoint = join(dir, 'mnt');
  mkdirSync(mountPoint);
  const opts = { timeout: COMMAND_TIMEOUT_MS };
  await run('truncate', ['-s', size, image], opts);
  const device = (await run('losetup', ['--find', '--show', image], opts)).stdout.trim();
  try {
    const [mkfs, ...args] = MKFS[kind];
    await run(mkfs!, [...args, device], opts);
    await run('mount', [device, mountPoint], opts);
  } catch (e) {
    await run('losetup', ['-d', device], opts).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    mountPoint,
    device,
    async destroy() {
      await run('umount', [mountPoint], opts).catch(() => run('umount', ['-l', mountPoint], opts));
      await run('losetup', ['-d', device], opts).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
