// The simulated iSCSI host: a root R holding a simulated sysfs, /dev, /etc/iscsi and open-iscsi DB,
// a simulated-kernel process that owns them (kernel-main.ts), fake iscsiadm / multipath /
// multipathd executables under R/bin, and a real tgtd. Everything else the driver uses is real:
// loop devices, mknod'ed device nodes, mkfs, blkid, mount.
//
//   const host = await SimulatedHost.create({ multipath: false });
//   const t = await host.createTarget('iqn.2026-11.io.example:t1', [{ lun: 1, sizeBytes: 64 << 20 }]);
//   … run the driver with host.driverConfig() …
//   await host.destroy();   // logs out, unmounts, detaches loops, stops its tgtd, removes R
//
// Call the fake commands asynchronously (host.run, execa, execFile): the simulated kernel is another
// process, but a synchronous call from the process that created the host still works.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync, chmodSync, existsSync, symlinkSync } from 'node:fs';
import { mkdir, rename, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandConfig, HostConfig } from '../../src/config.js';
import { defaultConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { ProcessRunner } from '../../src/runner.js';
import { parseTgtTargets, Tgtadm } from '../../src/controller/tgt/tgtadm.js';
import { startTgtd, type TgtDaemon } from './tgtd.js';
import { simPaths, type SimPaths } from './paths.js';
import { DEFAULT_ISCSID_CONF } from './records.js';
import type { Faults } from './faults.js';
import type { SessionSummary } from './kernel.js';
import { readMountInfo, type MountEntry } from './mountinfo.js';
import { request, TOOLS, type StateReply, type Tool } from './protocol.js';
import { execTool } from './sysfs.js';

export type { Faults } from './faults.js';
export type { SessionSummary } from './kernel.js';

const KERNEL_START_TIMEOUT_MS = 15_000;
const KERNEL_STOP_TIMEOUT_MS = 30_000;
const SIM_COMMAND_TIMEOUT_MS = 30_000;
/** a cold `cc -O2` of sim-cli.c takes ~0.2 s; this only bounds a wedged compiler */
const NATIVE_CLIENT_BUILD_TIMEOUT_MS = 60_000;

/** Which client answers for R/bin/*: the native sim-cli.bin (ms to start) or node sim-cli.js (~80 ms). */
export type SimClient = 'native' | 'node';

export interface SimulatedHostOptions {
  /** absolute root; default a fresh /tmp/iscsi-sim-XXXXXX */
  root?: string;
  multipath?: boolean;
  /** use this tgtd (not stopped by destroy); default: start a private one */
  tgtd?: TgtDaemon;
  /** simulated kernel's log level on stderr (default $SIM_LOG or warn) */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** client behind R/bin/* (default: $SIM_CLI if 'node', else native; node when it cannot be built) */
  client?: SimClient;
}

export interface LunSpec { lun: number; sizeBytes: number }
export interface ChapSpec { username: string; password: string; usernameIn?: string; passwordIn?: string }
export interface CreatedTarget { tid: number; iqn: string; luns: { lun: number; path: string; sizeBytes: number }[] }

export interface SimDriverConfig {
  host: HostConfig;
  commands: Record<Tool, CommandConfig>;
  nodeId: string;
}

export interface ToolResult { code: number; stdout: string; stderr: string }

/** dist/ of this checkout, whether this module runs from test/sim/*.ts (vitest) or dist/test/sim/*.js. */
export function distDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const marker = `${'/'}dist/test/sim`;
  return here.endsWith(marker) ? here.slice(0, -'/test/sim'.length) : resolve(here, '../../dist');
}

/** The checkout holding dist/ (where test/sim/sim-cli.c lives). */
export function repoDir(): string {
  return dirname(distDir());
}

let nativeClient: Promise<string | undefined> | undefined;

