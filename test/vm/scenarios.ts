// The real-kernel tier's scenario list, run inside the VM by test/vm/guest.sh: the driver (controller
// on the guest's tgtd + node on the real initiator, udev and multipathd) in its own process, driven
// over gRPC as kubelet and the sidecars would, each outcome checked the way an operator would check it
// (`iscsiadm -m session` / `-m node`, /proc/mounts, /sys/block, data read back). Prints one TAP-like
// line per scenario ("ok N name (s)" / "not ok N name: why") and exits 1 when any failed.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { appendFileSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, realpathSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { basename, join } from 'node:path';
import { CHECK } from '../../src/doctor/check.js';
import { CsiClient } from '../helpers/client.js';
import { blockCapability, mountCapability } from '../helpers/sim-driver.js';
import { parseProcStat, ticksUsedByName, type ProcessTicks } from './process-cpu.js';

const MiB = 1024 * 1024;
const WORK = process.env.VM_WORK ?? '/tmp';
const APP = process.env.VM_APP ?? process.cwd();
const ONLY = (process.env.VM_ONLY ?? '').split(',').filter(Boolean);
const BASE = '/run/iscsi-csi-vm';
const STATE = join(BASE, 'state');
const KUBELET = join(BASE, 'kubelet');
const SOCKET = join(BASE, 'csi.sock');
const DRIVER_LOG = join(WORK, 'driver.log');
const CALL_TIMEOUT_MS = 600_000;
const DRIVER_READY_MS = 240_000;
const PORTAL_A = '127.0.0.1:3260';
const PORTAL_B = '127.0.0.2:3260';

type Ctx = Record<string, string>;
interface Volume { volume_id: string; capacity_bytes: number; volume_context: Ctx }

// ---- host commands, as an operator runs them --------------------------------------------------

interface Cmd { code: number; stdout: string; stderr: string }

function sh(argv: string[], timeoutMs = 120_000): Promise<Cmd> {
  return new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 * MiB }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function must(argv: string[], timeoutMs?: number): Promise<string> {
  const r = await sh(argv, timeoutMs);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** `iscsiadm -m session`: "tcp: [1] 127.0.0.1:3260,1 iqn… (non-flash)" lines; exit 21 = none. */
async function sessions(iqn?: string): Promise<{ portal: string; iqn: string }[]> {
  const r = await sh(['iscsiadm', '-m', 'session']);
  if (r.code === 21) return [];
  if (r.code !== 0) throw new Error(`iscsiadm -m session exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout.split('\n').map((l) => /^\S+: \[\d+\] (\S+),\d+ (\S+)/.exec(l)).filter((m) => m !== null)
    .map((m) => ({ portal: m[1]!, iqn: m[2]! })).filter((s) => !iqn || s.iqn === iqn);
}

/** `iscsiadm -m node`: "127.0.0.1:3260,1 iqn…" lines; exit 21 = none. */
async function nodeRecords(iqn?: string): Promise<string[]> {
  const r = await sh(['iscsiadm', '-m', 'node']);
  if (r.code === 21) return [];
  if (r.code !== 0) throw new Error(`iscsiadm -m node exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout.split('\n').filter((l) => l.trim() !== '' && (!iqn || l.endsWith(` ${iqn}`)));
}

function mountsAt(path: string): { source: string; fsType: string }[] {
  return readFileSync('/proc/mounts', 'utf8').split('\n').map((l) => l.split(' '))
    .filter((f) => f[1] === path).map((f) => ({ source: f[0]!, fsType: f[2]! }));
}

function scsiDisks(): string[] {
  return readdirSync('/sys/block').filter((d) => d.startsWith('sd')).sort();
}

/** The SCSI disks whose /sys/block/sdX/device/wwid is `wwid` (the kernel's name for the LUN). */
function disksOf(wwid: string): string[] {
  return scsiDisks().filter((x) => {
    try {
      return readFileSync(`/sys/block/${x}/device/wwid`, 'utf8').trim() === wwid;
    } catch {
      return false; // removed meanwhile
    }
  });
}

/**
 * The iSCSI session a disk is on (`sessionN` in its sysfs path), null once it is gone. The kernel never
 * reuses session ids, while a new session may get the old one's SCSI host number and sd name.
 */
function diskSession(disk: string): string | null {
  try {
    return /\/(session\d+)\//.exec(realpathSync(`/sys/block/${disk}/device`))?.[1] ?? null;
  } catch {
    return null;
  }
}

function dmDevices(): string[] {
  return readdirSync('/sys/block').filter((d) => d.startsWith('dm-')).sort();
}

function check(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(what);
}

function driverLogLines(): Record<string, unknown>[] {
  if (!existsSync(DRIVER_LOG)) return [];
  return readFileSync(DRIVER_LOG, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      return {};
    }
  });
}

function loginsLogged(iqn: string, since: number): number {
  return driverLogLines().filter((l) => l.msg === 'logged in' && l.iqn === iqn && Date.parse(String(l.time)) >= since).length;
}

/** The healer's event lines (`healer: <action> <outcome>`) naming `iqn`, logged since `since`. */
function healerLogged(iqn: string, since: number): Record<string, unknown>[] {
  return driverLogLines().filter((l) => String(l.msg).startsWith('healer: ') && l.iqn === iqn && Date.parse(String(l.time)) >= since);
}

/** Polls `probe` every 500 ms until it holds, `ms` at most; whether it did. */
async function until(ms: number, probe: () => boolean | Promise<boolean>): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() >= end) return false;
    await sleep(500);
  }
}

// ---- the driver, in its own process -------------------------------------------------------------

interface DriverOptions { portals?: string[]; config?: Record<string, unknown> }

class Driver {
  proc: ChildProcess | undefined;
  client = new CsiClient(`unix://${SOCKET}`);
  nodeId = '';
  private opts: DriverOptions = {};

  /** What the driver runs with now (a scenario that changes them puts these back). */
  get options(): DriverOptions { return this.opts; }

  configFile(opts: DriverOptions): string {
    const cfg = {
      mode: 'all',
      endpoint: `unix://${SOCKET}`,
      stateDir: STATE,
      logLevel: 'debug',
      controller: { backend: 'tgt', tgt: { portals: opts.portals ?? [PORTAL_A], poolDir: join(BASE, 'pool') } },
      // the emulation is 50–100× slower than a node: in the 32-volume ext4 storm, with udev holding the
      // CPUs, one stage's read of its device's first and last MiB once took over the default 10 s
      // (a bound on a hung device, not a pace a real device gets near)
      timeouts: { deviceReadMs: 60_000 },
      ...opts.config,
    };
    const file = join(BASE, 'driver.json');
    writeFileSync(file, JSON.stringify(cfg, null, 2));
    return file;
  }

  async start(opts: DriverOptions = this.opts): Promise<void> {
    this.opts = opts;
    mkdirSync(STATE, { recursive: true });
    const file = this.configFile(opts);
    const out = openSync(DRIVER_LOG, 'a');
    this.proc = spawn(process.execPath, [join(APP, 'dist/bundle/cli.js'), '--config', file], { stdio: ['ignore', out, out] });
    closeSync(out);
    const started = Date.now();
    for (;;) {
      if (this.proc.exitCode !== null) throw new Error(`driver exited ${this.proc.exitCode} before serving (see driver.log)`);
      if (existsSync(SOCKET)) {
        try {
          this.client.close();
          this.client = new CsiClient(`unix://${SOCKET}`);
          const info = await this.client.call<{ node_id: string }>('Node', 'NodeGetInfo', {}, 10_000);
          this.nodeId = info.node_id;
          return;
        } catch {
          // not serving yet
        }
      }
      if (Date.now() - started > DRIVER_READY_MS) throw new Error(`driver did not serve within ${DRIVER_READY_MS} ms`);
      await sleep(200);
    }
  }

