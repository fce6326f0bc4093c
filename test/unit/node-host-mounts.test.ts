import { promises as fsp, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { defaultConfig, type CommandName } from '../../src/config.js';
import { Internal } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { ProcessRunner, safeArgv, type Arg, type CommandRunner, type RunResult } from '../../src/runner.js';
import { Mounts, parseMountInfo, unescapeMountField } from '../../src/node-host/mounts.js';

const fixture = (name: string): string => readFileSync(new URL(`../fixtures/mountinfo/${name}`, import.meta.url), 'utf8');
const isRoot = process.getuid?.() === 0;

describe('parseMountInfo', () => {
  it('parses the lines captured from real mounts (binds share major:minor)', () => {
    expect(parseMountInfo(fixture('real-outputs-binds.txt'))).toEqual([
      { mountId: 42, parentId: 27, major: 7, minor: 0, root: '/', mountPoint: '/srv/lab/m', mountOptions: ['rw', 'relatime'], optionalFields: [], fsType: 'ext4', source: '/dev/loop0', superOptions: ['rw'] },
      { mountId: 43, parentId: 27, major: 7, minor: 0, root: '/', mountPoint: '/srv/lab/b', mountOptions: ['rw', 'relatime'], optionalFields: [], fsType: 'ext4', source: '/dev/loop0', superOptions: ['rw'] },
    ]);
  });

  it('decodes octal escapes (space, tab, backslash) and reads optional fields up to "-"', () => {
    const entries = parseMountInfo(fixture('escapes-and-propagation.txt'));
    expect(entries.map((e) => e.mountPoint)).toEqual(['/tmp/cap/m with space', '/tmp/cap/tab\tdir', '/tmp/cap/back\\slash', '/tmp/cap/sh', '/tmp/cap/sl']);
    expect(entries[0]).toMatchObject({ source: 'src dev', fsType: 'tmpfs', superOptions: ['rw', 'size=1024k'] });
    expect(entries[3]!.optionalFields).toEqual(['shared:1']);
    expect(entries[4]).toMatchObject({ optionalFields: ['master:1'], fsType: 'tmpfs', source: 'tmpfs' });
    expect(unescapeMountField('a\\012b')).toBe('a\nb');
  });

  it('handles proc(5)\'s example with a non-root bind and skips garbage', () => {
    const [e] = parseMountInfo('36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\nnot a mountinfo line\n\n');
    expect(e).toMatchObject({ mountId: 36, parentId: 35, major: 98, minor: 0, root: '/mnt1', mountPoint: '/mnt2', optionalFields: ['master:1'], fsType: 'ext3', source: '/dev/root', superOptions: ['rw', 'errors=continue'] });
    expect(parseMountInfo('not a mountinfo line\n')).toEqual([]);
  });
});

/** A mount table in a temp file and a runner whose `umount` edits it (or fails) as scripted. */
class TableRunner implements CommandRunner {
  readonly stats = { commands: 0, commandMs: 0, byName: {} };
  readonly calls: string[][] = [];
  constructor(private readonly table: string, private readonly script: ((args: string[]) => Promise<Partial<RunResult>>)[]) {}
  async run(name: CommandName, args: Arg[]): Promise<RunResult> {
    const argv = [name, ...safeArgv(args)];
    this.calls.push(argv);
    const step = this.script.shift() ?? (async (): Promise<Partial<RunResult>> => ({}));
    const r = await step(argv);
    return { argv, exitCode: r.exitCode ?? 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '', durationMs: 1 };
  }
  async dropLast(mountPoint: string): Promise<void> {
    const lines = (await fsp.readFile(this.table, 'utf8')).split('\n').filter(Boolean);
    const idx = lines.map((l) => l.split(' ')[4]).lastIndexOf(mountPoint);
    lines.splice(idx, 1);
    await fsp.writeFile(this.table, lines.join('\n') + '\n');
  }
}

describe('Mounts with a scripted mount table', () => {
  let dir: string;
  let table: string;
  let target: string;
  const cfg = (retries = 2) => ({ host: { mountInfoPath: table }, timeouts: { unmountRetries: retries, unmountRetryDelayMs: 5 } });

  beforeAll(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'host-mounts-'));
    table = join(dir, 'mountinfo');
    target = join(await fsp.realpath(dir), 'staging dir');
    await fsp.mkdir(target);
  });
  afterAll(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  const mounted = (n: number): string =>
    Array.from({ length: n }, (_, i) => `${50 + i} 27 7:0 / ${target.replace(/ /g, '\\040')} rw,relatime - ext4 /dev/loop0 rw`).join('\n') + '\n';

  it('finds a mount point from mountinfo, escaped path and all', async () => {
    await fsp.writeFile(table, mounted(1));
    const m = new Mounts(new TableRunner(table, []), cfg());
    expect(await m.isMountPoint(target)).toBe(true);
    expect(await m.isMountPoint(dir)).toBe(false);
    expect(await m.mountState(target)).toMatchObject({ mounted: true, stale: false, entry: { source: '/dev/loop0' } });
    expect(await m.mountState(dir)).toEqual({ mounted: false });
  });

  it('matches the mount point field only, with the kernel escaping of tab, newline and backslash', async () => {
    const odd = join(dir, 'a\tb\\c\nd');
    await fsp.writeFile(table, [
      `60 27 7:0 / ${join(dir, 'a\\011b\\134c\\012d')} rw - ext4 /dev/loop0 rw`,
      // the path as another mount's root and as a source: not a mount at it
      `61 27 7:1 ${target.replace(/ /g, '\\040')} /elsewhere rw - ext4 ${target.replace(/ /g, '\\040')} rw`,
    ].join('\n') + '\n');
    const m = new Mounts(new TableRunner(table, []), cfg());
    expect((await m.mountsAt(odd)).map((e) => e.mountId)).toEqual([60]);
    expect(await m.mountsAt(target)).toEqual([]);
  });

  it('reports a mount whose stat fails with ENOTCONN/EIO/ESTALE as mounted and stale', async () => {
    await fsp.writeFile(table, mounted(1));
    const m = new Mounts(new TableRunner(table, []), cfg());
    for (const code of ['ENOTCONN', 'EIO', 'ESTALE']) {
      const spy = vi.spyOn(fsp, 'stat').mockRejectedValueOnce(Object.assign(new Error(code), { code }));
      expect(await m.mountState(target)).toMatchObject({ mounted: true, stale: true });
      expect(await m.isMountPoint(target)).toBe(true);
      spy.mockRestore();
    }
  });

  it('unmounts every stacked mount and counts them; nothing mounted is success without a command', async () => {
    await fsp.writeFile(table, mounted(2));
    const runner: TableRunner = new TableRunner(table, [
      async () => (await runner.dropLast(target), {}),
      async () => (await runner.dropLast(target), {}),
    ]);
    const m = new Mounts(runner, cfg());
    expect(await m.unmount(target)).toBe(2);
    expect(runner.calls).toEqual([['umount', target], ['umount', target]]);
    expect(await m.unmount(target)).toBe(0);
    expect(runner.calls).toHaveLength(2);
  });

  it('retries "target is busy" and gives up with the tool\'s message after the configured retries', async () => {
    const busy = { exitCode: 32, stderr: readFileSync(new URL('../fixtures/mountinfo/umount-busy.exit32.stderr.txt', import.meta.url), 'utf8') };
    await fsp.writeFile(table, mounted(1));
    const runner: TableRunner = new TableRunner(table, [async () => busy, async () => (await runner.dropLast(target), {})]);
    expect(await new Mounts(runner, cfg()).unmount(target)).toBe(1);

    await fsp.writeFile(table, mounted(1));
    const stuck = new TableRunner(table, [async () => busy, async () => busy, async () => busy, async () => busy]);
    const err = await new Mounts(stuck, cfg(2)).unmount(target).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Internal);
    expect((err as Error).message).toBe(`unmounting ${target} failed: /tmp/cap/busy: target is busy. (umount exit 32)`);
    expect(stuck.calls).toHaveLength(3);
  });

  it('treats "not mounted" from umount as done when the table agrees, and never loops when it does not', async () => {
    const notMounted = { exitCode: 32, stderr: readFileSync(new URL('../fixtures/mountinfo/umount-not-mounted.exit32.stderr.txt', import.meta.url), 'utf8') };
    await fsp.writeFile(table, mounted(1));
    // another unmount removed it between our mountinfo read and our umount
    const raced: TableRunner = new TableRunner(table, [async () => (await raced.dropLast(target), notMounted)]);
    expect(await new Mounts(raced, cfg()).unmount(target)).toBe(0);

    await fsp.writeFile(table, mounted(1));
    const disagree = new TableRunner(table, Array.from({ length: 10 }, () => async () => notMounted));
    await expect(new Mounts(disagree, cfg(2)).unmount(target)).rejects.toThrow(/did not finish: 1 mount\(s\) still listed/);
    expect(disagree.calls.length).toBeLessThanOrEqual(4);
  });

  it('builds mount and bind argv, remounting read-only binds and undoing the bind if that fails', async () => {
    const runner = new TableRunner(table, [async () => ({}), async () => ({}), async () => ({}), async () => ({}), async () => ({}), async () => ({ exitCode: 32, stderr: 'mount: /t: permission denied.\n' }), async () => ({})]);
    const m = new Mounts(runner, cfg());
    await m.mount('/dev/sdb', '/staging', 'ext4', ['noatime', '_netdev']);
    await m.mount('/dev/sdb', '/staging', 'xfs');
    await m.bindMount('/staging', '/target', { readonly: true, options: ['nosuid'] });
    await expect(m.bindMount('/staging', '/t', { readonly: true })).rejects.toThrow('remounting /t ro failed: /t: permission denied. (mount exit 32)');
    expect(runner.calls).toEqual([
      ['mount', '-t', 'ext4', '-o', 'noatime,_netdev', '/dev/sdb', '/staging'],
      ['mount', '-t', 'xfs', '/dev/sdb', '/staging'],
      ['mount', '--bind', '/staging', '/target'],
      ['mount', '-o', 'remount,bind,ro,nosuid', '/target'],
      ['mount', '--bind', '/staging', '/t'],
      ['mount', '-o', 'remount,bind,ro', '/t'],
      ['umount', '/t'],
    ]);
  });
});