/**
 * The native fake-command client, dist/test/sim/sim-cli.bin, compiled from test/sim/sim-cli.c when
 * missing or older than the source. Resolves undefined (after one warning on stderr) when it cannot
 * be built; the fake commands then run the Node client.
 */
export function nativeClientBinary(): Promise<string | undefined> {
  nativeClient ??= buildNativeClient().catch((e: Error) => {
    const why = e.message.trim().split('\n').slice(0, 6).join('\n  ');
    process.stderr.write(`simulated host: cannot build the native fake-command client, using the Node client (~80 ms per call):\n  ${why}\n`);
    return undefined;
  });
  return nativeClient;
}

async function buildNativeClient(): Promise<string> {
  const src = join(repoDir(), 'test/sim/sim-cli.c');
  const bin = join(distDir(), 'test/sim/sim-cli.bin');
  const srcTime = (await stat(src)).mtimeMs;
  const binTime = await stat(bin).then((s) => s.mtimeMs, () => undefined);
  if (binTime !== undefined && binTime >= srcTime) return bin;
  await mkdir(dirname(bin), { recursive: true });
  // compile under a private name and rename: a concurrent host never runs a half-written binary
  const tmp = `${bin}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    await new Promise<void>((res, rej) => {
      execFile('cc', ['-O2', '-Wall', '-o', tmp, src], { timeout: NATIVE_CLIENT_BUILD_TIMEOUT_MS, killSignal: 'SIGKILL' }, (err, _stdout, stderr) => {
        if (!err) res();
        else rej(new Error(`cc -O2 -Wall -o ${tmp} ${src}: ${err.killed ? `timed out after ${NATIVE_CLIENT_BUILD_TIMEOUT_MS} ms` : (stderr || err.message)}`));
      });
    });
    await rename(tmp, bin);
  } finally {
    await rm(tmp, { force: true });
  }
  return bin;
}

/** One word for /bin/sh, whatever it holds. */
function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * R/bin/<tool>: exec the native client (else the Node one) with the host's root; the tool's arguments
 * follow verbatim. The native client is exec'd as R/libexec/<tool> (a link to it), so the process is
 * named like the tool in /proc (`comm`), as the real one: the driver looks for live iscsiadm there.
 */
function fakeCommandScript(nativeBin: string | undefined, paths: SimPaths, tool: Tool): string {
  const argv = nativeBin ? [join(paths.libexec, tool)] : [process.execPath, join(distDir(), 'test/sim/sim-cli.js')];
  return `#!/bin/sh\nexec ${[...argv, '--sim-root', paths.root, '--tool', tool].map(shQuote).join(' ')} "$@"\n`;
}

export class SimulatedHost {
  readonly paths: SimPaths;
  private destroyed = false;

  private constructor(
    readonly root: string,
    readonly initiatorName: string,
    readonly tgtd: TgtDaemon,
    readonly multipath: boolean,
    /** the client behind R/bin/* */
    readonly client: SimClient,
    private readonly ownsTgtd: boolean,
    private readonly kernel: ChildProcess,
  ) {
    this.paths = simPaths(root);
  }