  async kill(signal: NodeJS.Signals): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    await Promise.race([exited, sleep(30_000)]);
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    this.client.close();
  }

  async restart(opts?: DriverOptions): Promise<void> {
    await this.kill('SIGTERM');
    await this.start(opts ?? this.opts);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ---- one volume through the CSI calls ----------------------------------------------------------

class Vol {
  volume!: Volume;
  publishContext: Ctx = {};
  readonly staging: string;
  readonly target: string;
  secrets: Ctx = {};
  constructor(private readonly d: Driver, readonly name: string, readonly cap: object, readonly kind: 'mount' | 'block') {
    this.staging = join(KUBELET, name, 'globalmount');
    this.target = join(KUBELET, name, 'pod', kind === 'mount' ? 'mount' : 'dev');
  }

  get id(): string { return this.volume.volume_id; }
  get iqn(): string { return this.volume.volume_context.iqn!; }

  async create(bytes: number, parameters: Ctx = {}, secrets: Ctx = {}): Promise<this> {
    mkdirSync(join(KUBELET, this.name), { recursive: true });
    const r = await this.d.client.call<{ volume: Volume }>('Controller', 'CreateVolume', {
      name: this.name, capacity_range: { required_bytes: bytes }, volume_capabilities: [this.cap], parameters, secrets,
    }, CALL_TIMEOUT_MS);
    this.volume = r.volume;
    return this;
  }

  async controllerPublish(): Promise<this> {
    const r = await this.d.client.call<{ publish_context: Ctx }>('Controller', 'ControllerPublishVolume', {
      volume_id: this.id, node_id: this.d.nodeId, volume_capability: this.cap, readonly: false, volume_context: this.volume.volume_context,
    }, CALL_TIMEOUT_MS);
    this.publishContext = r.publish_context;
    return this;
  }

  stage(volumeContext: Ctx = this.volume.volume_context, secrets: Ctx = this.secrets): Promise<unknown> {
    return this.d.client.call('Node', 'NodeStageVolume', {
      volume_id: this.id, staging_target_path: this.staging, volume_capability: this.cap,
      volume_context: volumeContext, publish_context: this.publishContext, secrets,
    }, CALL_TIMEOUT_MS);
  }

  publish(): Promise<unknown> {
    return this.d.client.call('Node', 'NodePublishVolume', {
      volume_id: this.id, staging_target_path: this.staging, target_path: this.target, volume_capability: this.cap,
      readonly: false, volume_context: this.volume.volume_context, publish_context: this.publishContext,
    }, CALL_TIMEOUT_MS);
  }

  unpublish(): Promise<unknown> {
    return this.d.client.call('Node', 'NodeUnpublishVolume', { volume_id: this.id, target_path: this.target }, CALL_TIMEOUT_MS);
  }

  unstage(): Promise<unknown> {
    return this.d.client.call('Node', 'NodeUnstageVolume', { volume_id: this.id, staging_target_path: this.staging }, CALL_TIMEOUT_MS);
  }

  stats(): Promise<{ usage: { unit: string; total: number; used: number; available: number }[]; volume_condition?: { abnormal: boolean; message: string } }> {
    return this.d.client.call('Node', 'NodeGetVolumeStats', { volume_id: this.id, volume_path: this.target }, CALL_TIMEOUT_MS);
  }

  async destroy(): Promise<void> {
    await this.d.client.call('Controller', 'ControllerUnpublishVolume', { volume_id: this.id, node_id: this.d.nodeId }, CALL_TIMEOUT_MS);
    await this.d.client.call('Controller', 'DeleteVolume', { volume_id: this.id }, CALL_TIMEOUT_MS);
  }

  /** Unpublish, unstage, controller-unpublish, delete: what a pod deletion and a PVC deletion do. */
  async teardown(): Promise<void> {
    await this.unpublish();
    await this.unstage();
    await this.destroy();
  }

  /** Writes `text` through the published path (a file, or at 1 MiB into the block device) and syncs it. */
  write(text: string): void {
    if (this.kind === 'mount') {
      const fd = openSync(join(this.target, 'data.txt'), 'w');
      try {
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      return;
    }
    const fd = openSync(this.target, 'r+');
    try {
      writeSync(fd, Buffer.from(text), 0, Buffer.byteLength(text), MiB);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }

  /** Reads back what `write` wrote, through the published path or `path` (another node of the same block device). */
  read(bytes: number, path = this.target): string {
    if (this.kind === 'mount') return readFileSync(join(path, 'data.txt'), 'utf8');
    const fd = openSync(path, 'r');
    try {
      const b = Buffer.alloc(bytes);
      readSync(fd, b, 0, bytes, MiB);
      return b.toString();
    } finally {
      closeSync(fd);
    }
  }
}

/** A volume created by the controller and published to this node: what the attacher leaves for kubelet. */
async function provision(d: Driver, name: string, cap: object, kind: 'mount' | 'block', bytes: number, parameters: Ctx = {}, secrets: Ctx = {}): Promise<Vol> {
  const v = await new Vol(d, name, cap, kind).create(bytes, parameters, secrets);
  await v.controllerPublish();
  return v;
}

/** After the last volume of `iqn` is gone: no session, no node record, no SCSI disk of it. */
async function checkTargetGone(iqn: string, disksBefore: string[]): Promise<void> {
  const s = await sessions(iqn);
  check(s.length === 0, `sessions to ${iqn} left after the last unstage: ${JSON.stringify(s)}`);
  const n = await nodeRecords(iqn);
  check(n.length === 0, `node records of ${iqn} left: ${n.join('; ')}`);
  const extra = scsiDisks().filter((d) => !disksBefore.includes(d));
  check(extra.length === 0, `SCSI disks left in /sys/block: ${extra.join(', ')}`);
}

// ---- the scenarios -----------------------------------------------------------------------------

interface Scenario { name: string; run: (d: Driver) => Promise<string | void> }

function lifecycle(fsType: 'ext4' | 'xfs' | 'block', bytes: number): Scenario {
  return {
    name: `${fsType} lifecycle, data kept across unstage and restage`,
    async run(d) {
      const disks = scsiDisks();
      const kind = fsType === 'block' ? 'block' : 'mount';
      const v = await provision(d, `life-${fsType}`, kind === 'block' ? blockCapability() : mountCapability(fsType), kind, bytes, fsType === 'block' ? {} : { fsType });
      await v.stage();
      await v.publish();
      if (kind === 'mount') {
        const m = mountsAt(v.staging);
        check(m.length === 1 && m[0]!.fsType === fsType, `staging path mounts: ${JSON.stringify(m)}`);
      }
      check((await sessions(v.iqn)).length === 1, 'one session to the volume target');
      const text = `kept ${fsType} ${Date.now()}`;
      v.write(text);
      const st = await v.stats();
      check(st.usage.length > 0 && st.usage[0]!.total > 0, `stats: ${JSON.stringify(st)}`);
      await v.unpublish();
      await v.unstage();
      await checkTargetGone(v.iqn, disks);
      check(mountsAt(v.staging).length === 0, 'staging path still mounted after unstage');
      await v.stage();
      await v.publish();
      const back = v.read(Buffer.byteLength(text));
      check(back === text, `read back ${JSON.stringify(back)}, wrote ${JSON.stringify(text)}`);
      await v.teardown();
      await checkTargetGone(v.iqn, disks);
    },
  };
}

/** The backing file of a tgt volume on the guest's pool, hashed (a refused stage must leave every byte as it was). */
async function backingDigest(iqn: string): Promise<string> {
  const show = await must(['tgtadm', '--lld', 'iscsi', '--op', 'show', '--mode', 'target']);
  const block = show.split(/^Target \d+: /m).find((t) => t.startsWith(`${iqn}\n`)) ?? '';
  const file = [...block.matchAll(/Backing store path: (\/\S+)/g)].map((m) => m[1]!).pop();
  check(file, `no backing file of ${iqn} in tgtadm's listing`);
  return (await must(['sha256sum', file])).split(' ')[0]!;
}

const wwid: Scenario = {
  name: "wwid: the publish_context's wwid is the guest kernel's /sys/block/sdX/device/wwid; a wrong one is refused, nothing written",
  async run(d) {
    const disks = scsiDisks();
    const v = await provision(d, 'wwid-a', mountCapability('ext4'), 'mount', 32 * MiB, { fsType: 'ext4' });
    const expected = v.publishContext.wwid ?? '';
    check(/^naa\.6[0-9a-f]{31}$/.test(expected), `publish_context wwid ${JSON.stringify(expected)}`);
    check(v.volume.volume_context.wwid === expected, `volume_context wwid ${v.volume.volume_context.wwid} differs from publish_context's ${expected}`);
    const before = await backingDigest(v.iqn);
    const wrong = 'naa.6000000000000c00ffffffffffffffff';
    const right = v.publishContext;
    v.publishContext = { ...right, wwid: wrong };
    const err = await v.stage({ ...v.volume.volume_context, wwid: wrong }).then(() => null, (e: { code?: number; details?: string }) => e);
    v.publishContext = right;
    check(err?.code === 9, `a wrong wwid staged or failed otherwise: ${JSON.stringify(err)}`);
    check(err.details?.includes(wrong) && err.details.includes(expected), `the refusal does not name both wwids: ${err.details}`);
    check(mountsAt(v.staging).length === 0, 'mounted although refused');
    await checkTargetGone(v.iqn, disks);
    check((await backingDigest(v.iqn)) === before, 'the refused stage changed the LUN');
    await v.stage();
    const added = scsiDisks().filter((x) => !disks.includes(x));
    check(added.length === 1, `disks added by the stage: ${added.join(', ')}`);
    const kernel = readFileSync(`/sys/block/${added[0]}/device/wwid`, 'utf8').trim();
    check(kernel === expected, `the kernel's wwid of ${added[0]} is ${kernel}, publish_context says ${expected}`);
    await v.publish();
    v.write('identity checked');
    await v.teardown();
    await checkTargetGone(v.iqn, disks);
    return `${added[0]}: ${kernel}`;
  },
};

const twoLuns: Scenario = {
  name: 'two LUNs of one target: the session stays until the last is unstaged',
  async run(d) {
    const disks = scsiDisks();
    const a = await new Vol(d, 'pair-a', mountCapability('ext4'), 'mount').create(32 * MiB, { targetMode: 'shared', sharedTarget: 'pair' });
    const b = await new Vol(d, 'pair-b', mountCapability('ext4'), 'mount').create(32 * MiB, { targetMode: 'shared', sharedTarget: 'pair' });
    check(a.iqn === b.iqn, 'both volumes on one target');
    for (const v of [a, b]) {
      await v.controllerPublish();
      await v.stage();
      await v.publish();
      v.write(`pair ${v.name}`);
    }
    check((await sessions(a.iqn)).length === 1, 'one session for both LUNs');
    await a.unpublish();
    await a.unstage();
    check((await sessions(a.iqn)).length === 1, 'the session was logged out while LUN b is staged');
    check(b.read(0) === `pair ${b.name}`, 'LUN b unreadable after a was unstaged');
    await a.destroy();
    await b.teardown();
    await checkTargetGone(a.iqn, disks);
  },
};

/** Clock ticks of the guest's CPUs (busy, and in all) and of one process (its own, and its waited-for children's). */
interface CpuTicks { busy: number; total: number; own: number; children: number; pid: number | undefined; processes: Map<number, ProcessTicks> }

function cpuTicks(pid: number | undefined): CpuTicks {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0);
  const busy = total - cpu[3]! - cpu[4]!;
  const processes = ticksByProcess();
  const driver = pid === undefined ? undefined : processes.get(pid);
  return { busy, total, own: driver?.own ?? 0, children: driver?.children ?? 0, pid, processes };
}

/** CPU ticks of every process, from /proc/PID/stat. */
function ticksByProcess(): Map<number, ProcessTicks> {
  const out = new Map<number, ProcessTicks>();
  for (const pid of readdirSync('/proc').filter((e) => /^\d+$/.test(e))) {
    try {
      const ticks = parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
      if (ticks) out.set(Number(pid), ticks);
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** The processes (by name, kernel threads' numbers dropped) that used the most CPU between two snapshots. */
function topProcesses(before: Map<number, ProcessTicks>, after: Map<number, ProcessTicks>, all: number, skip: number | undefined): string {
  return [...ticksUsedByName(before, after, skip)].sort((x, y) => y[1] - x[1]).slice(0, 6).map(([comm, t]) => `${comm} ${Math.round((100 * t) / Math.max(1, all))}%`).join(', ');
}

/**
 * Where a storm's time went: how busy the guest's CPUs were (the driver, the commands it ran, the rest:
 * the kernel, udev, iscsid, tgtd, and the processes that used most of it), and per step of the driver's
 * "staged"/"unstaged" lines of these volumes (mean and max per volume, in seconds), slowest first.
 */
function stormTrace(msg: 'staged' | 'unstaged', volumeIds: Set<string>, since: number, before: CpuTicks, after: CpuTicks): string {
  const all = after.total - before.total;
  const pct = (ticks: number) => `${Math.round((100 * ticks) / Math.max(1, all))}%`;
  const driver = after.own - before.own;
  const commands = after.children - before.children;
  const cpu = `CPUs busy ${pct(after.busy - before.busy)} (driver ${pct(driver)}, its commands ${pct(commands)}, rest ${pct(after.busy - before.busy - driver - commands)}: ${topProcesses(before.processes, after.processes, all, after.pid)})`;
  const lines = driverLogLines().filter((l) => l.msg === msg && volumeIds.has(String(l.volumeId)) && Date.parse(String(l.time)) >= since);
  const byStep = new Map<string, number[]>();
  for (const l of lines) for (const [step, ms] of Object.entries((l.steps ?? {}) as Record<string, number>)) byStep.set(step, [...(byStep.get(step) ?? []), ms]);
  const steps = [...byStep].map(([step, ms]) => ({ step, mean: ms.reduce((a, b) => a + b, 0) / lines.length, max: Math.max(...ms) }))
    .sort((a, b) => b.mean - a.mean).map((x) => `${x.step} ${(x.mean / 1000).toFixed(1)}/${(x.max / 1000).toFixed(1)}`);
  return `${cpu}; ${lines.length} ${msg} lines, s per volume mean/max: ${steps.join(', ')}`;
}

const storm = (kind: 'mount' | 'block', count: number): Scenario => ({
  name: `storm: ${count} ${kind === 'mount' ? 'ext4' : 'block'} volumes of one target staged at once, one login`,
  async run(d) {
    const disks = scsiDisks();
    const cap = kind === 'mount' ? mountCapability('ext4') : blockCapability();
    const vols: Vol[] = [];
    for (let i = 0; i < count; i++) {
      const v = await provision(d, `storm-${kind}${count}-${i}`, cap, kind, 16 * MiB, { targetMode: 'shared', sharedTarget: `storm-${kind}-${count}` });
      vols.push(v);
    }
    const ids = new Set(vols.map((v) => v.id));
    const since = Date.now();
    const cpu0 = cpuTicks(d.proc?.pid);
    const t0 = performance.now();
    const outcomes = await Promise.allSettled(vols.map((v) => v.stage()));
    const stageS = (performance.now() - t0) / 1000;
    const cpu1 = cpuTicks(d.proc?.pid);
    const failed = outcomes.map((o, i) => (o.status === 'rejected' ? `${vols[i]!.name}: ${(o.reason as Error).message}` : '')).filter(Boolean);
    check(failed.length === 0, `${failed.length} of ${count} stages failed: ${failed.slice(0, 3).join('; ')}`);
    const logins = loginsLogged(vols[0]!.iqn, since);
    check(logins === 1, `${logins} logins for one target`);
    check((await sessions(vols[0]!.iqn)).length === 1, 'one session');
    for (const v of vols) {
      if (kind === 'mount') check(mountsAt(v.staging).length === 1, `${v.name} not mounted`);
    }
    const downSince = Date.now();
    const cpu2 = cpuTicks(d.proc?.pid);
    const t1 = performance.now();
    const down = await Promise.allSettled(vols.map((v) => v.unstage()));
    const unstageS = (performance.now() - t1) / 1000;
    const cpu3 = cpuTicks(d.proc?.pid);
    const downFailed = down.filter((o) => o.status === 'rejected').map((o) => ((o as PromiseRejectedResult).reason as Error).message);
    check(downFailed.length === 0, `${downFailed.length} unstages failed: ${downFailed.slice(0, 3).join('; ')}`);
    for (const v of vols) await v.destroy();
    await checkTargetGone(vols[0]!.iqn, disks);
    process.stdout.write(`# storm ${kind} stage: ${stormTrace('staged', ids, since, cpu0, cpu1)}\n`);
    process.stdout.write(`# storm ${kind} unstage: ${stormTrace('unstaged', ids, downSince, cpu2, cpu3)}\n`);
    return `stage ${stageS.toFixed(1)} s, unstage ${unstageS.toFixed(1)} s`;
  },
});

const chap: Scenario = {
  name: 'CHAP: a wrong secret fails clearly and leaves nothing; the right one stages',
  async run(d) {
    const disks = scsiDisks();
    const secrets = { 'node.session.auth.username': 'vmchapuser', 'node.session.auth.password': 'Vm-Chap-Secret-0123' };
    const v = await provision(d, 'chap', mountCapability('ext4'), 'mount', 32 * MiB, { chap: 'true' }, secrets);
    const wrong = await v.stage(undefined, { ...secrets, 'node.session.auth.password': 'Not-The-Secret-99' }).then(() => null, (e: { code: number; details: string }) => e);
    check(wrong !== null, 'a wrong CHAP secret staged');
    check(/auth/i.test(wrong.details), `the error does not say authentication: ${wrong.details}`);
    check((await sessions(v.iqn)).length === 0, 'a session is left after the failed login');
    check((await nodeRecords(v.iqn)).length === 0, 'a node record is left after the failed login');
    await v.stage(undefined, secrets);
    await v.publish();
    v.write('chap data');
    check(v.read(0) === 'chap data', 'data not read back');
    await v.teardown();
    await checkTargetGone(v.iqn, disks);
    return `wrong secret: ${wrong.details.slice(0, 120)}`;
  },
};

/** A target made by hand (a static PV on an existing SAN): one LUN on a sparse file, ACL by initiator name. */
async function handTarget(tid: number, iqn: string, initiator: string, bytes: number): Promise<() => Promise<void>> {
  const file = join(BASE, `hand-${tid}.img`);
  await must(['truncate', '-s', String(bytes), file]);
  await must(['tgtadm', '--lld', 'iscsi', '--op', 'new', '--mode', 'target', '--tid', String(tid), '-T', iqn]);
  await must(['tgtadm', '--lld', 'iscsi', '--op', 'new', '--mode', 'logicalunit', '--tid', String(tid), '--lun', '1', '-b', file]);
  await must(['tgtadm', '--lld', 'iscsi', '--op', 'bind', '--mode', 'target', '--tid', String(tid), '--initiator-name', initiator]);
  return async () => {
    await sh(['tgtadm', '--lld', 'iscsi', '--op', 'delete', '--mode', 'target', '--tid', String(tid), '--force']);
    rmSync(file, { force: true });
  };
}

const ownInitiator: Scenario = {
  name: "a volume's own initiatorName: an iface clone gets past an ACL that admits only that name",
  async run(d) {
    const disks = scsiDisks();
    const iqn = 'iqn.2026-12.dev.tsdriver.vm:static-own';
    const own = 'iqn.2026-12.dev.tsdriver.vm:tenant-a';
    const remove = await handTarget(901, iqn, own, 32 * MiB);
    const ifacesBefore = await must(['iscsiadm', '-m', 'iface']);
    try {
      const v = new Vol(d, 'own-init', mountCapability('ext4'), 'mount');
      v.volume = { volume_id: 'static-own-init', capacity_bytes: 32 * MiB, volume_context: { targetPortal: PORTAL_A, iqn, lun: '1', fsType: 'ext4' } };
      mkdirSync(join(KUBELET, v.name), { recursive: true });
      const refused = await v.stage().then(() => null, (e: { details: string }) => e);
      check(refused !== null, 'the node initiator name got past an ACL that does not list it');
      check((await sessions(iqn)).length === 0 && (await nodeRecords(iqn)).length === 0, 'the refused login left a session or node record');
      v.volume.volume_context = { ...v.volume.volume_context, initiatorName: own };
      await v.stage();
      const nexus = await must(['tgtadm', '--lld', 'iscsi', '--op', 'show', '--mode', 'target']);
      check(nexus.includes(`Initiator: ${own}`), `tgtd shows no nexus from ${own}`);
      await v.publish();
      v.write('own name');
      await v.unpublish();
      await v.unstage();
      await checkTargetGone(iqn, disks);
      const ifaces = await must(['iscsiadm', '-m', 'iface']);
      check(ifaces === ifacesBefore, `cloned iface left: ${ifaces.trim()}`);
      return `refused without it: ${refused.details.slice(0, 100)}`;
    } finally {
      await remove();
    }
  },
};

const deadPortal: Scenario = {
  name: 'one dead portal in the list: the volume stages on the live one',
  async run(d) {
    const disks = scsiDisks();
    const v = await provision(d, 'dead-portal', mountCapability('ext4'), 'mount', 32 * MiB);
    const ctx = { ...v.volume.volume_context, portals: JSON.stringify([PORTAL_A, '127.0.0.3:3260']) };
    await v.stage(ctx);
    check((await sessions(v.iqn)).length === 1, 'one session on the live portal');
    await v.publish();
    v.write('one path is enough');
    await v.teardown();
    await checkTargetGone(v.iqn, disks);
  },
};

/** Writes `text` to `dir`/`name` and fsyncs the file and its directory (the entry is on the LUN too). */
function writeSynced(dir: string, name: string, text: string): void {
  const fd = openSync(join(dir, name), 'w');
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/**
 * A snapshot on the guest's pool (tmpfs: no reflinks) and a volume restored from it, larger than its
 * source, staged on the real kernel: it has the file written before the snapshot and not the one
 * written after. Snapshotting the volume while it is published is refused (FAILED_PRECONDITION, naming
 * reflinks) with nothing left in the pool; unpublished, it is byte-copied. Every file goes with its object.
 */
const snapshotRestore: Scenario = {
  name: 'snapshot of an ext4 volume byte-copied on a pool without reflinks (refused while published), restored larger: the file written before is there, the one after is not',
  async run(d) {
    const disks = scsiDisks();
    const poolDir = join(BASE, 'pool');
    const poolBefore = readdirSync(poolDir).sort();
    const call = <T>(method: string, req: object) => d.client.call<T>('Controller', method, req, CALL_TIMEOUT_MS);
    const bytes = 8 * MiB;
    const cap = mountCapability('ext4');
    const src = await provision(d, 'snapshot-src', cap, 'mount', bytes, { fsType: 'ext4' });
    const before = `before the snapshot ${Date.now()}`;
    const after = `after the snapshot ${Date.now()}`;
    await src.stage();
    await src.publish();
    writeSynced(src.target, 'a.txt', before);

    // published, staged, logged in: a byte copy would not be point-in-time
    const poolWithSrc = readdirSync(poolDir).sort();
    const refused = await call('CreateSnapshot', { name: 'snapshot-a', source_volume_id: src.id }).then(() => null, (e: { code?: number; details?: string }) => e);
    check(refused !== null && refused.code === 9, `CreateSnapshot of a published volume on tmpfs answered ${refused ? `${refused.code} ${refused.details}` : 'OK'}, not FAILED_PRECONDITION`);
    check(/reflink/.test(refused.details ?? '') && refused.details!.includes(src.id), `the refusal does not name reflinks and the volume: ${refused.details}`);
    check(JSON.stringify(readdirSync(poolDir).sort()) === JSON.stringify(poolWithSrc), `the refused snapshot changed the pool: ${readdirSync(poolDir).join(', ')}`);
    check(readFileSync(join(src.target, 'a.txt'), 'utf8') === before, 'file A unreadable after the refusal');

    // unused: unpublished, unstaged, controller-unpublished; then copied
    await src.unpublish();
    await src.unstage();
    await call('ControllerUnpublishVolume', { volume_id: src.id, node_id: d.nodeId });
    await checkTargetGone(src.iqn, disks);
    const t0 = performance.now();
    const { snapshot } = await call<{ snapshot: { snapshot_id: string; source_volume_id: string; size_bytes: string | number; ready_to_use: boolean } }>('CreateSnapshot', { name: 'snapshot-a', source_volume_id: src.id });
    const snapS = (performance.now() - t0) / 1000;
    check(snapshot.ready_to_use === true, `ready_to_use ${String(snapshot.ready_to_use)}`);
    check(Number(snapshot.size_bytes) === bytes, `size_bytes ${snapshot.size_bytes}, the source has ${bytes}`);
    check(snapshot.source_volume_id === src.id, `source_volume_id ${snapshot.source_volume_id}`);
    const hex = snapshot.snapshot_id.split(':').pop()!;
    const snapFiles = readdirSync(poolDir).filter((f) => f.includes(hex));
    check(snapFiles.length === 1, `the snapshot's files in the pool: ${JSON.stringify(snapFiles)}`);

    // written after the snapshot, through a restage
    await src.controllerPublish();
    await src.stage();
    await src.publish();
    check(readFileSync(join(src.target, 'a.txt'), 'utf8') === before, 'file A lost across the restage');
    writeSynced(src.target, 'b.txt', after);
    await src.unpublish();
    await src.unstage();
    await call('ControllerUnpublishVolume', { volume_id: src.id, node_id: d.nodeId });

    // restored, larger than its source
    const restored = new Vol(d, 'snapshot-restored', cap, 'mount');
    mkdirSync(join(KUBELET, restored.name), { recursive: true });
    const bigger = bytes + 4 * MiB;
    const r = await call<{ volume: Volume & { content_source?: { snapshot?: { snapshot_id: string } } | null } }>('CreateVolume', {
      name: restored.name, capacity_range: { required_bytes: bigger }, volume_capabilities: [cap], parameters: { fsType: 'ext4' },
      volume_content_source: { snapshot: { snapshot_id: snapshot.snapshot_id } },
    });
    restored.volume = r.volume;
    check(Number(r.volume.capacity_bytes) === bigger, `restored capacity_bytes ${r.volume.capacity_bytes}, asked ${bigger}`);
    check(r.volume.content_source?.snapshot?.snapshot_id === snapshot.snapshot_id, `restored content_source ${JSON.stringify(r.volume.content_source)}`);
    await restored.controllerPublish();
    await restored.stage();
    const m = mountsAt(restored.staging);
    check(m.length === 1 && m[0]!.fsType === 'ext4', `restored staging path mounts: ${JSON.stringify(m)}`);
    await restored.publish();
    const disk = scsiDisks().find((x) => !disks.includes(x));
    const sectors = disk ? Number(readFileSync(`/sys/block/${disk}/size`, 'utf8')) : 0;
    check(sectors * 512 === bigger, `the restored LUN (${disk}) is ${sectors * 512} bytes, not ${bigger}`);
    const a = existsSync(join(restored.target, 'a.txt')) ? readFileSync(join(restored.target, 'a.txt'), 'utf8') : undefined;
    check(a === before, `file A in the restored volume: ${JSON.stringify(a)}, written ${JSON.stringify(before)}`);
    check(!existsSync(join(restored.target, 'b.txt')), 'file B (written after the snapshot) is in the restored volume');
    const fsTotal = bytesTotal(await restored.stats());

    // the source still has both
    await src.controllerPublish();
    await src.stage();
    await src.publish();
    check(readFileSync(join(src.target, 'b.txt'), 'utf8') === after, 'file B lost from the source');

    await restored.teardown();
    await src.teardown();
    await checkTargetGone(restored.iqn, disks);
    await checkTargetGone(src.iqn, disks);
    await call('DeleteSnapshot', { snapshot_id: snapshot.snapshot_id });
    const left = readdirSync(poolDir).filter((f) => f.includes(hex));
    check(left.length === 0, `the snapshot's files left in the pool: ${left.join(', ')}`);
    const poolAfter = readdirSync(poolDir).sort();
    check(JSON.stringify(poolAfter) === JSON.stringify(poolBefore), `pool ${JSON.stringify(poolAfter)}, before the scenario ${JSON.stringify(poolBefore)}`);
    const listed = await call<{ entries: unknown[] }>('ListSnapshots', { snapshot_id: snapshot.snapshot_id });
    check(listed.entries.length === 0, 'the deleted snapshot is still listed');
    return `copied in ${snapS.toFixed(1)} s; refused while published: ${refused.details!.slice(0, 90)}…; restored ${bigger / MiB} MiB LUN, ext4 total ${(fsTotal / MiB).toFixed(1)} MiB as staged`;
  },
};

/** Writes and fsyncs files through `dir` until stopped; counts write errors. */
function backgroundWriter(dir: string): { stop: () => Promise<{ writes: number; errors: string[] }> } {
  let running = true;
  let writes = 0;
  const errors: string[] = [];
  const loop = (async () => {
    const chunk = Buffer.alloc(256 * 1024, 7);
    while (running) {
      try {
        const fd = openSync(join(dir, `io-${writes % 4}`), 'w');
        writeSync(fd, chunk);
        fsyncSync(fd);
        closeSync(fd);
        writes += 1;
      } catch (e) {
        errors.push((e as Error).message);
      }
      await sleep(20);
    }
  })();
  return { stop: async () => { running = false; await loop; return { writes, errors }; } };
}

function bytesTotal(st: Awaited<ReturnType<Vol['stats']>>): number {
  return Number(st.usage.find((u) => u.unit === 'BYTES' || (u.unit as unknown) === 1)!.total);
}

/**
 * Growth through the tgt backend. Stock tgt reads a LUN's size only when it opens the backing file,
 * and re-opening it under I/O fails the commands in flight, so the backend advertises OFFLINE
 * expansion: ControllerExpand of a volume an initiator is logged in to is refused with nothing
 * touched (the LUN and the I/O on it go on), and succeeds once the node has logged out; the node then
 * grows the mounted filesystem online (NodeExpand).
 */
function expansion(fsType: 'ext4' | 'xfs', from: number, to: number): Scenario {
  return {
    name: `${fsType} growth through the tgt backend (OFFLINE: refused while logged in, I/O unharmed) and online filesystem growth on the node`,
    async run(d) {
      const disks = scsiDisks();
      const caps = await d.client.call<{ capabilities: { volume_expansion?: { type: string } }[] }>('Identity', 'GetPluginCapabilities', {});
      const advertised = caps.capabilities.find((c) => c.volume_expansion)?.volume_expansion?.type;
      check(advertised === 'OFFLINE', `volume expansion advertised as ${advertised}`);
      const cap = mountCapability(fsType);
      const v = await provision(d, `grow-${fsType}`, cap, 'mount', from, { fsType });
      await v.stage();
      await v.publish();
      v.write(`before growth ${fsType}`);
      const before = bytesTotal(await v.stats());
      const disk = scsiDisks().find((x) => !disks.includes(x))!;
      const dmesgBefore = (await must(['dmesg'])).split('\n').length;
      const expand = () => d.client.call<{ capacity_bytes: string }>('Controller', 'ControllerExpandVolume', { volume_id: v.id, capacity_range: { required_bytes: to }, volume_capability: cap }, CALL_TIMEOUT_MS);
      const writer = backgroundWriter(v.target);
      let refused: { code?: number; details?: string } | null;
      let io;
      try {
        refused = await expand().then(() => null, (e: { code: number; details: string }) => e);
        await sleep(3_000); // the controller's reconcile loop must not touch the LUN either
      } finally {
        io = await writer.stop();
      }
      check(refused !== null && refused.code === 9, `ControllerExpand of a volume in use answered ${refused ? `${refused.code} ${refused.details}` : 'OK'}, not FAILED_PRECONDITION`);
      check(io.errors.length === 0, `${io.errors.length} write errors meanwhile: ${io.errors[0]}`);
      const kernel = (await must(['dmesg'])).split('\n').slice(dmesgBefore).filter((l) => /I\/O error|Buffer I\/O|rejecting I\/O|offline|Synchronizing SCSI cache|Medium Error/i.test(l));
      check(kernel.length === 0, `the kernel logged: ${kernel.slice(0, 3).join(' | ')}`);
      const sectors = Number(readFileSync(`/sys/block/${disk}/size`, 'utf8'));
      check(sectors * 512 === from, `the LUN changed size under the initiator: ${sectors * 512} bytes`);
      await v.unpublish();
      await v.unstage();
      const r = await expand();
      check(Number(r.capacity_bytes) === to, `ControllerExpand answered ${r.capacity_bytes}`);
      await v.stage();
      await v.publish();
      await d.client.call('Node', 'NodeExpandVolume', { volume_id: v.id, volume_path: v.target, staging_target_path: v.staging, capacity_range: { required_bytes: to }, volume_capability: cap }, CALL_TIMEOUT_MS);
      const after = bytesTotal(await v.stats());
      check(after > before + (to - from) / 2, `filesystem total ${before} → ${after} bytes`);
      check(v.read(0) === `before growth ${fsType}`, 'data lost across the growth');
      await v.teardown();
      await checkTargetGone(v.iqn, disks);
      return `refused while in use (${io.writes} fsynced writes went on); grown offline, filesystem ${before} → ${after} bytes online`;
    },
  };
}

const killedMidStage: Scenario = {
  name: 'the driver killed (SIGKILL) mid-stage and restarted: the retried stage converges',
  async run(d) {
    const disks = scsiDisks();
    const v = await provision(d, 'killed', mountCapability('ext4'), 'mount', 32 * MiB);
    const since = Date.now();
    const inFlight = v.stage().then(() => 'finished', (e: Error) => e.message);
    // kill it once it is inside the attach (after its login), or after a while at the latest
    for (let i = 0; i < 300 && loginsLogged(v.iqn, since) === 0; i++) await sleep(100);
    await d.kill('SIGKILL');
    const first = await inFlight;
    await d.start();
    await v.stage();
    check(mountsAt(v.staging).length === 1, 'not mounted after the retried stage');
    check((await sessions(v.iqn)).length === 1, 'not exactly one session after the retried stage');
    await v.publish();
    v.write('after a crash');
    await v.teardown();
    await checkTargetGone(v.iqn, disks);
    return `first call: ${first.slice(0, 60)}`;
  },
};

/** iscsid killed and started again (an upgrade, a crash and its restart): the kernel keeps the sessions. */
async function restartIscsid(): Promise<void> {
  await sh(['pkill', '-x', 'iscsid']);
  for (let i = 0; i < 100 && (await sh(['pgrep', '-x', 'iscsid'])).code === 0; i++) await sleep(100);
  await must(['iscsid']);
  await sleep(1_000);
}

const iscsidRestart: Scenario = {
  name: 'iscsid restarted while volumes are staged: I/O goes on, unstage logs out',
  async run(d) {
    const disks = scsiDisks();
    const v = await provision(d, 'iscsid-restart', mountCapability('ext4'), 'mount', 32 * MiB);
    await v.stage();
    await v.publish();
    v.write('before the restart');
    await restartIscsid();
    check((await sessions(v.iqn)).length === 1, 'the session is not listed after iscsid restarted');
    check(v.read(0) === 'before the restart', 'data unreadable after the restart');
    v.write('after the restart');
    check(v.read(0) === 'after the restart', 'write after the restart not read back');
    await v.teardown();
    await checkTargetGone(v.iqn, disks);
  },
};

interface Healing { enabled: boolean; intervalMs: number; orphanGraceMs: number; reapOrphans: boolean }

/** Runs `fn` on the driver restarted with `healing` over its current options; those are back after. */
async function withHealing<T>(d: Driver, healing: Healing, fn: () => Promise<T>): Promise<T> {
  const before = d.options;
  // configFile spreads `config` over the top level: the whole `node` map goes in, healing replaced
  const node = { ...(before.config?.node as object | undefined), healing };
  await d.restart({ ...before, config: { ...before.config, node } });
  try {
    return await fn();
  } finally {
    await d.restart(before);
  }
}

/** udev's by-path link of a LUN on PORTAL_A, the disk it leads to and that disk's session (nulls while there is none). */
function byPathDisk(iqn: string, lun: string): { link: string; disk: string | null; session: string | null } {
  const link = `/dev/disk/by-path/ip-${PORTAL_A}-iscsi-${iqn}-lun-${lun}`;
  try {
    const disk = basename(realpathSync(link));
    return { link, disk, session: diskSession(disk) };
  } catch {
    return { link, disk: null, session: null }; // no link yet
  }
}

const healingRelogin: Scenario = {
  name: "healing: a session logged out behind the driver's back (iscsid just restarted) is logged in again and its LUN rescanned; the data is intact",
  run: (d) => withHealing(d, { enabled: true, intervalMs: 1_000, orphanGraceMs: 600_000, reapOrphans: true }, async () => {
    const disks = scsiDisks();
    const v = await provision(d, 'heal-relogin', blockCapability(), 'block', 16 * MiB);
    const wwid = v.publishContext.wwid ?? '';
    const lun = v.volume.volume_context.lun!;
    await v.stage();
    await v.publish();
    const text = `healed ${Date.now()}`;
    v.write(text);
    const [old] = disksOf(wwid);
    check(old, `no disk with wwid ${wwid} after the stage: ${scsiDisks().join(', ')}`);
    const oldSession = diskSession(old);
    check(oldSession, `${old} is on no iSCSI session: ${realpathSync(`/sys/block/${old}/device`)}`);
    await restartIscsid();
    const since = Date.now();
    // the new iscsid takes the kernel's session over by logging in again on its connection: the session
    // is FAILED for a few seconds, and a logout meanwhile fails with 32 ("target likely not connected");
    // retried, as an operator would
    let logout: Cmd = { code: -1, stdout: '', stderr: '' };
    const t1 = performance.now();
    const loggedOut = await until(30_000, async () => (logout = await sh(['iscsiadm', '-m', 'node', '-T', v.iqn, '-p', PORTAL_A, '--logout'])).code === 0);
    check(loggedOut, `the logout kept failing: exit ${logout.code}: ${logout.stderr.trim()}`);
    const logoutS = (performance.now() - t1) / 1000;
    // by its session: the healer may already be logging in again, and its disk may take the old name
    check(!existsSync(`/sys/class/iscsi_session/${oldSession}`) && !disksOf(wwid).some((x) => diskSession(x) === oldSession), `${old} on ${oldSession} still there after the logout`);
    const t0 = performance.now();
    const healed = await until(60_000, async () => {
      const now = byPathDisk(v.iqn, lun).session;
      return now !== null && now !== oldSession && (await sessions(v.iqn)).length === 1
        && healerLogged(v.iqn, since).some((l) => l.msg === 'healer: session-login done');
    });
    const healS = (performance.now() - t0) / 1000;
    const s = await sessions(v.iqn);
    check(s.length === 1, `sessions of ${v.iqn} ${healS.toFixed(1)} s after the logout: ${JSON.stringify(s)}`);
    const { link, disk, session } = byPathDisk(v.iqn, lun);
    check(disk && session, `${link} does not resolve to a disk of a session ${healS.toFixed(1)} s after the logout; disks: ${scsiDisks().join(', ')}`);
    check(session !== oldSession, `${link} still leads to ${disk} on the old ${session}`);
    const kernel = readFileSync(`/sys/block/${disk}/device/wwid`, 'utf8').trim();
    check(kernel === wwid, `the new ${disk}'s wwid is ${kernel}, publish_context says ${wwid}`);
    const events = healerLogged(v.iqn, since);
    check(healed, `the healer logged for ${v.iqn}: ${JSON.stringify(events.map((l) => [l.msg, l.reason]))}`);
    const st = await v.stats();
    check(st.volume_condition?.abnormal === false, `volume_condition after healing: ${JSON.stringify(st.volume_condition)}`);
    // the publish target is a bind of the old /dev/sdX node (its inode, so its major:minor), whose disk
    // was deleted with the session: it leads to the new disk only if that happens to get the same
    // numbers. Read through the LUN's by-path link, which udev points at the new disk.
    const back = v.read(Buffer.byteLength(text), link);
    check(back === text, `read back ${JSON.stringify(back)} through ${link}, wrote ${JSON.stringify(text)}`);
    const viaTarget = (() => {
      try {
        return v.read(Buffer.byteLength(text)) === text ? 'reads the data' : 'reads other bytes';
      } catch (e) {
        return `fails (${(e as { code?: string }).code})`;
      }
    })();
    await v.teardown();
    await checkTargetGone(v.iqn, disks);
    return `logout through after ${logoutS.toFixed(1)} s; ${old} on ${oldSession} → ${disk} on ${session} ${healS.toFixed(1)} s after it; healer: ${events.map((l) => String(l.msg).slice(8)).join(', ')}; condition ${st.volume_condition.message}; the old publish target ${viaTarget}`;
  }),
};

/** The directory under <STATE>/volumes/ holding the record of `volumeId`. */
function recordDir(volumeId: string): string {
  const root = join(STATE, 'volumes');
  const dir = readdirSync(root).map((k) => join(root, k)).find((k) => {
    try {
      return (JSON.parse(readFileSync(join(k, 'iscsi.json'), 'utf8')) as { volumeId?: string }).volumeId === volumeId;
    } catch {
      return false;
    }
  });
  check(dir, `no record of ${volumeId} under ${root}: ${readdirSync(root).join(', ')}`);
  return dir;
}

/** An operator's own session, logged in by hand with a node record for this one target (no discovery). */
async function operatorLogin(iqn: string): Promise<void> {
  await must(['iscsiadm', '-m', 'node', '-o', 'new', '-T', iqn, '-p', PORTAL_A]);
  await must(['iscsiadm', '-m', 'node', '-T', iqn, '-p', PORTAL_A, '--login']);
}

/** The operator's session and node record gone again (either may already be: exit codes ignored). */
async function operatorLogout(iqn: string): Promise<void> {
  await sh(['iscsiadm', '-m', 'node', '-T', iqn, '-p', PORTAL_A, '--logout']);
  await sh(['iscsiadm', '-m', 'node', '-o', 'delete', '-T', iqn, '-p', PORTAL_A]);
}

const healingOrphans: Scenario = {
  name: "healing: orphans — a session of this driver whose volume record was lost is logged out after the grace period; an operator's own session is never touched",
  run: (d) => withHealing(d, { enabled: true, intervalMs: 1_000, orphanGraceMs: 3_000, reapOrphans: true }, async () => {
    const disks = scsiDisks();
    const started = Date.now();
    const a = await provision(d, 'orphan-a', blockCapability(), 'block', 16 * MiB);
    // published to this node by the controller (the target's ACL admits only published nodes), never staged
    const b = await provision(d, 'operator-b', blockCapability(), 'block', 16 * MiB);
    check(a.iqn !== b.iqn, `both volumes on target ${a.iqn}`);
    const [wwidA, wwidB] = [a.publishContext.wwid ?? '', b.publishContext.wwid ?? ''];
    const cleanUp = async () => {
      // A too: should the healer have left its session, the next scenarios must not find it
      for (const v of [b, a]) await operatorLogout(v.iqn);
      for (const v of [a, b]) await v.destroy();
    };
    let detail: string;
    try {
      await a.stage();
      check(disksOf(wwidA).length === 1, `disks of A after the stage: ${disksOf(wwidA).join(', ')}`);
      await operatorLogin(b.iqn);
      check(await until(30_000, () => disksOf(wwidB).length === 1), `no disk with B's wwid ${wwidB} after the hand login: ${scsiDisks().join(', ')}`);
      const diskB = disksOf(wwidB)[0]!;
      rmSync(recordDir(a.id), { recursive: true });
      const t0 = performance.now();
      const reapLines = ['healer: orphan-device done', 'healer: orphan-session done'];
      // the healer logs what it did once it has done it: the host can be clean a moment before the lines come
      const gone = async () => (await sessions(a.iqn)).length === 0 && (await nodeRecords(a.iqn)).length === 0 && disksOf(wwidA).length === 0
        && reapLines.every((msg) => healerLogged(a.iqn, started).some((l) => l.msg === msg));
      const reaped = await until(30_000, gone);
      const reapS = (performance.now() - t0) / 1000;
      const eventsA = healerLogged(a.iqn, started);
      const seen = async () => `sessions ${JSON.stringify(await sessions(a.iqn))}, node records ${JSON.stringify(await nodeRecords(a.iqn))}, disks ${disksOf(wwidA).join(', ')}; healer: ${JSON.stringify(eventsA.map((l) => [l.msg, l.reason]))}`;
      check(reaped, `A's orphan not reaped ${reapS.toFixed(1)} s after its record was removed: ${await seen()}`);
      for (const msg of reapLines) {
        check(eventsA.some((l) => l.msg === msg), `no "${msg}" line for ${a.iqn}: ${await seen()}`);
      }
      const sB = await sessions(b.iqn);
      check(sB.length === 1, `the operator's sessions of ${b.iqn}: ${JSON.stringify(sB)}`);
      check(disksOf(wwidB).includes(diskB), `the operator's disk ${diskB} is gone: disks with B's wwid ${disksOf(wwidB).join(', ')}`);
      const eventsB = healerLogged(b.iqn, started);
      check(eventsB.length === 0, `the healer logged for the operator's ${b.iqn}: ${JSON.stringify(eventsB)}`);
      detail = `reaped ${reapS.toFixed(1)} s after the record was removed (grace 3 s); healer on A: ${eventsA.map((l) => String(l.msg).slice(8)).join(', ')}; operator's ${diskB} kept`;
    } catch (e) {
      await cleanUp().catch(() => undefined);
      throw e;
    }
    await cleanUp();
    for (const v of [a, b]) await checkTargetGone(v.iqn, disks);
    return detail;
  }),
};

const ISCSI_LOCK_DIR = '/run/lock/iscsi';
const staleIscsiLock: Scenario = {
  name: "a stale open-iscsi record lock (an iscsiadm killed while writing) does not block the driver",
  async run(d) {
    const disks = scsiDisks();
    const v = await provision(d, 'stale-lock', blockCapability(), 'block', 16 * MiB);
    mkdirSync(ISCSI_LOCK_DIR, { recursive: true });
    const lock = join(ISCSI_LOCK_DIR, 'lock');
    if (!existsSync(lock)) writeFileSync(lock, '');
    await must(['ln', lock, join(ISCSI_LOCK_DIR, 'lock.write')]);
    await sleep(11_000); // older than timeouts.iscsiLockStaleMs (10 s): no live iscsiadm holds it that long
    const t0 = performance.now();
    await v.stage();
    const stageS = (performance.now() - t0) / 1000;
    check(!existsSync(join(ISCSI_LOCK_DIR, 'lock.write')), 'lock.write still there');
    await v.publish();
    v.write('past a stale lock');
    await v.teardown();
    await checkTargetGone(v.iqn, disks);
    return `stage ${stageS.toFixed(1)} s`;
  },
};

const MULTIPATH_CONF = '/etc/multipath.conf';
function multipath(findMultipaths: 'yes' | 'no', kind: 'mount' | 'block'): Scenario {
  return {
    name: `multipath over two portals, multipathd with user_friendly_names yes, find_multipaths ${findMultipaths} (${kind === 'mount' ? 'ext4' : 'block'})`,
    async run(d) {
      const disks = scsiDisks();
      writeFileSync(MULTIPATH_CONF, `defaults {\n    user_friendly_names yes\n    find_multipaths ${findMultipaths}\n    failback immediate\n    no_path_retry fail\n}\n`);
      if ((await sh(['pgrep', '-x', 'multipathd'])).code === 0) await must(['multipathd', 'reconfigure']);
      else await must(['multipathd']);
      await sleep(1_000);
      await d.restart({ portals: [PORTAL_A, PORTAL_B], config: { timeouts: { multipathWaitMs: 60_000 } } });
      let cleanup: (() => Promise<void>) | undefined;
      try {
        const cap = kind === 'mount' ? mountCapability('ext4') : blockCapability();
        const v = await provision(d, `mpath-${findMultipaths}-${kind}`, cap, kind, 32 * MiB);
        cleanup = () => v.teardown();
        await v.stage();
        const s = await sessions(v.iqn);
        check(s.length === 2, `${s.length} sessions, not one per portal`);
        const maps = dmDevices();
        check(maps.length === 1, `dm devices: ${maps.join(', ')}`);
        // find_multipaths no: multipathd makes the map from the first path and adds the second as it
        // comes (the stage may already be done on the map by then)
        let slaves: string[] = [];
        for (let i = 0; i < 120 && (slaves = readdirSync(`/sys/block/${maps[0]}/slaves`)).length < 2; i++) await sleep(500);
        check(slaves.length === 2, `the map has paths ${slaves.join(', ')} after 60 s`);
        const mapName = readFileSync(`/sys/block/${maps[0]}/dm/name`, 'utf8').trim();
        if (kind === 'mount') {
          const m = mountsAt(v.staging);
          check(m.length === 1 && (m[0]!.source === `/dev/${maps[0]}` || m[0]!.source === `/dev/mapper/${mapName}`), `mounted from ${JSON.stringify(m)}, not the map ${maps[0]} (${mapName})`);
        }
        await v.publish();
        v.write(`multipath ${findMultipaths}`);
        check(v.read(Buffer.byteLength(`multipath ${findMultipaths}`)) === `multipath ${findMultipaths}`, 'data not read back');
        cleanup = undefined;
        await v.teardown();
        check(dmDevices().length === 0, `maps left: ${dmDevices().join(', ')}`);
        await checkTargetGone(v.iqn, disks);
        return `map ${mapName} over ${slaves.join(' + ')}`;
      } finally {
        // a failed check must not leave its map and sessions to the next scenario
        await cleanup?.().catch(() => undefined);
        await d.restart({});
      }
    },
  };
}

const stopMultipathd: Scenario = {
  name: 'multipathd stopped: later single-path volumes are plain SCSI disks again',
  async run(d) {
    await sh(['multipathd', 'shutdown']);
    for (let i = 0; i < 100 && (await sh(['pgrep', '-x', 'multipathd'])).code === 0; i++) await sleep(100);
    rmSync(MULTIPATH_CONF, { force: true });
    await lifecycle('block', 16 * MiB).run(d);
    check(dmDevices().length === 0, 'a dm device appeared without multipathd');
  },
};

// ---- iscsi-csi doctor on the real kernel ---------------------------------------------------------

interface DoctorJson {
  mode: string;
  checks: { name: string; status: 'ok' | 'warn' | 'fail'; detail: string; fix: string | null }[];
  summary: { ok: number; warn: number; fail: number };
  notes: string[];
}

/** The doctor as an operator runs it on a node: the built CLI, the driver's config file, --json; its output kept in the work dir. */
async function runDoctorCli(config: string, saveAs: string): Promise<{ code: number; doc: DoctorJson; seconds: number; byName: Record<string, DoctorJson['checks'][number]> }> {
  const t0 = performance.now();
  const r = await sh([process.execPath, join(APP, 'dist/bundle/cli.js'), 'doctor', '--json', '--mode', 'all', '--config', config], 120_000);
  const seconds = (performance.now() - t0) / 1000;
  writeFileSync(join(WORK, saveAs), `${r.stdout}${r.stderr ? `--- stderr ---\n${r.stderr}` : ''}--- exit ${r.code} after ${seconds.toFixed(1)} s\n`);
  check(r.stderr.trim() === '', `the doctor wrote to stderr (exit ${r.code}): ${r.stderr.trim().slice(0, 300)}`);
  let doc: DoctorJson;
  try {
    doc = JSON.parse(r.stdout) as DoctorJson;
  } catch {
    throw new Error(`the doctor printed no JSON (exit ${r.code}): ${r.stdout.slice(0, 300)}`);
  }
  for (const c of doc.checks) {
    if (c.status === 'ok') check(c.fix === null, `${c.name} is ok with a fix: ${c.fix}`);
    else check(typeof c.fix === 'string' && c.fix.length > 10, `${c.name} is ${c.status} without a fix: ${c.detail}`);
  }
  return { code: r.code, doc, seconds, byName: Object.fromEntries(doc.checks.map((c) => [c.name, c])) };
}

function statusesOf(doc: DoctorJson): Record<string, string> {
  return Object.fromEntries(doc.checks.map((c) => [c.name, c.status]));
}

function expectStatuses(doc: DoctorJson, want: Record<string, string>, when: string): void {
  const got = statusesOf(doc);
  check(JSON.stringify(got) === JSON.stringify(want), `${when}: statuses ${JSON.stringify(got)}, expected ${JSON.stringify(want)}; ${doc.checks.filter((c) => c.status !== want[c.name]).map((c) => `${c.name}: ${c.detail}`).join(' | ')}`);
}

/**
 * The node plugin's start-up checks in driver.log since `since`: the info summary after that start's
 * "serving" line and the warn line of each check that is not ok (by check name).
 */
async function startupChecks(since: number): Promise<{ summary: string; warned: Record<string, Record<string, unknown>> }> {
  let lines: Record<string, unknown>[] = [];
  const isSummary = (l: Record<string, unknown>) => l.component === 'doctor' && /^node checks: /.test(String(l.msg));
  const logged = await until(60_000, () => (lines = driverLogLines().filter((l) => Date.parse(String(l.time)) >= since)).some(isSummary));
  check(logged, 'the node plugin logged no "node checks:" summary within 60 s of its start');
  const serving = lines.findIndex((l) => l.msg === 'serving');
  const at = lines.findIndex(isSummary);
  check(serving >= 0 && at > serving, `the start-up checks were not logged after "serving" (serving at ${serving}, summary at ${at})`);
  check(lines[at]!.level === 'info', `the summary is at level ${String(lines[at]!.level)}`);
  const warned: Record<string, Record<string, unknown>> = {};
  for (const l of lines.slice(serving)) {
    if (l.component !== 'doctor' || l.level !== 'warn' || typeof l.check !== 'string') continue;
    check(typeof l.fix === 'string' && l.fix.length > 10 && l.msg === `node check ${l.check}: ${String(l.status)}`, `a start-up warn line without its fix: ${JSON.stringify(l)}`);
    warned[l.check] = l;
  }
  return { summary: String(lines[at]!.msg).replace(/ \(.*$/, ''), warned };
}

/** Starts a daemon that forks into the background (its first process exits), its output appended to `log`. */
function startDaemon(argv: string[], log: string): Promise<number> {
  const out = openSync(log, 'a');
  const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', out, out] });
  closeSync(out);
  return new Promise((resolve) => {
    p.once('error', () => resolve(127));
    p.once('exit', (code) => resolve(code ?? 1));
  });
}

const running = async (name: string) => (await sh(['pgrep', '-x', name])).code === 0;
const ISCSID_CONTROL = '@ISCSIADM_ABSTRACT_NAMESPACE';
const iscsidListens = () => readFileSync('/proc/net/unix', 'utf8').split('\n').some((l) => l.trimEnd().endsWith(` ${ISCSID_CONTROL}`));

async function stopIscsid(): Promise<void> {
  await sh(['pkill', '-x', 'iscsid']);
  check(await until(10_000, async () => !(await running('iscsid')) && !iscsidListens()), 'iscsid still runs 10 s after SIGTERM');
}

async function startIscsid(): Promise<void> {
  if (!(await running('iscsid'))) await must(['iscsid']);
  check(await until(10_000, iscsidListens), `iscsid does not listen on ${ISCSID_CONTROL} 10 s after its start`);
}

async function stopMultipathdNow(): Promise<void> {
  await sh(['multipathd', 'shutdown']);
  check(await until(10_000, async () => !(await running('multipathd'))), 'multipathd still runs 10 s after shutdown');
}

async function startMultipathd(): Promise<void> {
  if (!(await running('multipathd'))) await must(['multipathd']);
  check(await until(10_000, async () => (await sh(['multipathd', 'show', 'status'])).code === 0), 'multipathd does not answer 10 s after its start');
}

const tgtShow = async (mode: 'target' | 'portal') => (await must(['tgtadm', '--lld', 'iscsi', '--op', 'show', '--mode', mode])).split('\n')
  .map((l) => (mode === 'target' ? /^Target \d+: (\S+)/ : /^Portal: (\S+)/).exec(l)?.[1]).filter((x): x is string => !!x).sort();

/** As tgt.service stops it (`tgtadm --op delete --mode system`); tgtd refuses that while it has targets: then it is killed, as in a crash. */
async function stopTgtd(): Promise<string> {
  const r = await sh(['tgtadm', '--op', 'delete', '--mode', 'system']);
  let how = 'tgtadm --op delete --mode system';
  if (r.code !== 0) {
    await sh(['pkill', '-KILL', '-x', 'tgtd']);
    how = `SIGKILL (delete --mode system refused: ${firstLineOf(r)})`;
  }
  check(await until(10_000, async () => !(await running('tgtd'))), `tgtd still runs 10 s after ${how}`);
  return how;
}

/** tgtd as guest.sh starts it: portal A on the command line, portal B added at run time. */
async function startTgtd(): Promise<void> {
  if (await running('tgtd')) return;
  await startDaemon(['tgtd', '--iscsi', `portal=${PORTAL_A}`], join(WORK, 'tgtd.log'));
  check(await until(10_000, async () => (await sh(['tgtadm', '--op', 'show', '--mode', 'sys'])).code === 0), 'tgtd does not answer 10 s after its start');
  await must(['tgtadm', '--op', 'new', '--mode', 'portal', '--param', `portal=${PORTAL_B}`]);
}

function firstLineOf(r: Cmd): string {
  return (r.stderr.trim() || r.stdout.trim()).split('\n')[0] ?? '';
}

const KUBELET_DEFAULT = '/var/lib/kubelet';

/** multipathd's find_multipaths as `multipathd show config` prints it for this multipath.conf ("yes" is "on"); none set: strict. */
function findMultipathsOf(conf: string): string {
  const v = /^\s*find_multipaths\s+"?(\w+)"?/m.exec(conf)?.[1] ?? 'strict';
  return ({ yes: 'on', no: 'off' } as Record<string, string>)[v] ?? v;
}

const doctorScenario: Scenario = {
  name: 'doctor on the real kernel: iscsid, multipathd and tgtd stopped and read-only state and pool dirs each reported with their fix (exit 1), the start-up log too; all back: every check ok (exit 0)',
  async run(d) {
    const dir = join(BASE, 'doctor');
    const readOnly = join(dir, 'read-only');
    mkdirSync(readOnly, { recursive: true });
    const driverConfig = join(BASE, 'driver.json');
    // the guest as the scenario found it, to put back
    const multipathdWas = await running('multipathd');
    const confWas = existsSync(MULTIPATH_CONF) ? readFileSync(MULTIPATH_CONF, 'utf8') : undefined;
    const kubeletWas = existsSync(KUBELET_DEFAULT);
    const [targetsWere, portalsWere] = [await tgtShow('target'), await tgtShow('portal')];
    const mounted: string[] = [];
    const times: string[] = [];
    const timed = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
      const t0 = performance.now();
      const v = await fn();
      times.push(`${what} ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      return v;
    };
    try {
      // kubelet's dir on a shared mount, as on a node booted by systemd (the guest's init leaves mounts private)
      mkdirSync(KUBELET_DEFAULT, { recursive: true });
      await must(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'doctor-kubelet', KUBELET_DEFAULT]);
      mounted.push(KUBELET_DEFAULT);
      await must(['mount', '--make-shared', KUBELET_DEFAULT]);
      await must(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'doctor-read-only', readOnly]);
      mounted.push(readOnly);
      if (!multipathdWas && confWas === undefined) writeFileSync(MULTIPATH_CONF, 'defaults {\n    user_friendly_names yes\n    find_multipaths yes\n}\n');
      const conf = readFileSync(MULTIPATH_CONF, 'utf8');

      // broken, the real way: iscsid killed, multipathd shut down; the node plugin started on that host
      await stopIscsid();
      if (multipathdWas) await stopMultipathdNow();
      let since = Date.now();
      await timed('driver restart', () => d.restart());
      const broken = await startupChecks(since);
      check(JSON.stringify(Object.keys(broken.warned).sort()) === JSON.stringify([CHECK.iscsid, CHECK.multipathd].sort()), `start-up warn lines for ${Object.keys(broken.warned).join(', ')}: ${JSON.stringify(broken.warned)}`);
      check(broken.warned[CHECK.iscsid]!.status === 'fail' && broken.warned[CHECK.multipathd]!.status === 'warn', `start-up statuses: iscsid ${String(broken.warned[CHECK.iscsid]!.status)}, multipathd ${String(broken.warned[CHECK.multipathd]!.status)}`);
      check(broken.summary === 'node checks: 5 ok, 1 warn, 1 fail', `start-up summary: ${broken.summary}`);
      // and tgtd stopped; the state dir and the pool dir on a read-only filesystem (the pool dir not there yet)
      const tgtdStop = await stopTgtd();
      const brokenConfig = join(dir, 'broken.json');
      const cfg = JSON.parse(readFileSync(driverConfig, 'utf8')) as { controller: { tgt: Record<string, unknown> } };
      writeFileSync(brokenConfig, JSON.stringify({ ...cfg, stateDir: readOnly, controller: { ...cfg.controller, tgt: { ...cfg.controller.tgt, poolDir: join(readOnly, 'pool') } } }, null, 2));
      const b = await timed('doctor (broken)', () => runDoctorCli(brokenConfig, 'doctor-broken.json'));
      expectStatuses(b.doc, {
        [CHECK.iscsiadm]: 'ok', [CHECK.iscsid]: 'fail', [CHECK.initiatorName]: 'ok', [CHECK.iscsiTcp]: 'ok', [CHECK.multipathd]: 'warn',
        [CHECK.kubeletDir]: 'ok', [CHECK.stateDir]: 'fail', [CHECK.tgtd]: 'fail', [CHECK.tgtPool]: 'fail',
      }, 'iscsid, multipathd and tgtd stopped, read-only dirs');
      check(b.code === 1, `the doctor exited ${b.code} with checks failed`);
      const c = b.byName;
      check(c[CHECK.iscsid]!.detail.includes(`nothing listens on iscsid's control socket ${ISCSID_CONTROL} in /proc/self/net/unix`) && c[CHECK.iscsid]!.fix!.includes('iscsid'), `iscsid: ${c[CHECK.iscsid]!.detail} / ${c[CHECK.iscsid]!.fix}`);
      check(/^not running \(multipathd show config exited 1/.test(c[CHECK.multipathd]!.detail) && c[CHECK.multipathd]!.fix!.includes('systemctl enable --now multipathd'), `multipathd: ${c[CHECK.multipathd]!.detail} / ${c[CHECK.multipathd]!.fix}`);
      check(c[CHECK.stateDir]!.detail === `cannot write in ${readOnly}: it is on a read-only filesystem` && c[CHECK.stateDir]!.fix!.includes(`make ${readOnly} writable`), `state dir: ${c[CHECK.stateDir]!.detail} / ${c[CHECK.stateDir]!.fix}`);
      check(c[CHECK.tgtPool]!.detail === `${join(readOnly, 'pool')} does not exist and ${readOnly} is not writable: it is on a read-only filesystem` && c[CHECK.tgtPool]!.fix!.startsWith('set controller.tgt.poolDir to a path on a writable filesystem'), `tgt pool dir: ${c[CHECK.tgtPool]!.detail} / ${c[CHECK.tgtPool]!.fix}`);
      check(c[CHECK.tgtd]!.detail.startsWith('tgtd is not reachable through tgtadm -C 0: ') && c[CHECK.tgtd]!.fix!.includes('start tgtd'), `tgtd: ${c[CHECK.tgtd]!.detail} / ${c[CHECK.tgtd]!.fix}`);
      // the module is loaded: this host has an initiator whose iscsid is down, not "no kernel initiator"
      check(b.doc.notes.length === 0, `notes: ${b.doc.notes.join(' ')}`);

      // all back as guest.sh started it; the node plugin started again on the healthy host
      await startIscsid();
      await startMultipathd();
      await startTgtd();
      // find_multipaths as the guest's multipath.conf sets it; multipath-tools' default strict would warn
      const fm = findMultipathsOf(conf);
      const multipathdWant = fm === 'strict' ? 'warn' : 'ok';
      since = Date.now();
      await timed('driver restart', () => d.restart());
      const healthy = await startupChecks(since);
      const startupWant = multipathdWant === 'ok' ? 'node checks: 7 ok, 0 warn, 0 fail' : 'node checks: 6 ok, 1 warn, 0 fail';
      check(healthy.summary === startupWant && Object.keys(healthy.warned).every((n) => n === CHECK.multipathd), `start-up on the healthy host: ${healthy.summary}; ${JSON.stringify(healthy.warned)}`);
      // the controller restored what tgtd had (nothing, unless a scenario before left targets)
      check(await until(60_000, async () => JSON.stringify(await tgtShow('target')) === JSON.stringify(targetsWere)), `tgtd's targets ${JSON.stringify(await tgtShow('target'))}, before ${JSON.stringify(targetsWere)}`);
      check(JSON.stringify(await tgtShow('portal')) === JSON.stringify(portalsWere), `tgtd's portals ${JSON.stringify(await tgtShow('portal'))}, before ${JSON.stringify(portalsWere)}`);
      const h = await timed('doctor (healthy)', () => runDoctorCli(driverConfig, 'doctor-healthy.json'));
      expectStatuses(h.doc, {
        [CHECK.iscsiadm]: 'ok', [CHECK.iscsid]: 'ok', [CHECK.initiatorName]: 'ok', [CHECK.iscsiTcp]: 'ok', [CHECK.multipathd]: multipathdWant,
        [CHECK.kubeletDir]: 'ok', [CHECK.stateDir]: 'ok', [CHECK.tgtd]: 'ok', [CHECK.tgtPool]: 'ok',
      }, 'the guest as set up');
      check(h.code === 0, `the doctor exited ${h.code} on the healthy guest`);
      const k = h.byName;
      const iscsiadmVersion = /version (\S+)/.exec(await must(['iscsiadm', '--version']))?.[1];
      check(k[CHECK.iscsiadm]!.detail.startsWith(`iscsiadm version ${iscsiadmVersion} (host access: none`), `iscsiadm: ${k[CHECK.iscsiadm]!.detail}`);
      check(k[CHECK.iscsid]!.detail.startsWith(`listening on ${ISCSID_CONTROL} (/proc/self/net/unix)`), `iscsid: ${k[CHECK.iscsid]!.detail}`);
      check(k[CHECK.initiatorName]!.detail.startsWith(`${d.nodeId} (the node id)`), `initiator name: ${k[CHECK.initiatorName]!.detail}, node id ${d.nodeId}`);
      check(k[CHECK.iscsiTcp]!.detail === 'loaded (/sys/module/iscsi_tcp)', `iscsi_tcp: ${k[CHECK.iscsiTcp]!.detail}`);
      check(k[CHECK.multipathd]!.detail.startsWith(`running; find_multipaths ${fm} `) && k[CHECK.multipathd]!.detail.includes('user_friendly_names yes'), `multipathd (multipath.conf: find_multipaths ${fm}): ${k[CHECK.multipathd]!.detail}`);
      check(/^\/var\/lib\/kubelet .*is on mount \S+, propagation shared:\d+: /.test(k[CHECK.kubeletDir]!.detail), `kubelet dir: ${k[CHECK.kubeletDir]!.detail}`);
      check(k[CHECK.tgtd]!.detail === 'tgtd answers on control port 0: state ready, iscsi driver ready', `tgtd: ${k[CHECK.tgtd]!.detail}`);
      check(readdirSync(STATE).every((n) => !n.startsWith('.doctor-probe-')), `a probe file is left in ${STATE}`);
      const notOk = (doc: DoctorJson) => doc.checks.filter((x) => x.status !== 'ok').map((x) => `${x.name} ${x.status}`).join(', ');
      return `broken (tgtd stopped by ${tgtdStop}): ${notOk(b.doc)}, exit 1; start-up log: ${Object.values(broken.warned).map((l) => `${String(l.check)} ${String(l.status)}`).join(', ')} (${broken.summary.slice(13)}); all back: start-up ${healthy.summary.slice(13)}, doctor ${h.doc.summary.ok} ok${multipathdWant === 'ok' ? '' : `, multipathd ${multipathdWant}`} (find_multipaths ${fm}), exit 0; ${times.join(', ')}`;
    } finally {
      // whatever failed: the daemons as guest.sh left them, multipathd as found, the mounts gone
      await startIscsid().catch(() => undefined);
      await startTgtd().catch(() => undefined);
      if (multipathdWas) await startMultipathd().catch(() => undefined);
      else if (await running('multipathd')) await stopMultipathdNow().catch(() => undefined);
      if (confWas === undefined) rmSync(MULTIPATH_CONF, { force: true });
      for (const m of mounted.reverse()) await sh(['umount', m]);
      try {
        if (!kubeletWas) rmSync(KUBELET_DEFAULT, { recursive: true, force: true });
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // still mounted (umount failed): left for the guest's end
      }
    }
  },
};

function sanity(access: 'mount' | 'block'): Scenario {
  return {
    name: `csi-sanity v5.5.0, the whole suite, ${access} volumes (controller on the guest's tgtd, node on the real kernel)`,
    async run() {
      const bin = join(WORK, 'csi-sanity');
      check(existsSync(bin), `no csi-sanity binary at ${bin}`);
      const dir = join(BASE, `sanity-${access}`);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      const r = await sh([bin, '--csi.endpoint', `unix://${SOCKET}`, '--csi.mountdir', join(dir, 'target'), '--csi.stagingdir', join(dir, 'staging'),
        '--csi.testvolumesize', String(32 * MiB), '--csi.testvolumeaccesstype', access, '--ginkgo.no-color'], 1_800_000);
      writeFileSync(join(WORK, `sanity-${access}.log`), r.stdout + r.stderr);
      const summary = /(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped/.exec(r.stdout);
      check(summary !== null, `csi-sanity printed no summary (exit ${r.code}): ${r.stdout.slice(-300)}`);
      const failedSpecs = [...r.stdout.matchAll(/\[FAIL\] (.+)/g)].map((m) => m[1]!.trim());
      check(r.code === 0 && summary[2] === '0', `${summary[2]} failed: ${[...new Set(failedSpecs)].slice(0, 3).join(' | ')}`);
      return `${summary[1]} passed, ${summary[2]} failed, ${summary[4]} skipped by capability`;
    },
  };
}

const SCENARIOS: Scenario[] = [
  lifecycle('ext4', 32 * MiB),
  lifecycle('xfs', 320 * MiB),
  lifecycle('block', 16 * MiB),
  wwid,
  twoLuns,
  chap,
  ownInitiator,
  deadPortal,
  snapshotRestore,
  expansion('ext4', 64 * MiB, 128 * MiB),
  expansion('xfs', 320 * MiB, 400 * MiB),
  killedMidStage,
  iscsidRestart,
  healingRelogin,
  healingOrphans,
  staleIscsiLock,
  // a few volumes at once (a pod with several volumes): the guest's CPUs are not saturated here
  storm('mount', 4),
  storm('mount', 16),
  storm('block', 32),
  multipath('yes', 'mount'),
  multipath('no', 'block'),
  doctorScenario,
  stopMultipathd,
  sanity('mount'),
  sanity('block'),
];

// ---- runner ------------------------------------------------------------------------------------

async function main(): Promise<void> {
  rmSync(BASE, { recursive: true, force: true });
  mkdirSync(KUBELET, { recursive: true });
  // the emulation's speed varies from machine to machine by 2× and more: a bare node start (median of
  // 3) is the yardstick the other times here can be compared by across runs
  const bare: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    await must([process.execPath, '-e', '0']);
    bare.push(performance.now() - started);
  }
  const d = new Driver();
  const t0 = performance.now();
  await d.start();
  process.stdout.write(`# driver serving after ${((performance.now() - t0) / 1000).toFixed(1)} s (a bare node start: ${(bare.sort((a, b) => a - b)[1]! / 1000).toFixed(1)} s), node ${d.nodeId}\n`);
  let n = 0;
  let failures = 0;
  for (const s of SCENARIOS) {
    if (ONLY.length > 0 && !ONLY.some((o) => s.name.includes(o))) continue;
    n += 1;
    const started = performance.now();
    appendFileSync(DRIVER_LOG, `### scenario ${n}: ${s.name}\n`);
    try {
      if (d.proc?.exitCode !== null) await d.start();
      const detail = await s.run(d);
      process.stdout.write(`ok ${n} ${s.name} (${((performance.now() - started) / 1000).toFixed(1)} s${detail ? `; ${detail}` : ''})\n`);
    } catch (e) {
      failures += 1;
      const msg = (e as { details?: string; message?: string }).details ?? (e as Error).message;
      process.stdout.write(`not ok ${n} ${s.name} (${((performance.now() - started) / 1000).toFixed(1)} s): ${String(msg).replace(/\n/g, ' ')}\n`);
    }
  }
  await d.kill('SIGTERM');
  process.exit(failures > 0 ? 1 : 0);
}

void main();
