import { execFileSync } from 'node:child_process';
import { promises as fsp, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultConfig, type CommandName } from '../../src/config.js';
import { FailedPrecondition, Internal, NotFound } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { ProcessRunner, safeArgv, type Arg, type CommandRunner, type RunResult } from '../../src/runner.js';
import { Filesystem, parseBlkidExport, probeFrom } from '../../src/node-host/filesystem.js';

const fixture = (name: string): string => readFileSync(new URL(`../fixtures/blkid/${name}`, import.meta.url), 'utf8');
const isRoot = process.getuid?.() === 0;
/** ext4 online resize (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE, which some sandboxes drop. */
const CAP_SYS_RESOURCE = 24;
const hasSysResource = (BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0'}`) >> BigInt(CAP_SYS_RESOURCE)) & 1n;
const MiB = 1024 * 1024;

describe('blkid export parsing', () => {
  it('an empty device (exit 2, no output) is the only "no data" case', () => {
    expect(probeFrom(parseBlkidExport(fixture('empty.exit2.txt')), false)).toMatchObject({ type: null, hasData: false, ambivalent: false });
  });

  it('reads ext4, xfs and btrfs signatures', () => {
    expect(probeFrom(parseBlkidExport(fixture('ext4.txt')), false)).toMatchObject({
      type: 'ext4', fsType: 'ext4', uuid: '73f366bf-98c9-4e17-8d2b-5a24a1552915', usage: 'filesystem', ptType: null, hasData: true,
    });
    expect(probeFrom(parseBlkidExport(fixture('xfs.txt')), false)).toMatchObject({ type: 'xfs', uuid: 'bbb3c04f-9fcb-4155-88a3-3f748936fcbd', hasData: true });
    expect(probeFrom(parseBlkidExport(fixture('btrfs.txt')), false)).toMatchObject({ type: 'btrfs', hasData: true });
    expect(parseBlkidExport(fixture('ext4.txt')).DEVNAME).toBe('/dev/loop0');
  });

  it('unescapes values (a label with a space)', () => {
    expect(probeFrom(parseBlkidExport(fixture('ext4-label-with-space.txt')), false)).toMatchObject({ type: 'ext4', label: 'my vol' });
  });

  it('counts a partition table as data, with a non-null type', () => {
    expect(probeFrom(parseBlkidExport(fixture('partition-table-dos.txt')), false)).toMatchObject({
      type: 'partition-table:dos', fsType: null, ptType: 'dos', hasData: true,
    });
  });

  it('counts an ambivalent result (exit 8, several signatures) as data', () => {
    expect(fixture('ambivalent.exit8.stdout.txt')).toBe('');
    expect(probeFrom(parseBlkidExport(fixture('ambivalent.exit8.stdout.txt')), true)).toMatchObject({ type: 'ambivalent', hasData: true, ambivalent: true });
  });

  it('counts an unnamed signature as data', () => {
    expect(probeFrom({ DEVNAME: '/dev/sdb', USAGE: 'raid' }, false)).toMatchObject({ type: 'unknown', hasData: true });
  });
});

class ScriptedRunner implements CommandRunner {
  readonly stats = { commands: 0, commandMs: 0, byName: {} };
  readonly calls: string[][] = [];
  constructor(private readonly results: Partial<RunResult>[]) {}
  async run(name: CommandName, args: Arg[]): Promise<RunResult> {
    const argv = [name, ...safeArgv(args)];
    this.calls.push(argv);
    const r = this.results.shift() ?? {};
    return { argv, exitCode: r.exitCode ?? 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '', durationMs: 1 };
  }
}

describe('Filesystem commands (scripted)', () => {
  const cfg = { node: { mkfsOptions: defaultConfig().node.mkfsOptions } };

  it('runs mkfs.<type> with the configured options, then extra ones, then the device', async () => {
    const runner = new ScriptedRunner([]);
    const fs = new Filesystem(runner, cfg);
    await fs.mkfs('/dev/sdb', 'ext4');
    await fs.mkfs('/dev/sdb', 'xfs', ['-L', 'data']);
    await fs.mkfs('/dev/sdb', 'btrfs');
    expect(runner.calls).toEqual([
      ['mkfs.ext4', '-F', '-m0', '/dev/sdb'],
      ['mkfs.xfs', '-f', '-L', 'data', '/dev/sdb'],
      ['mkfs.btrfs', '-f', '/dev/sdb'],
    ]);
    await expect(fs.mkfs('/dev/sdb', 'ntfs' as never)).rejects.toThrow(/not supported/);
  });

  it('grows each filesystem with its own tool', async () => {
    const runner = new ScriptedRunner([]);
    const fs = new Filesystem(runner, cfg);
    await fs.resize('/dev/sdb', '/stage', 'ext4');
    await fs.resize('/dev/sdb', '/stage', 'ext3');
    await fs.resize('/dev/sdb', '/stage', 'xfs');
    await fs.resize('/dev/sdb', '/stage', 'btrfs');
    expect(runner.calls).toEqual([
      ['resize2fs', '/dev/sdb'],
      ['resize2fs', '/dev/sdb'],
      ['xfs_growfs', '-d', '/stage'],
      ['btrfs', 'filesystem', 'resize', 'max', '/stage'],
    ]);
  });

  it('reads the device size and turns tool failures into INTERNAL with the tool\'s message', async () => {
    const runner = new ScriptedRunner([
      { stdout: '67108864\n' },
      { exitCode: 1, stderr: 'blockdev: cannot open /dev/sdz: No such file or directory\n' },
      { exitCode: 1, stderr: 'resize2fs 1.47.0 (5-Feb-2023)\nresize2fs: Device or resource busy while trying to open /dev/sdb\n' },
    ]);
    const fs = new Filesystem(runner, cfg);
    expect(await fs.blockDeviceSize('/dev/sdb')).toBe(67108864);
    await expect(fs.blockDeviceSize('/dev/sdz')).rejects.toThrow('reading the size of /dev/sdz failed: blockdev: cannot open /dev/sdz: No such file or directory (blockdev exit 1)');
    await expect(fs.resize('/dev/sdb', '/stage', 'ext4')).rejects.toThrow(Internal);
    expect(runner.calls[0]).toEqual(['blockdev', '--getsize64', '/dev/sdb']);
  });
});

describe.skipIf(!isRoot)('Filesystem on a real loop device (root)', () => {
  let dir: string;
  let image: string;
  let loop: string;
  let mnt: string;
  let fs: Filesystem;
  const sh = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8' });
  const zeroStart = async (): Promise<void> => {
    const h = await fsp.open(loop, 'r+');
    try {
      await h.write(Buffer.alloc(MiB), 0, MiB, 0);
      await h.sync();
    } finally {
      await h.close();
    }
    sh('wipefs', '-a', '-q', loop);
  };
  const growTo = async (bytes: number): Promise<void> => {
    await fsp.truncate(image, bytes);
    sh('losetup', '-c', loop);
  };

  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'host-fs-'));
    image = join(dir, 'disk.img');
    mnt = join(dir, 'mnt');
    await fsp.mkdir(mnt);
    await fsp.truncate(await fsp.open(image, 'w').then(async (h) => (await h.close(), image)), 320 * MiB);
    loop = sh('losetup', '-f', '--show', image).trim();
    const config = defaultConfig();
    fs = new Filesystem(new ProcessRunner(config.commands, [], createLogger('silent')), config);
  });

  afterAll(async () => {
    try {
      sh('umount', mnt);
    } catch {
      // not mounted
    }
    if (loop) sh('losetup', '-d', loop);
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('probes an empty device as empty and a partition table as data', async () => {
    expect(await fs.probe(loop)).toMatchObject({ type: null, hasData: false });
    // an MBR with one partition entry, as fdisk would write it
    const mbr = Buffer.alloc(512);
    Buffer.from([0x00, 0x20, 0x21, 0x00, 0x83, 0x20, 0x21, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00]).copy(mbr, 446);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    const h = await fsp.open(loop, 'r+');
    await h.write(mbr, 0, 512, 0);
    await h.close();
    expect(await fs.probe(loop)).toMatchObject({ type: 'partition-table:dos', ptType: 'dos', hasData: true });
    await zeroStart();
    expect(await fs.probe(loop)).toMatchObject({ type: null, hasData: false });
  });

  it('refuses to call a missing or zero-sized device empty', async () => {
    await expect(fs.probe(join(dir, 'nonexistent'))).rejects.toThrow(NotFound);
    const zero = join(dir, 'zero.img');
    await fsp.writeFile(zero, '');
    await expect(fs.probe(zero)).rejects.toThrow(FailedPrecondition);
  });

  it('reads the size; a flush writes what was written through the page cache down to the backing file', async () => {
    expect(await fs.blockDeviceSize(loop)).toBe(320 * MiB);
    const marker = Buffer.from(`flushed ${process.pid} ${Date.now()}`);
    const offset = 7 * MiB;
    const h = await fsp.open(loop, 'r+');
    await h.write(marker, 0, marker.length, offset); // buffered: in the loop device's page cache only
    await h.close();
    await fs.flushBuffers(loop);
    const backing = await fsp.open(image, 'r');
    const back = Buffer.alloc(marker.length);
    await backing.read(back, 0, marker.length, offset);
    await backing.close();
    expect(back.toString()).toBe(marker.toString());
  });

  it('a flush stuck in the kernel fails by its deadline, and later flushes run blockdev in their own process meanwhile', async () => {
    // opening a FIFO with no writer blocks its thread-pool thread, as a flush of a dead device does
    const stuck = join(dir, 'stuck-device');
    sh('mkfifo', stuck);
    const calls: string[][] = [];
    const config = defaultConfig();
    const real = new ProcessRunner(config.commands, [], createLogger('silent'));
    const recording: CommandRunner = { stats: real.stats, run: (name, args, opts) => { calls.push([name, ...args.map(String)]); return real.run(name, args, opts); } };
    const quick = new Filesystem(recording, { ...config, timeouts: { ...config.timeouts, deviceReadMs: 200 } });
    await expect(quick.flushBuffers(stuck)).rejects.toThrow(/did not finish within 200 ms/);
    await quick.flushBuffers(loop);
    expect(calls).toEqual([['blockdev', '--flushbufs', loop]]);
    // the stuck open returns once a writer appears; from then on flushes are in-process again
    const writer = await fsp.open(stuck, 'w');
    await writer.close();
    await new Promise((r) => setTimeout(r, 50));
    await quick.flushBuffers(loop);
    expect(calls).toHaveLength(1);
  });

  it.each([
    ['ext4', 400],
    ['xfs', 480],
    ['btrfs', 560],
  ] as const)('formats %s, reports usage, and grows it online to %i MiB', async (fsType, grownMiB) => {
    await zeroStart();
    await fs.mkfs(loop, fsType);
    const probed = await fs.probe(loop);
    expect(probed).toMatchObject({ type: fsType, hasData: true });
    expect(probed.uuid).toMatch(/^[0-9a-f-]{36}$/);
    sh('mount', '-t', fsType, loop, mnt);
    try {
      const deviceBytes = await fs.blockDeviceSize(loop);
      const before = await fs.statfs(mnt);
      expect(before.totalBytes).toBeGreaterThan(200 * MiB);
      expect(before.totalBytes).toBeLessThanOrEqual(deviceBytes);
      expect(before.availableBytes).toBeLessThanOrEqual(before.totalBytes);
      expect(before.usedBytes).toBeGreaterThanOrEqual(0);
      await fsp.writeFile(join(mnt, 'payload'), Buffer.alloc(4 * MiB, 1));
      sh('sync', '-f', mnt); // btrfs accounts space at transaction commit
      const written = await fs.statfs(mnt);
      expect(written.usedBytes).toBeGreaterThan(before.usedBytes);
      if (fsType !== 'btrfs') expect(written.usedInodes).toBeGreaterThan(0); // btrfs reports no inode counts
      await growTo(grownMiB * MiB);
      if (fsType === 'ext4' && !hasSysResource) {
        await expect(fs.resize(loop, mnt, fsType)).rejects.toThrow(`growing the ext4 filesystem on ${loop} (mounted at ${mnt}) failed: resize2fs: Permission denied to resize filesystem (resize2fs exit 1)`);
        return;
      }
      await fs.resize(loop, mnt, fsType);
      const after = await fs.statfs(mnt);
      expect(after.totalBytes).toBeGreaterThan(before.totalBytes + 40 * MiB);
    } finally {
      sh('umount', mnt);
    }
  });

  it('reports mkfs failures with the tool\'s message', async () => {
    await expect(fs.mkfs(join(dir, 'nonexistent'), 'ext4')).rejects.toThrow(/^creating a ext4 filesystem on .*nonexistent failed: .*\(mkfs\.ext4 exit 1\)$/);
  });
});