describe.skipIf(!isRoot)('Mounts on the real host (root)', () => {
  let dir: string;
  let mounts: Mounts;

  beforeAll(async () => {
    dir = await fsp.realpath(await fsp.mkdtemp(join(tmpdir(), 'host-mounts-real-')));
    const config = defaultConfig();
    const runner = new ProcessRunner(config.commands, [], createLogger('silent'));
    mounts = new Mounts(runner, { host: config.host, timeouts: { unmountRetries: 3, unmountRetryDelayMs: 20 } });
  });

  afterAll(async () => {
    for (const p of ['ro bind', 'src']) await mounts.unmount(join(dir, p)).catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('mounts, binds read-only (really read-only), and unmounts', async () => {
    const src = join(dir, 'src');
    const ro = join(dir, 'ro bind');
    await fsp.mkdir(src);
    await fsp.mkdir(ro);
    await mounts.mount('tmpfs', src, 'tmpfs', ['size=1m']);
    await fsp.writeFile(join(src, 'file'), 'data');
    await mounts.bindMount(src, ro, { readonly: true });
    expect(await fsp.readFile(join(ro, 'file'), 'utf8')).toBe('data');
    await expect(fsp.writeFile(join(ro, 'other'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    const [entry] = await mounts.mountsAt(ro);
    expect(entry).toMatchObject({ mountPoint: ro, fsType: 'tmpfs' });
    expect(entry!.mountOptions).toContain('ro');
    expect(await mounts.unmount(ro)).toBe(1);
    expect(await mounts.isMountPoint(ro)).toBe(false);
  });

  it('retries while busy and succeeds once the last open file is closed', async () => {
    const src = join(dir, 'src');
    const handle = await fsp.open(join(src, 'file'), 'r');
    setTimeout(() => void handle.close(), 30);
    expect(await mounts.unmount(src)).toBe(1);
    expect(await mounts.isMountPoint(src)).toBe(false);
  });

  it('fails with the tool\'s message when mounting what is not there', async () => {
    const t = join(dir, 'src');
    await expect(mounts.mount(join(dir, 'nonexistent.img'), t, 'ext4')).rejects.toThrow(/^mounting .*nonexistent\.img \(ext4\) at .* failed: .*\(mount exit 32\)$/);
  });
});