  static async create(opts: SimulatedHostOptions = {}): Promise<SimulatedHost> {
    const root = opts.root ?? mkdtempSync('/tmp/iscsi-sim-');
    if (!root.startsWith('/') || /['\s]/.test(root)) throw new Error(`simulated host root must be an absolute path without quotes or spaces: ${root}`);
    const paths = simPaths(root);
    // R/run/lock as on a real host; open-iscsi makes its own iscsi/ in there on first use
    for (const d of [paths.etcIscsi, paths.nodes, paths.sendTargets, paths.ifaces, paths.run, dirname(paths.lockDir), paths.bin, paths.libexec, paths.backing, join(paths.db, 'static'), join(paths.db, 'isns'), join(paths.db, 'fw')]) {
      mkdirSync(d, { recursive: true });
    }
    const initiatorName = `iqn.1993-08.org.debian:01:${randomBytes(6).toString('hex')}`;
    writeFileSync(paths.initiatorNameFile, [
      '## DO NOT EDIT OR REMOVE THIS FILE!',
      '## If you remove this file, the iSCSI daemon will not start.',
      '## If you change the InitiatorName, existing access control lists',
      '## may reject this initiator.  The InitiatorName must be unique',
      '## for each iSCSI initiator.  Do NOT duplicate iSCSI InitiatorNames.',
      `InitiatorName=${initiatorName}`, '',
    ].join('\n'));
    writeFileSync(paths.iscsidConf, DEFAULT_ISCSID_CONF);
    writeFileSync(paths.faults, '{}\n');
    const wanted: SimClient = opts.client ?? (process.env.SIM_CLI === 'node' ? 'node' : 'native');
    const nativeBin = wanted === 'native' ? await nativeClientBinary() : undefined;
    const client: SimClient = nativeBin ? 'native' : 'node';
    for (const tool of TOOLS) {
      const file = join(paths.bin, tool);
      if (nativeBin) symlinkSync(nativeBin, join(paths.libexec, tool));
      writeFileSync(file, fakeCommandScript(nativeBin, paths, tool));
      chmodSync(file, 0o755);
    }

    const tgtd = opts.tgtd ?? (await startTgtd());
    let kernel: ChildProcess | undefined;
    try {
      kernel = await startKernel(root, !!opts.multipath, tgtd.controlPort, opts.logLevel);
    } catch (e) {
      if (!opts.tgtd) await tgtd.stop();
      rmSync(root, { recursive: true, force: true });
      throw e;
    }
    return new SimulatedHost(root, initiatorName, tgtd, !!opts.multipath, client, !opts.tgtd, kernel);
  }

  /** pid of the simulated kernel process (the benchmark counts its CPU time) */
  get kernelPid(): number {
    return this.kernel.pid ?? 0;
  }

  /** portals of the host's tgtd ("127.0.0.1:PORT") */
  get portals(): string[] {
    return [this.tgtd.portal];
  }

  bin(tool: Tool): string {
    return join(this.paths.bin, tool);
  }

  /** Host roots, fake commands and node id to put into the driver's Config. */
  driverConfig(): SimDriverConfig {
    const commands = Object.fromEntries(TOOLS.map((t) => [t, { argv: [this.bin(t)], timeoutMs: SIM_COMMAND_TIMEOUT_MS }])) as Record<Tool, CommandConfig>;
    return {
      host: {
        sysRoot: this.paths.sys,
        devRoot: this.paths.dev,
        mountInfoPath: '/proc/self/mountinfo',
        initiatorNameFile: this.paths.initiatorNameFile,
        udevDataDir: this.paths.udevData,
        iscsiLockDir: this.paths.lockDir,
      },
      commands,
      nodeId: this.initiatorName,
    };
  }

  /** Runs a fake command (R/bin/<tool>) and returns its exit code and output. */
  run(tool: Tool, args: string[], timeoutMs = SIM_COMMAND_TIMEOUT_MS): Promise<ToolResult> {
    return new Promise((res) => {
      execFile(this.bin(tool), args, { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
        const raw = err ? (err as { code?: unknown }).code : 0;
        res({ code: typeof raw === 'number' ? raw : -1, stdout, stderr });
      });
    });
  }

  /** Writes R/faults.json (atomically) and lets the kernel apply session-level faults now. */
  async setFaults(faults: Faults): Promise<void> {
    const tmp = `${this.paths.faults}.tmp`;
    await writeFile(tmp, JSON.stringify(faults, null, 2) + '\n');
    await rename(tmp, this.paths.faults);
    await request(this.paths.kernelSocket, { admin: 'faults' });
  }

  async state(): Promise<StateReply> {
    return request<StateReply>(this.paths.kernelSocket, { admin: 'sessions' });
  }

  async sessions(): Promise<SessionSummary[]> {
    return (await this.state()).sessions;
  }

  /** Runs `tgtadm -C <port> --lld iscsi …` on the host's tgtd. */
  tgtadm(args: string[]): Promise<string> {
    return this.tgtd.tgtadm(args);
  }

  /**
   * A tgt target with sparse backing files under R/backing, an ACL (default: this host's initiator
   * name; 'ALL' = any initiator) and optionally a CHAP account (plus a mutual one).
   */
  async createTarget(iqn: string, luns: LunSpec[], acl: string[] | 'ALL' = [this.initiatorName], chap?: ChapSpec): Promise<CreatedTarget> {
    const targets = parseTgtTargets(await this.tgtadm(['--op', 'show', '--mode', 'target']));
    const tid = Math.max(0, ...targets.map((t) => t.tid)) + 1;
    await this.tgtadm(['--op', 'new', '--mode', 'target', '--tid', String(tid), '-T', iqn]);
    const out: CreatedTarget = { tid, iqn, luns: [] };
    for (const l of luns) {
      const path = join(this.paths.backing, `${iqn.replace(/[^A-Za-z0-9._-]/g, '_')}-lun${l.lun}.img`);
      writeFileSync(path, '');
      await truncate(path, l.sizeBytes);
      await this.tgtadm(['--op', 'new', '--mode', 'logicalunit', '--tid', String(tid), '--lun', String(l.lun), '-b', path]);
      out.luns.push({ lun: l.lun, path, sizeBytes: l.sizeBytes });
    }
    if (acl === 'ALL') await this.tgtadm(['--op', 'bind', '--mode', 'target', '--tid', String(tid), '-I', 'ALL']);
    else for (const name of acl) await this.tgtadm(['--op', 'bind', '--mode', 'target', '--tid', String(tid), '--initiator-name', name]);
    if (chap) {
      await this.account(chap.username, chap.password);
      await this.tgtadm(['--op', 'bind', '--mode', 'account', '--tid', String(tid), '--user', chap.username]);
      if (chap.usernameIn && chap.passwordIn) {
        await this.account(chap.usernameIn, chap.passwordIn);
        await this.tgtadm(['--op', 'bind', '--mode', 'account', '--tid', String(tid), '--user', chap.usernameIn, '--outgoing']);
      }
    }
    return out;
  }

  private async account(user: string, password: string): Promise<void> {
    try {
      await this.tgtadm(['--op', 'new', '--mode', 'account', '--user', user, '--password', password]);
    } catch (e) {
      // tgtadm's error carries only its argv up to the op and tgtd's message; accounts are global per tgtd
      if (!/already exists/.test((e as Error).message)) throw new Error(`creating CHAP account ${user} failed`);
    }
  }

  async deleteTarget(iqn: string): Promise<void> {
    const t = parseTgtTargets(await this.tgtadm(['--op', 'show', '--mode', 'target'])).find((x) => x.name === iqn);
    if (t) await this.tgtadm(['--op', 'delete', '--force', '--mode', 'target', '--tid', String(t.tid)]);
  }

  /** Grows a LUN's backing file and has tgtd re-read it in place (Tgtadm.reopenLun, as the controller does). */
  async growLun(iqn: string, lun: number, sizeBytes: number): Promise<void> {
    const t = parseTgtTargets(await this.tgtadm(['--op', 'show', '--mode', 'target'])).find((x) => x.name === iqn);
    const l = t?.luns.find((x) => x.lun === lun);
    if (!t || !l?.backingStorePath) throw new Error(`no LUN ${lun} with a backing file on ${iqn}`);
    await truncate(l.backingStorePath, sizeBytes);
    const runner = new ProcessRunner(defaultConfig().commands, [], createLogger('silent'));
    await new Tgtadm(runner, this.tgtd.controlPort).reopenLun(t.tid, lun, l.backingStorePath);
  }

  /**
   * Logs out every session, unmounts whatever is mounted under R or from its devices (deepest
   * first), detaches its loop devices, stops its tgtd if it started it, and removes R.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    let loops: string[] = [];
    try {
      loops = (await this.state()).loops;
    } catch {
      // kernel already gone
    }
    // first what was mounted from the host's devices (the kernel's own tmpfs stay until it stopped)
    const kernelMounts = new Set([this.paths.sys, this.paths.dev]);
    await unmountUnder(this.root, await loopMajorMinors(loops), (m) => !(kernelMounts.has(m.mountPoint) && m.fsType === 'tmpfs'));
    await stopKernel(this.kernel, this.paths.kernelSocket);
    await unmountUnder(this.root);
    await detachLoopsUnder(this.root);
    if (this.ownsTgtd) await this.tgtd.stop();
    rmSync(this.root, { recursive: true, force: true });
  }
}

async function startKernel(root: string, multipath: boolean, tgtdControl: number, logLevel?: string): Promise<ChildProcess> {
  const main = join(distDir(), 'test/sim/kernel-main.js');
  if (!existsSync(main)) throw new Error(`${main} is missing: build first (npm run build)`);
  const args = [main, '--root', root, '--tgtd', String(tgtdControl), ...(multipath ? ['--multipath'] : []), ...(logLevel ? ['--log-level', logLevel] : [])];
  // own process group: a terminal's Ctrl-C reaches the parent, which then shuts the kernel down in order
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'], detached: true });
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rej(new Error('simulated kernel did not start'));
    }, KERNEL_START_TIMEOUT_MS);
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', () => {
      clearTimeout(timer);
      rl.close();
      res();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`simulated kernel exited during start (code ${code})`));
    });
  });
  // a forgotten host must not keep the test process alive; its stdin pipe stays the kernel's lifeline
  child.unref();
  (child.stdout as unknown as { unref?: () => void }).unref?.();
  (child.stdin as unknown as { unref?: () => void }).unref?.();
  return child;
}

async function stopKernel(child: ChildProcess, socket: string): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    await request(socket, { admin: 'shutdown' }, KERNEL_STOP_TIMEOUT_MS);
  } catch {
    child.kill('SIGTERM');
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), KERNEL_STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

async function loopMajorMinors(loops: string[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (const l of loops) {
    const r = await execTool('cat', [`/sys/class/block/${l.replace('/dev/', '')}/dev`]);
    if (r.code === 0) out.add(r.stdout.trim());
  }
  return out;
}

/** Unmounts (deepest first) mounts under root, mounts of devices under root/dev, and mounts of our loops. */
export async function unmountUnder(root: string, majorMinors: Set<string> = new Set(), include: (m: MountEntry) => boolean = () => true): Promise<void> {
  const prefix = `${root}/`;
  for (let pass = 0; pass < 3; pass++) {
    const mounts = readMountInfo().filter((m) => include(m)).filter((m) =>
      // root: a bind mount of a device node or dir under R (R on the root filesystem)
      m.mountPoint.startsWith(prefix) || m.source.startsWith(prefix) || majorMinors.has(m.majorMinor) || m.root.startsWith(prefix));
    if (!mounts.length) return;
    mounts.sort((a, b) => b.mountPoint.length - a.mountPoint.length);
    for (const m of mounts) {
      const r = await execTool('umount', [m.mountPoint]);
      if (r.code !== 0) await execTool('umount', ['-l', m.mountPoint]);
    }
  }
}

/** Detaches loop devices whose backing file lies under root (also deleted ones). */
export async function detachLoopsUnder(root: string): Promise<void> {
  const r = await execTool('losetup', ['-n', '-l', '-O', 'NAME,BACK-FILE']);
  for (const line of r.stdout.split('\n')) {
    const m = /^(\S+)\s+(.*)$/.exec(line.trim());
    if (m && m[2]!.startsWith(`${root}/`)) await execTool('losetup', ['-d', m[1]!]);
  }
}

/** Files under dir (for tests checking what is left). */
export function listTree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true }) as string[];
}
