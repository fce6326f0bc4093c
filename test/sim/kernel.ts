// The simulated kernel iSCSI initiator: the single owner of the simulated state under R (sysfs,
// /dev, loop devices, dm maps). It runs in one process (kernel-main.ts) and takes work in arrival
// order: fake-iscsiadm calls and delete/rescan writes run one at a time, each after everything that
// arrived before it; LUN scans that arrive together run side by side (a real kernel scans LUNs in
// parallel and udev makes their links concurrently), their shared state guarded below.
//
// What a login produces (open-iscsi.md §4): a SCSI host and session with their class links,
// a connection, and per node.session.scan the LUNs' SCSI devices; a disk LUN's block device is the
// LUN's backing file (found through `tgtadm --op show` on the tgtd serving the portal) on ONE shared
// loop device, with a real device node made by mknod and the udev-style /dev/disk links.
import { spawn, type ChildProcess } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseTgtPortals, parseTgtTargets, type TgtLun, type TgtTarget } from '../../src/controller/tgt/tgtadm.js';
import { readFaults, type Faults } from './faults.js';
import { IscsiDb, nodeIdOf, type NodeId } from './iscsi-db.js';
import { loginCheck, type Chap, type LoginFailure } from './libiscsi.js';
import { readMountInfo } from './mountinfo.js';
import { kernelWwid, tgtNaa, tgtVpd83 } from './vpd.js';
import { simPaths, type SimPaths } from './paths.js';
import type { Rec } from './records.js';
import {
  ControlFifo, NodePool, execTool, mustExec, relLink, removeLinkIfTo, writeAttrs,
} from './sysfs.js';

export type LogFn = (level: 'debug' | 'info' | 'warn' | 'error', msg: string, extra?: Record<string, unknown>) => void;

export interface KernelOptions {
  root: string;
  multipath: boolean;
  /** control ports (`tgtadm -C N`) of the tgtds whose portals this host logs into */
  tgtdControlPorts: number[];
  log: LogFn;
}

const SECTOR = 512;
const FIRST_HOST_NO = 2; // host0/host1 are usually the local disk controllers on a real node
const TGT_VENDOR = 'IET';
const TGT_REV = '0001';
const SCSI_TYPE: Record<string, number> = { disk: 0, tape: 1, 'cd/dvd': 5, changer: 8, controller: 12 };
const TGT_PRODUCT: Record<string, string> = { disk: 'VIRTUAL-DISK', controller: 'Controller', 'cd/dvd': 'VIRTUAL-CDROM', tape: 'VIRTUAL-TAPE', changer: 'VIRTUAL-CHANGER' };
const TGTD_SOCKET_DIR = '/var/run/tgtd';
const LOOP_MAJOR = 7;
/** Where the real kernel lists block devices: free loop devices are found there (no `loop/backing_file`). */
const HOST_SYS_BLOCK = '/sys/block';
/** Attempts at binding a free loop device that another process may take first, before `losetup -f`. */
const LOOP_ATTACH_ATTEMPTS = 8;
/** How long a bind through the xargs helper may take before it is checked and done by a plain spawn. */
const LOOP_BIND_TIMEOUT_MS = 10_000;
/** losetup's error line: `losetup: <file or device>: failed to set up loop device: <reason>` */
const LOSETUP_FAILED_RE = /^losetup: (.+): failed to set up loop device(?:: (.*))?$/;
/** tmpfs sources of the simulated sysfs and /dev, as they show in mountinfo */
export const SYSFS_SOURCE = 'sim-sysfs';
export const DEVTMPFS_SOURCE = 'sim-devtmpfs';

export interface Loop {
  device: string; // /dev/loopN
  name: string; // loopN
  major: number;
  minor: number;
  backing: string;
  refs: number;
}

export interface Disk {
  name: string; // sdX
  loop: Loop;
  sectors: number;
  readonly: boolean;
  blockDir: string;
}

export interface ScsiDevice {
  session: Session;
  lun: number;
  hctl: string;
  dir: string;
  type: number;
  vendor: string;
  model: string;
  /** 32 hex digits of the NAA-6 designator tgt reports (sysfs wwid = naa.<hex>, multipath WWID = 3<hex>) */
  naa: string;
  state: string;
  disk?: Disk;
  fifos: ControlFifo[];
}

export interface Session {
  sid: number;
  host: number;
  target: string;
  tpgt: number;
  address: string; // current (resolved) address
  port: number;
  persistentAddress: string; // as in the record
  persistentPort: number;
  iface: string;
  transport: string;
  initiatorName: string;
  node: NodeId;
  chapUsername: string;
  chapUsernameIn: string;
  recoveryTmo: number;
  abortTmo: number;
  luResetTmo: number;
  tgtResetTmo: number;
  state: 'LOGGED_IN' | 'FAILED';
  tgtdControl?: number;
  hostDir: string;
  sessionDir: string;
  devices: Map<number, ScsiDevice>;
  scanFifo?: ControlFifo;
}

export interface DmMap {
  index: number;
  name: string;
  /** multipath WWID: "3" + NAA hex */
  wwid: string;
  naa: string;
  loop: Loop;
  sectors: number;
  dir: string;
  paths: ScsiDevice[];
}

export type LoginResult = { ok: true; session: Session } | { ok: false; code: number; failure: LoginFailure; message: string };

export interface SessionSummary {
  sid: number;
  host: number;
  target: string;
  portal: string;
  iface: string;
  initiatorName: string;
  state: string;
  devices: { lun: number; hctl: string; name?: string; loop?: string; dm?: string; sizeBytes?: number }[];
}

export { tgtNaa };

/** sd naming: 0 → sda, 25 → sdz, 26 → sdaa. */
export function sdName(index: number): string {
  let name = '';
  let i = index;
  do {
    name = String.fromCharCode(97 + (i % 26)) + name;
    i = Math.floor(i / 26) - 1;
  } while (i >= 0);
  return `sd${name}`;
}

/** user_friendly_names: mpatha … mpathz, mpathaa … */
function mpathName(index: number): string {
  return `mpath${sdName(index).slice(2)}`;
}

export interface ScanSpec { channel: string; id: string; lun: string }

/**
 * Parses what was written to `scan`: "C T L" triples ('-' = wildcard). Writes that reach the FIFO
 * before the kernel reads are concatenated without a separator ("0 0 10 0 2"). Channel and target id
 * are always a single '0' or '-' for software iSCSI, so a LUN token not followed by two such tokens
 * (and a full triple) has swallowed the next write's channel: its last character is split off.
 */
export function parseScanWrites(text: string): ScanSpec[] {
  const tokens = text.split(/\s+/).filter(Boolean);
  const single = (s: string | undefined): boolean => s === '0' || s === '-';
  const lunRe = /^(\d+|-)$/;
  const out: ScanSpec[] = [];
  let i = 0;
  while (i + 2 < tokens.length) {
    const channel = tokens[i]!;
    const id = tokens[i + 1]!;
    let lun = tokens[i + 2]!;
    i += 3;
    const rest = tokens.length - i;
    const separate = rest === 0 || (rest >= 3 && single(tokens[i]) && single(tokens[i + 1]) && lunRe.test(lun));
    if (!separate && lun.length > 1 && /[0-]$/.test(lun)) {
      tokens[--i] = lun.slice(-1);
      lun = lun.slice(0, -1);
    }
    if (single(channel) && single(id) && lunRe.test(lun)) out.push({ channel, id, lun });
  }
  return out;
}

/** A FIFO mutex: the caller's function runs once every earlier caller's has finished. */
class Mutex {
  private last: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.last.then(fn, fn);
    this.last = next.catch(() => undefined);
    return next;
  }
}

/**
 * A fetch shared by concurrent callers without ever answering from before the call: a caller joins
 * the next fetch that has not started yet (starting it when none runs), never one already under way.
 * A storm of scans costs a `tgtadm show` or two instead of one each, and each scan still sees
 * targets and LUNs created before its scan write.
 */
class FreshFetch<T> {
  private running: Promise<T> | undefined;
  private next: Promise<T> | undefined;

  constructor(private readonly fetch: () => Promise<T>) {}

  get(): Promise<T> {
    if (this.next) return this.next;
    if (!this.running) return this.start();
    const next = this.running.then(() => undefined, () => undefined).then(() => {
      this.next = undefined;
      return this.start();
    });
    this.next = next;
    return next;
  }

  private start(): Promise<T> {
    const p = this.fetch();
    this.running = p;
    const done = (): void => {
      if (this.running === p) this.running = undefined;
    };
    p.then(done, done);
    return p;
  }
}

type BindOutcome = { ok: true; device: string } | { ok: false; busy: boolean; message: string };

/**
 * Runs `losetup --show [-r] /dev/loopN FILE` through one long-lived `xargs -0 -n 3 -P 0 losetup
 * --show`. A spawn from this Node process blocks its event loop for a fork and exec (2–4 ms here), so
 * a storm's attaches spawned from here come up one after another; xargs, a small C process, forks
 * them in a fraction of that and they run side by side, as a real kernel probes disks in parallel.
 * A request ends with losetup's `--show` line (the device) or its error line (naming the file or the
 * device); `undefined` when neither came in time or the helper went away: the caller then checks and
 * falls back to a plain spawn.
 */
class LoopBinder {
  private helper: ChildProcess | undefined;
  private unavailable = false;
  private readonly waiting = new Map<string, { file: string; settle: (r: BindOutcome | undefined) => void }>();

  constructor(private readonly log: LogFn) {}

  bind(device: string, file: string, readonly: boolean): Promise<BindOutcome | undefined> {
    const helper = this.start();
    if (!helper?.stdin?.writable) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const timer = setTimeout(() => settle(undefined), LOOP_BIND_TIMEOUT_MS);
      const settle = (r: BindOutcome | undefined): void => {
        clearTimeout(timer);
        if (this.waiting.get(device)?.settle === settle) this.waiting.delete(device);
        resolve(r);
      };
      this.waiting.set(device, { file, settle });
      // `--show` twice is harmless: it keeps three arguments per call whether or not `-r` is wanted
      helper.stdin!.write(`${[readonly ? '-r' : '--show', device, file].join('\0')}\0`);
    });
  }

  close(): void {
    const helper = this.helper;
    this.helper = undefined;
    this.unavailable = true;
    helper?.stdin?.end();
  }

  private start(): ChildProcess | undefined {
    if (this.helper || this.unavailable) return this.helper;
    const helper = spawn('xargs', ['-0', '-n', '3', '-P', '0', 'losetup', '--show'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.helper = helper;
    helper.stdin!.on('error', () => undefined);
    createInterface({ input: helper.stdout! }).on('line', (line) => this.waiting.get(line.trim())?.settle({ ok: true, device: line.trim() }));
    createInterface({ input: helper.stderr! }).on('line', (line) => this.onError(line));
    const gone = (why: string): void => {
      if (this.helper !== helper) return;
      this.helper = undefined;
      this.log('warn', 'losetup helper (xargs) ended; the next loop attach starts another', { why });
      for (const w of [...this.waiting.values()]) w.settle(undefined);
    };
    helper.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') this.unavailable = true;
      gone(e.message);
    });
    helper.on('exit', (code, signal) => gone(`exit ${code ?? signal}`));
    // neither the helper nor its pipes keep the kernel process alive: it exits on its own terms
    helper.unref();
    for (const stream of [helper.stdin, helper.stdout, helper.stderr]) (stream as unknown as { unref?: () => void } | null)?.unref?.();
    return helper;
  }

  private onError(line: string): void {
    const m = LOSETUP_FAILED_RE.exec(line.trim());
    const about = m?.[1];
    const entry = about === undefined ? undefined : [...this.waiting].find(([device, w]) => device === about || w.file === about);
    if (!entry) {
      this.log('warn', 'losetup helper said something unexpected', { line });
      return;
    }
    const reason = m?.[2] ?? '';
    entry[1].settle({ ok: false, busy: /busy/i.test(reason), message: line.trim() });
  }
}

export class SimKernel {
  readonly paths: SimPaths;
  readonly db: IscsiDb;
  readonly multipath: boolean;
  private readonly log: LogFn;
  /** settles when everything queued so far (exclusive work and scans) has finished */
  private tail: Promise<unknown> = Promise.resolve();
  /** settles when the last exclusive work queued so far has finished: where a new scan may start */
  private barrier: Promise<unknown> = Promise.resolve();
  /** scans' changes to the shared tree (sdX names, dm maps, links) are made one scan at a time */
  private readonly commits = new Mutex();
  /** LUN devices being added, by `<sid>:<lun>`: a second scan of the same LUN waits for the first */
  private readonly adding = new Map<string, Promise<void>>();
  /** `tgtadm --op show --mode target` per tgtd control port, shared by the scans that wait for it */
  private readonly targetShows = new Map<number, FreshFetch<TgtTarget[] | null>>();
  /** loop attaches in flight, by backing file: one loop device per file even for concurrent scans */
  private readonly loopsAttaching = new Map<string, Promise<Loop>>();
  /** loop minors chosen by an attach in flight, not to be chosen by another */
  private readonly loopMinorsClaimed = new Set<number>();
  private readonly loopBinder: LoopBinder;
  private nextHost = FIRST_HOST_NO;
  private nextSid = 1;
  readonly sessions = new Map<number, Session>();
  private readonly loops = new Map<string, Loop>();
  readonly maps = new Map<string, DmMap>();
  private readonly aliases = new Map<string, string>();
  private readonly tgtdPorts: number[];
  private readonly portalTgtd = new Map<string, number>();
  private pool!: NodePool;

  constructor(opts: KernelOptions) {
    this.paths = simPaths(opts.root);
    this.db = new IscsiDb(this.paths);
    this.multipath = opts.multipath;
    this.log = opts.log;
    this.tgtdPorts = [...opts.tgtdControlPorts];
    this.loopBinder = new LoopBinder(opts.log);
  }

  /** Runs fn alone, after every earlier operation (scans included) finished. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn, fn);
    this.tail = this.barrier = next.catch(() => undefined);
    return next;
  }

  /**
   * Runs a scan after the exclusive operations queued before it, alongside other scans; exclusive
   * work queued after it waits for it, so a command sees the effect of the scans written before it.
   */
  private concurrentScan(fn: () => Promise<void>): Promise<void> {
    const next = this.barrier.then(fn, fn);
    this.tail = Promise.all([this.tail, next.catch(() => undefined)]);
    return next;
  }

  faults(): Faults {
    return readFaults(this.paths.faults);
  }

  /**
   * sysfs and /dev are in-memory file systems on a real node; here they are tmpfs mounts too, which
   * also makes building a device's tree (dozens of small files and links) cost microseconds, not ms.
   */
  async init(): Promise<void> {
    const sys = this.paths.sys;
    for (const [dir, source] of [[sys, SYSFS_SOURCE], [this.paths.dev, DEVTMPFS_SOURCE]] as const) {
      mkdirSync(dir, { recursive: true });
      if (!readMountInfo().some((m) => m.mountPoint === dir)) await mustExec('mount', ['-t', 'tmpfs', '-o', 'mode=0755,size=64m', source, dir]);
    }
    this.pool = new NodePool(join(sys, '.pool'), join(this.paths.dev, '.nodes'), (e) => this.log('warn', 'node pool refill failed', { error: e.message }));
    this.pool.prefill(LOOP_MAJOR, this.existingLoopMinors());
    for (const d of [
      'class/iscsi_host', 'class/iscsi_session', 'class/iscsi_connection', 'class/scsi_host', 'class/scsi_device',
      'class/scsi_disk', 'class/block', 'block', 'bus/scsi/devices', 'devices/platform', 'devices/virtual/block', 'dev/block',
    ]) mkdirSync(join(sys, d), { recursive: true });
    writeAttrs(join(sys, 'class/iscsi_transport/tcp'), { handle: '18446744072652807296', caps: '0x39' });
    writeAttrs(join(sys, 'module/scsi_transport_iscsi'), { version: '2.0-870' });
    // the TCP transport module a real node has loaded (what `iscsi-csi doctor` looks for)
    writeAttrs(join(sys, 'module/iscsi_tcp'), { initstate: 'live' });
    for (const d of [this.paths.byPath, this.paths.byId, this.paths.mapper]) mkdirSync(d, { recursive: true });
    if (this.multipath) {
      mkdirSync(join(this.paths.root, 'etc/multipath'), { recursive: true });
      try {
        for (const line of readFileSync(this.paths.multipathBindings, 'utf8').split('\n')) {
          const m = /^(\S+)\s+(\S+)$/.exec(line.trim());
          if (m && !line.startsWith('#')) this.aliases.set(m[2]!, m[1]!);
        }
      } catch {
        // no bindings yet
      }
    }
  }

  private existingLoopMinors(): number[] {
    try {
      return readdirSync('/sys/class/block').map((n) => /^loop(\d+)$/.exec(n)?.[1]).filter((x): x is string => !!x).map(Number);
    } catch {
      return [];
    }
  }

  initiatorName(): string {
    try {
      const m = /^InitiatorName=(.+)$/m.exec(readFileSync(this.paths.initiatorNameFile, 'utf8'));
      return m?.[1]?.trim() ?? '';
    } catch {
      return '';
    }
  }

  // ---------------------------------------------------------------- tgtd lookup

  private async tgtdPortals(ctl: number): Promise<string[]> {
    const r = await execTool('tgtadm', ['-C', String(ctl), '--lld', 'iscsi', '--op', 'show', '--mode', 'portal'], 3000);
    if (r.code !== 0) return [];
    return parseTgtPortals(r.stdout);
  }

  /** The control port of the tgtd serving addr:port: the configured ones first, then any tgtd on this machine. */
  async tgtdFor(address: string, port: number): Promise<number | undefined> {
    const key = `${address}:${port}`;
    const cached = this.portalTgtd.get(key);
    if (cached !== undefined) return cached;
    let others: number[] = [];
    try {
      others = readdirSync(TGTD_SOCKET_DIR).map((f) => /^socket\.(\d+)$/.exec(f)?.[1]).filter((x): x is string => !!x).map(Number);
    } catch {
      // no tgtd sockets
    }
    for (const ctl of [...this.tgtdPorts, ...others.filter((c) => !this.tgtdPorts.includes(c))]) {
      const portals = await this.tgtdPortals(ctl);
      if (portals.some((p) => p === key || p === `0.0.0.0:${port}` || p === `[::]:${port}` || p === `[${address}]:${port}`)) {
        this.portalTgtd.set(key, ctl);
        return ctl;
      }
    }
    return undefined;
  }

  /** The target as tgtd shows it; undefined when tgtd has no such target, null when tgtd did not answer. */
  private async tgtTarget(ctl: number, iqn: string): Promise<TgtTarget | undefined | null> {
    let show = this.targetShows.get(ctl);
    if (!show) {
      show = new FreshFetch(async () => {
        const r = await execTool('tgtadm', ['-C', String(ctl), '--lld', 'iscsi', '--op', 'show', '--mode', 'target']);
        if (r.code === 0) return parseTgtTargets(r.stdout);
        this.log('warn', 'tgtadm show failed', { ctl, stderr: r.stderr.trim() });
        return null;
      });
      this.targetShows.set(ctl, show);
    }
    const targets = await show.get();
    return targets === null ? null : targets.find((t) => t.name === iqn);
  }

  // ---------------------------------------------------------------- login / logout

  findSession(node: NodeId): Session | undefined {
    for (const s of this.sessions.values()) {
      if (s.target === node.target && s.persistentAddress === node.address && s.persistentPort === node.port && s.iface === node.iface) return s;
    }
    return undefined;
  }

  private portalDown(address: string, port: number): boolean {
    return (this.faults().portalDown ?? []).includes(`${address}:${port}`);
  }

  /** Logs in per a node record, like iscsid; the caller has checked for an existing session. */
  async login(rec: Rec): Promise<LoginResult> {
    const node = nodeIdOf(rec);
    const iface = this.db.readIface(node.iface);
    const initiatorName = rec['iface.initiatorname'] || iface?.['iface.initiatorname'] || this.initiatorName();
    if (this.portalDown(node.address, node.port)) {
      return { ok: false, code: 8, failure: 'connect', message: `fault: portal ${node.address}:${node.port} down` };
    }
    const chap: Chap = {
      username: rec['node.session.auth.username'] ?? '',
      password: rec['node.session.auth.password'] ?? '',
      usernameIn: rec['node.session.auth.username_in'] ?? '',
      passwordIn: rec['node.session.auth.password_in'] ?? '',
    };
    const address = isIP(node.address) ? node.address : (await lookup(node.address).catch(() => ({ address: node.address }))).address;
    const check = await loginCheck(address, node.port, node.target, initiatorName, chap);
    if (!check.ok) {
      const code = check.failure === 'auth' ? 24 : check.failure === 'fatal' ? 19 : 8;
      return { ok: false, code, failure: check.failure, message: check.message };
    }
    const session = await this.createSession(rec, node, address, initiatorName, iface?.['iface.transport_name'] || 'tcp');
    if ((rec['node.session.scan'] ?? 'auto') !== 'manual') await this.scan(session, { channel: '-', id: '-', lun: '-' });
    return { ok: true, session };
  }

  private async createSession(rec: Rec, node: NodeId, address: string, initiatorName: string, transport: string): Promise<Session> {
    const host = this.nextHost++;
    const sid = this.nextSid++;
    const sys = this.paths.sys;
    const hostDir = join(sys, 'devices/platform', `host${host}`);
    const sessionDir = join(hostDir, `session${sid}`);
    const session: Session = {
      sid, host, target: node.target, tpgt: node.tpgt >= 0 ? node.tpgt : 1, address, port: node.port,
      persistentAddress: node.address, persistentPort: node.port, iface: node.iface, transport, initiatorName, node,
      chapUsername: rec['node.session.auth.username'] ?? '', chapUsernameIn: rec['node.session.auth.username_in'] ?? '',
      recoveryTmo: Number(rec['node.session.timeo.replacement_timeout'] ?? 120),
      abortTmo: Number(rec['node.session.err_timeo.abort_timeout'] ?? 15),
      luResetTmo: Number(rec['node.session.err_timeo.lu_reset_timeout'] ?? 30),
      tgtResetTmo: Number(rec['node.session.err_timeo.tgt_reset_timeout'] ?? 30),
      state: 'LOGGED_IN', hostDir, sessionDir, devices: new Map(),
    };
    session.tgtdControl = await this.tgtdFor(address, node.port);
    if (session.tgtdControl === undefined) this.log('warn', 'no tgtd known for portal; LUNs will not get devices', { portal: `${address}:${node.port}` });

    const iscsiHostDir = join(hostDir, 'iscsi_host', `host${host}`);
    writeAttrs(iscsiHostDir, { netdev: '(null)', hwaddress: '(null)', ipaddress: address.includes(':') ? '::1' : '127.0.0.1', initiatorname: initiatorName });
    relLink(hostDir, join(iscsiHostDir, 'device'));
    const scsiHostDir = join(hostDir, 'scsi_host', `host${host}`);
    writeAttrs(scsiHostDir, {
      state: 'running', proc_name: `iscsi_${transport}`, unique_id: host, can_queue: 128, cmd_per_lun: 128,
      host_busy: 0, active_mode: 'Initiator', supported_mode: 'Initiator', sg_tablesize: 4096,
    });
    relLink(hostDir, join(scsiHostDir, 'device'));
    const scanPath = join(scsiHostDir, 'scan');
    await this.pool.fifos([scanPath]);
    session.scanFifo = new ControlFifo(scanPath, (text) => this.onScanWrite(session, text));

    const iscsiSessionDir = join(sessionDir, 'iscsi_session', `session${sid}`);
    writeAttrs(iscsiSessionDir, {
      targetname: node.target, tpgt: session.tpgt, state: 'LOGGED_IN', target_state: 'ALLOCATED',
      recovery_tmo: session.recoveryTmo < 0 ? 'off' : session.recoveryTmo, creator: process.pid, target_id: 0,
      initiatorname: initiatorName, ifacename: node.iface, username: session.chapUsername || '(null)',
      username_in: session.chapUsernameIn || '(null)', abort_tmo: session.abortTmo, lu_reset_tmo: session.luResetTmo,
      tgt_reset_tmo: session.tgtResetTmo, isid: `00023d0000${sid.toString(16).padStart(2, '0').slice(-2)}`,
      tsid: sid, erl: 0, fast_abort: 1, initial_r2t: 0, immediate_data: 1, data_pdu_in_order: 1, data_seq_in_order: 1,
      first_burst_len: 65536, max_burst_len: 262144, max_outstanding_r2t: 1, targetalias: '(null)',
    });
    relLink(sessionDir, join(iscsiSessionDir, 'device'));
    const connDir = join(sessionDir, `connection${sid}:0`, 'iscsi_connection', `connection${sid}:0`);
    writeAttrs(connDir, {
      address, port: node.port, persistent_address: node.address, persistent_port: node.port, state: 'up',
      local_port: 40000 + sid, max_recv_dlength: 262144, max_xmit_dlength: 65536, header_digest: 0, data_digest: 0,
      ifmarker: 0, ofmarker: 0, exp_statsn: 1, ping_tmo: 5, recv_tmo: 5,
    });
    relLink(join(sessionDir, `connection${sid}:0`), join(connDir, 'device'));

    relLink(iscsiHostDir, join(sys, 'class/iscsi_host', `host${host}`));
    relLink(scsiHostDir, join(sys, 'class/scsi_host', `host${host}`));
    relLink(iscsiSessionDir, join(sys, 'class/iscsi_session', `session${sid}`));
    relLink(connDir, join(sys, 'class/iscsi_connection', `connection${sid}:0`));
    relLink(hostDir, join(sys, 'bus/scsi/devices', `host${host}`));
    this.sessions.set(sid, session);
    this.log('info', 'session logged in', { sid, host, target: node.target, portal: `${node.address}:${node.port}`, iface: node.iface });
    return session;
  }

  async logout(session: Session): Promise<void> {
    for (const dev of [...session.devices.values()]) await this.removeDevice(dev);
    session.scanFifo?.close();
    const sys = this.paths.sys;
    rmSync(join(sys, 'class/iscsi_host', `host${session.host}`), { force: true });
    rmSync(join(sys, 'class/scsi_host', `host${session.host}`), { force: true });
    rmSync(join(sys, 'class/iscsi_session', `session${session.sid}`), { force: true });
    rmSync(join(sys, 'class/iscsi_connection', `connection${session.sid}:0`), { force: true });
    rmSync(join(sys, 'bus/scsi/devices', `host${session.host}`), { force: true });
    rmSync(session.hostDir, { recursive: true, force: true });
    this.sessions.delete(session.sid);
    this.log('info', 'session logged out', { sid: session.sid, target: session.target });
  }

  /** portalDown turns the sessions to that portal FAILED (and back), as when a target goes away. */
  async applySessionFaults(): Promise<void> {
    for (const s of this.sessions.values()) {
      const state = this.portalDown(s.persistentAddress, s.persistentPort) ? 'FAILED' : 'LOGGED_IN';
      if (state === s.state) continue;
      s.state = state;
      writeFileSync(join(s.sessionDir, 'iscsi_session', `session${s.sid}`, 'state'), `${state}\n`);
      writeFileSync(join(s.sessionDir, `connection${s.sid}:0`, 'iscsi_connection', `connection${s.sid}:0`, 'state'), state === 'FAILED' ? 'failed\n' : 'up\n');
      for (const d of s.devices.values()) {
        d.state = state === 'FAILED' ? 'blocked' : 'running';
        try { writeFileSync(join(d.dir, 'state'), `${d.state}\n`); } catch { /* gone */ }
      }
    }
  }

  // ---------------------------------------------------------------- scanning and SCSI devices

  private onScanWrite(session: Session, text: string): void {
    const specs = parseScanWrites(text);
    if (!specs.length) this.log('warn', 'malformed scan write ignored', { host: session.host, text });
    for (const spec of specs) {
      void this.concurrentScan(async () => {
        if (!this.sessions.has(session.sid)) return;
        await this.scan(session, spec);
      }).catch((e: Error) => this.log('error', 'scan failed', { host: session.host, error: e.message }));
    }
  }

  /** iscsi_user_scan: only LOGGED_IN sessions, channel 0 / target id 0 (or wildcards). */
  async scan(session: Session, spec: ScanSpec): Promise<void> {
    if (session.state !== 'LOGGED_IN') return;
    if (!(spec.channel === '-' || spec.channel === '0') || !(spec.id === '-' || spec.id === '0')) return;
    if (session.tgtdControl === undefined) session.tgtdControl = await this.tgtdFor(session.address, session.port);
    if (session.tgtdControl === undefined) return;
    const started = performance.now();
    let target = await this.tgtTarget(session.tgtdControl, session.target);
    if (target === null) {
      // that tgtd is gone (e.g. restarted with another control port): look the portal up again
      for (const [k, v] of this.portalTgtd) if (v === session.tgtdControl) this.portalTgtd.delete(k);
      session.tgtdControl = await this.tgtdFor(session.address, session.port);
      if (session.tgtdControl !== undefined) target = await this.tgtTarget(session.tgtdControl, session.target);
    }
    if (!target) return;
    const shown = performance.now();
    const wanted = spec.lun === '-' ? target.luns : target.luns.filter((l) => String(l.lun) === String(Number(spec.lun)));
    const noDevice = this.faults().noDevice ?? [];
    const adds: Promise<void>[] = [];
    // loops attach side by side; devices are built in LUN order, so sdX names follow the LUNs as before
    let previous: Promise<unknown> = Promise.resolve();
    for (const lun of wanted) {
      if (session.devices.has(lun.lun)) continue;
      if (noDevice.some((f) => f.iqn === session.target && f.lun === lun.lun)) {
        this.log('info', 'fault noDevice: LUN scanned without a device', { target: session.target, lun: lun.lun });
        continue;
      }
      const key = `${session.sid}:${lun.lun}`;
      let add = this.adding.get(key);
      if (!add) {
        add = this.addDevice(session, target.tid, lun, previous).finally(() => this.adding.delete(key));
        this.adding.set(key, add);
      }
      adds.push(add);
      previous = add;
    }
    // every device attempted even when one fails, then the first failure reported
    const failed = (await Promise.allSettled(adds)).find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    this.log('debug', 'scan done', { host: session.host, lun: spec.lun, tgtadmMs: Math.round(shown - started), totalMs: Math.round(performance.now() - started) });
    try { writeFileSync(join(session.sessionDir, 'iscsi_session', `session${session.sid}`, 'target_state'), 'SCANNED\n'); } catch { /* gone */ }
  }

  /**
   * Attaches the LUN's loop device (the slow part, side by side with other scans), then, once `after`
   * (the scan's previous LUN) is done, builds the device's tree, one scan at a time.
   */
  private async addDevice(session: Session, tid: number, lun: TgtLun, after: Promise<unknown>): Promise<void> {
    const type = SCSI_TYPE[lun.type] ?? 0x1f;
    const loop = type === 0 && lun.backingStorePath ? await this.loopFor(lun.backingStorePath, lun.readonly) : undefined;
    await after.catch(() => undefined);
    await this.commits.run(async () => {
      // defensive: a logout waits for the scans before it, and a second scan of the LUN waits for this one
      if (this.sessions.get(session.sid) !== session || session.devices.has(lun.lun)) {
        if (loop) await this.releaseLoop(loop);
        return;
      }
      await this.buildDevice(session, tid, lun, loop);
    });
  }

  private async buildDevice(session: Session, tid: number, lun: TgtLun, loop: Loop | undefined): Promise<void> {
    const hctl = `${session.host}:0:0:${lun.lun}`;
    const targetDir = join(session.sessionDir, `target${session.host}:0:0`);
    const dir = join(targetDir, hctl);
    const type = SCSI_TYPE[lun.type] ?? 0x1f;
    // the LU this device really is: tgtd's, or (fault) another one with the same LUN number
    const stale = this.faults().staleLu?.find((f) => f.iqn === session.target && f.lun === lun.lun);
    if (stale) this.log('info', 'fault staleLu: the device is another logical unit', { target: session.target, lun: lun.lun, scsiId: stale.scsiId });
    const scsiId = stale?.scsiId ?? lun.scsiId;
    const vpd83 = tgtVpd83(scsiId, tid, lun.lun);
    const dev: ScsiDevice = {
      session, lun: lun.lun, hctl, dir, type, vendor: TGT_VENDOR.padEnd(8), model: (TGT_PRODUCT[lun.type] ?? 'VIRTUAL-DISK').padEnd(16),
      naa: tgtNaa(scsiId), state: 'running', fifos: [],
    };
    const deletePath = join(dir, 'delete');
    const rescanPath = join(dir, 'rescan');
    mkdirSync(dir, { recursive: true });
    const fifosMade = this.pool.fifos([deletePath, rescanPath]);
    writeAttrs(dir, {
      vendor: dev.vendor, model: dev.model, rev: TGT_REV, type, scsi_level: 6, state: 'running', timeout: 30,
      eh_timeout: 10, queue_depth: 32, device_blocked: 0, iocounterbits: 32,
    });
    // the kernel's pick among the page's designators; the page itself as the binary vpd_pg83 attribute
    const wwid = kernelWwid(vpd83);
    if (wwid !== null) writeFileSync(join(dir, 'wwid'), `${wwid}\n`);
    writeFileSync(join(dir, 'vpd_pg83'), vpd83);
    const sys = this.paths.sys;
    relLink(dir, join(dir, 'scsi_device', hctl, 'device'));
    relLink(join(dir, 'scsi_device', hctl), join(sys, 'class/scsi_device', hctl));
    relLink(dir, join(sys, 'bus/scsi/devices', hctl));
    try {
      await fifosMade;
    } catch (e) {
      if (loop) await this.releaseLoop(loop).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    dev.fifos.push(new ControlFifo(deletePath, () => this.onDeviceWrite(dev, 'delete')));
    dev.fifos.push(new ControlFifo(rescanPath, () => this.onDeviceWrite(dev, 'rescan')));
    session.devices.set(lun.lun, dev);
    if (loop) await this.attachDisk(dev, loop, lun.readonly);
    this.log('info', 'SCSI device added', { hctl, target: session.target, lun: lun.lun, disk: dev.disk?.name });
  }

  private usedDiskNames(): Set<string> {
    const used = new Set<string>();
    for (const s of this.sessions.values()) for (const d of s.devices.values()) if (d.disk) used.add(d.disk.name);
    return used;
  }

  private async attachDisk(dev: ScsiDevice, loop: Loop, readonly: boolean): Promise<void> {
    const used = this.usedDiskNames();
    let i = 0;
    while (used.has(sdName(i))) i++;
    const name = sdName(i);
    const blockDir = join(dev.dir, 'block', name);
    const sectors = this.loopSectors(loop);
    dev.disk = { name, loop, sectors, readonly, blockDir };
    writeAttrs(blockDir, {
      size: sectors, dev: `${loop.major}:${loop.minor}`, ro: readonly ? 1 : 0, removable: 0, range: 16,
      ext_range: 256, capability: 50, hidden: 0, alignment_offset: 0, discard_alignment: 0,
    });
    mkdirSync(join(blockDir, 'holders'));
    mkdirSync(join(blockDir, 'slaves'));
    writeAttrs(join(blockDir, 'queue'), {
      logical_block_size: SECTOR, physical_block_size: SECTOR, hw_sector_size: SECTOR, minimum_io_size: SECTOR,
      optimal_io_size: 0, rotational: 0, max_sectors_kb: 1280, nr_requests: 64,
    });
    relLink(dev.dir, join(blockDir, 'device'));
    relLink(dev.dir, join(dev.dir, 'scsi_disk', dev.hctl, 'device'));
    const sys = this.paths.sys;
    relLink(join(dev.dir, 'scsi_disk', dev.hctl), join(sys, 'class/scsi_disk', dev.hctl));
    relLink(blockDir, join(sys, 'block', name));
    relLink(blockDir, join(sys, 'class/block', name));
    // the /dev node last, as devtmpfs makes it at the end of the kernel's device_add: a process that
    // sees the node finds the whole sysfs tree of the device (its wwid among it)
    await this.pool.blockNode(join(this.paths.dev, name), loop.major, loop.minor);
    const faults = this.faults();
    const mapDelay = this.multipath ? faults.multipathDelayMs ?? 0 : 0;
    if (this.multipath && mapDelay === 0) await this.addPathToMap(dev);
    await this.refreshAliases(dev.naa);
    // the by-path link comes last (udevd's work, after the kernel's); the database entry after it
    const udevDelay = faults.udevDelayMs ?? 0;
    const links = (): void => {
      if (dev.session.devices.get(dev.lun) !== dev || dev.disk?.name !== name) return; // deleted meanwhile
      relLink(join(this.paths.dev, name), this.byPathLink(dev));
      if (udevDelay > 0) setTimeout(() => { if (this.loops.get(loop.backing) === loop) this.writeUdevData(loop); }, udevDelay);
      else this.writeUdevData(loop);
    };
    const linkDelay = faults.linkDelayMs ?? 0;
    if (linkDelay > 0) setTimeout(links, linkDelay);
    else links();
    if (mapDelay > 0) {
      // multipathd reacting to the uevent: the map takes the path a moment after its links exist
      setTimeout(() => {
        void this.commits.run(async () => {
          if (dev.session.devices.get(dev.lun) !== dev || !dev.disk) return; // deleted meanwhile
          await this.addPathToMap(dev);
          await this.refreshAliases(dev.naa);
        }).catch((e: Error) => this.log('error', 'delayed multipath map failed', { hctl: dev.hctl, error: e.message }));
      }, mapDelay);
    }
  }

  /**
   * udev's database entry of a disk (`/run/udev/data/b<major>:<minor>`), with the flag multipath's udev
   * rules set on a path multipathd will claim. Every path of a LUN (and its map) shares the loop's
   * numbers here, so one entry serves them all, removed with the loop.
   */
  private writeUdevData(loop: Loop): void {
    const lines = [`E:DEVTYPE=disk`, ...(this.multipath ? ['E:DM_MULTIPATH_DEVICE_PATH=1'] : []), 'E:SYSTEMD_READY=' + (this.multipath ? '0' : '1')];
    mkdirSync(this.paths.udevData, { recursive: true });
    // written to a temporary file and renamed, as udevd does: a reader never sees an entry half written
    // (an empty one read as "not claimed" let a stage mount the path before multipathd took it)
    const file = this.udevDataFile(loop);
    writeFileSync(`${file}.tmp`, `${lines.join('\n')}\n`);
    renameSync(`${file}.tmp`, file);
  }

  private udevDataFile(loop: Loop): string {
    return join(this.paths.udevData, `b${loop.major}:${loop.minor}`);
  }

  private byPathLink(dev: ScsiDevice): string {
    const s = dev.session;
    return join(this.paths.byPath, `ip-${s.persistentAddress}:${s.persistentPort}-iscsi-${s.target}-lun-${dev.lun}`);
  }

  private loopSectors(loop: Loop): number {
    return Number(readFileSync(`/sys/class/block/${loop.name}/size`, 'utf8').trim());
  }

  /**
   * ONE loop device per backing file, shared by every path to the LUN and refcounted. Concurrent
   * scans of one LUN (multipath) wait for the same attach; scans of different LUNs attach side by side.
   */
  private async loopFor(backing: string, readonly: boolean): Promise<Loop> {
    const key = realpathSync(backing);
    let loop = this.loops.get(key);
    if (!loop) {
      let attaching = this.loopsAttaching.get(key);
      if (!attaching) {
        attaching = this.attachLoop(key, readonly).finally(() => this.loopsAttaching.delete(key));
        this.loopsAttaching.set(key, attaching);
      }
      loop = await attaching;
    }
    loop.refs++;
    return loop;
  }

  private async attachLoop(backing: string, readonly: boolean): Promise<Loop> {
    const device = await this.bindLoopDevice(backing, readonly);
    const name = device.replace('/dev/', '');
    const [major, minor] = readFileSync(`/sys/class/block/${name}/dev`, 'utf8').trim().split(':').map(Number);
    const loop: Loop = { device, name, major: major!, minor: minor!, backing, refs: 0 };
    this.loops.set(backing, loop);
    this.log('debug', 'loop attached', { device, backing });
    return loop;
  }

  /**
   * Binds the file to a loop device this kernel picked: concurrent `losetup -f` calls pick the same
   * free device, and the losers sleep 200 ms before trying again (util-linux), which would serialise
   * a storm's scans. Another process may still take the device first (EBUSY): then the next one.
   */
  private async bindLoopDevice(backing: string, readonly: boolean): Promise<string> {
    const flags = readonly ? ['-r'] : [];
    const taken = new Set<number>();
    for (let attempt = 0; attempt < LOOP_ATTACH_ATTEMPTS; attempt++) {
      const minor = this.freeLoopMinor(taken);
      const device = `/dev/loop${minor}`;
      this.loopMinorsClaimed.add(minor);
      try {
        // a minor without a device yet is created by losetup (LOOP_CTL_ADD), as `losetup -f` would
        const outcome = (await this.loopBinder.bind(device, backing, readonly)) ?? (await this.bindBySpawn(device, backing, flags));
        if (outcome.ok) return outcome.device;
        if (!outcome.busy) throw new Error(`losetup ${device} ${backing} failed: ${outcome.message}`);
        taken.add(minor);
      } finally {
        this.loopMinorsClaimed.delete(minor);
      }
    }
    return (await mustExec('losetup', ['-f', '--show', ...flags, backing])).trim();
  }

  /** The helper did not answer: the device may be bound already (a late answer), else bind it here. */
  private async bindBySpawn(device: string, backing: string, flags: string[]): Promise<BindOutcome> {
    const bound = await execTool('losetup', ['-n', '-O', 'BACK-FILE', device]);
    if (bound.code === 0 && bound.stdout.trim() === backing) return { ok: true, device };
    const r = await execTool('losetup', ['--show', ...flags, device, backing]);
    return r.code === 0 ? { ok: true, device: r.stdout.trim() } : { ok: false, busy: /busy/i.test(r.stderr), message: r.stderr.trim() };
  }

  /** The lowest loop minor with no backing file that no attach of ours has claimed, else a new one. */
  private freeLoopMinor(skip: Set<number>): number {
    const minors = readdirSync(HOST_SYS_BLOCK).map((n) => /^loop(\d+)$/.exec(n)?.[1]).filter((x): x is string => !!x).map(Number).sort((a, b) => a - b);
    // ours are known bound: no need to look at them (a storm would otherwise stat every one per attach)
    const ours = new Set([...this.loops.values()].map((l) => l.minor));
    const usable = (m: number): boolean => !this.loopMinorsClaimed.has(m) && !skip.has(m) && !ours.has(m);
    for (const m of minors) if (usable(m) && !existsSync(join(HOST_SYS_BLOCK, `loop${m}`, 'loop', 'backing_file'))) return m;
    let m = (minors.at(-1) ?? -1) + 1;
    while (!usable(m)) m++;
    return m;
  }

  private async releaseLoop(loop: Loop): Promise<void> {
    loop.refs--;
    if (loop.refs > 0) return;
    this.loops.delete(loop.backing);
    rmSync(this.udevDataFile(loop), { force: true });
    // still mounted somewhere? -d then only sets autoclear and the kernel detaches on last close
    const r = await execTool('losetup', ['-d', loop.device]);
    if (r.code !== 0) this.log('warn', 'losetup -d failed', { device: loop.device, stderr: r.stderr.trim() });
    else this.log('debug', 'loop detached', { device: loop.device });
  }

  private onDeviceWrite(dev: ScsiDevice, what: 'delete' | 'rescan'): void {
    void this.serial(async () => {
      if (dev.session.devices.get(dev.lun) !== dev) return;
      if (what === 'delete') await this.removeDevice(dev);
      else await this.rescanDevice(dev);
    }).catch((e: Error) => this.log('error', `${what} failed`, { hctl: dev.hctl, error: e.message }));
  }

  /** `rescan`: re-read the capacity (losetup -c re-reads the backing file's size). */
  async rescanDevice(dev: ScsiDevice): Promise<void> {
    if (!dev.disk) return;
    await mustExec('losetup', ['-c', dev.disk.loop.device]);
    dev.disk.sectors = this.loopSectors(dev.disk.loop);
    writeFileSync(join(dev.disk.blockDir, 'size'), `${dev.disk.sectors}\n`);
    this.log('info', 'SCSI device rescanned', { hctl: dev.hctl, disk: dev.disk.name, sectors: dev.disk.sectors });
  }

  /** `delete`: the device disappears (sysfs, node, links), its dm path too; the loop is released. */
  async removeDevice(dev: ScsiDevice): Promise<void> {
    const s = dev.session;
    if (s.devices.get(dev.lun) !== dev) return;
    s.devices.delete(dev.lun);
    for (const f of dev.fifos) f.close();
    const sys = this.paths.sys;
    if (dev.disk) {
      const { name } = dev.disk;
      const devNode = join(this.paths.dev, name);
      const link = this.byPathLink(dev);
      if (removeLinkIfTo(devNode, link)) {
        // udev: another device with the same ID_PATH (same portal via another iface) takes the name
        const other = this.allDevices().find((d) => d.disk && this.byPathLink(d) === link);
        if (other?.disk) relLink(join(this.paths.dev, other.disk.name), link);
      }
      const map = this.maps.get(`3${dev.naa}`);
      if (map) await this.removePathFromMap(map, dev);
      rmSync(devNode, { force: true });
      rmSync(join(sys, 'block', name), { force: true });
      rmSync(join(sys, 'class/block', name), { force: true });
      rmSync(join(sys, 'class/scsi_disk', dev.hctl), { force: true });
    }
    rmSync(join(sys, 'class/scsi_device', dev.hctl), { force: true });
    rmSync(join(sys, 'bus/scsi/devices', dev.hctl), { force: true });
    rmSync(dev.dir, { recursive: true, force: true });
    if (s.devices.size === 0) rmSync(join(s.sessionDir, `target${s.host}:0:0`), { recursive: true, force: true });
    if (dev.disk) {
      await this.refreshAliases(dev.naa);
      await this.releaseLoop(dev.disk.loop);
    }
    this.log('info', 'SCSI device removed', { hctl: dev.hctl, disk: dev.disk?.name });
  }

  allDevices(): ScsiDevice[] {
    return [...this.sessions.values()].flatMap((s) => [...s.devices.values()]);
  }

  /**
   * udev-style links that follow the top of the stack: by-id (scsi-3<naa>, wwn-0x<naa>) and
   * /sys/dev/block/<maj:min> point to the dm map when there is one, else to the first path.
   */
  private async refreshAliases(naa: string): Promise<void> {
    const map = this.maps.get(`3${naa}`);
    const paths = this.allDevices().filter((d) => d.disk && d.naa === naa).sort((a, b) => a.disk!.name.localeCompare(b.disk!.name));
    const top = map ? `dm-${map.index}` : paths[0]?.disk?.name;
    const ids = [join(this.paths.byId, `scsi-3${naa}`), join(this.paths.byId, `wwn-0x${naa}`)];
    const loop = map?.loop ?? paths[0]?.disk?.loop;
    if (!top) {
      for (const l of ids) rmSync(l, { force: true });
      return;
    }
    for (const l of ids) relLink(join(this.paths.dev, top), l);
    if (loop) {
      const sysTarget = map ? map.dir : paths[0]!.disk!.blockDir;
      relLink(sysTarget, join(this.paths.sys, 'dev/block', `${loop.major}:${loop.minor}`));
    }
  }

  // ---------------------------------------------------------------- device-mapper multipath

  private aliasFor(wwid: string): string {
    let alias = this.aliases.get(wwid);
    if (!alias) {
      const taken = new Set(this.aliases.values());
      let i = 0;
      while (taken.has(mpathName(i))) i++;
      alias = mpathName(i);
      this.aliases.set(wwid, alias);
      const text = ['# Multipath bindings, Version : 1.0', ...[...this.aliases].map(([w, a]) => `${a} ${w}`)].join('\n') + '\n';
      try { writeFileSync(this.paths.multipathBindings, text); } catch { /* best effort */ }
    }
    return alias;
  }

  private async addPathToMap(dev: ScsiDevice): Promise<void> {
    const wwid = `3${dev.naa}`;
    let map = this.maps.get(wwid);
    if (!map) {
      const used = new Set([...this.maps.values()].map((m) => m.index));
      let index = 0;
      while (used.has(index)) index++;
      const name = this.aliasFor(wwid);
      const dir = join(this.paths.sys, 'devices/virtual/block', `dm-${index}`);
      map = { index, name, wwid, naa: dev.naa, loop: dev.disk!.loop, sectors: dev.disk!.sectors, dir, paths: [] };
      writeAttrs(dir, { size: map.sectors, dev: `${map.loop.major}:${map.loop.minor}`, ro: dev.disk!.readonly ? 1 : 0, removable: 0, range: 1, ext_range: 1, capability: 10, hidden: 0 });
      writeAttrs(join(dir, 'dm'), { name, uuid: `mpath-${wwid}`, suspended: 0, use_blk_mq: 1 });
      mkdirSync(join(dir, 'slaves'));
      mkdirSync(join(dir, 'holders'));
      writeAttrs(join(dir, 'queue'), { logical_block_size: SECTOR, physical_block_size: SECTOR, hw_sector_size: SECTOR, rotational: 0 });
      relLink(dir, join(this.paths.sys, 'block', `dm-${index}`));
      relLink(dir, join(this.paths.sys, 'class/block', `dm-${index}`));
      const node = join(this.paths.dev, `dm-${index}`);
      await this.pool.blockNode(node, map.loop.major, map.loop.minor);
      relLink(node, join(this.paths.mapper, name));
      relLink(node, join(this.paths.byId, `dm-name-${name}`));
      relLink(node, join(this.paths.byId, `dm-uuid-mpath-${wwid}`));
      this.maps.set(wwid, map);
      this.log('info', 'multipath map created', { name, dm: `dm-${index}`, wwid });
    }
    map.paths.push(dev);
    relLink(dev.disk!.blockDir, join(map.dir, 'slaves', dev.disk!.name));
    relLink(map.dir, join(dev.disk!.blockDir, 'holders', `dm-${map.index}`));
  }

  private async removePathFromMap(map: DmMap, dev: ScsiDevice): Promise<void> {
    map.paths = map.paths.filter((p) => p !== dev);
    rmSync(join(map.dir, 'slaves', dev.disk!.name), { force: true });
    rmSync(join(dev.disk!.blockDir, 'holders', `dm-${map.index}`), { force: true });
    // multipathd flushes a map whose last path went away
    if (map.paths.length === 0) await this.removeMap(map);
  }

  async removeMap(map: DmMap): Promise<void> {
    for (const p of map.paths) if (p.disk) rmSync(join(p.disk.blockDir, 'holders', `dm-${map.index}`), { force: true });
    map.paths = [];
    this.maps.delete(map.wwid);
    const node = join(this.paths.dev, `dm-${map.index}`);
    rmSync(join(this.paths.mapper, map.name), { force: true });
    rmSync(join(this.paths.byId, `dm-name-${map.name}`), { force: true });
    rmSync(join(this.paths.byId, `dm-uuid-mpath-${map.wwid}`), { force: true });
    rmSync(node, { force: true });
    rmSync(join(this.paths.sys, 'block', `dm-${map.index}`), { force: true });
    rmSync(join(this.paths.sys, 'class/block', `dm-${map.index}`), { force: true });
    rmSync(map.dir, { recursive: true, force: true });
    await this.refreshAliases(map.naa);
    this.log('info', 'multipath map removed', { name: map.name, dm: `dm-${map.index}` });
  }

  /** Open count stand-in: the map (its node or /dev/mapper name) is mounted or bind-mounted somewhere. */
  mapInUse(map: DmMap): boolean {
    const node = join(this.paths.dev, `dm-${map.index}`);
    const mapper = join(this.paths.mapper, map.name);
    return readMountInfo().some((m) =>
      m.source === node || m.source === mapper ||
      ((m.root.endsWith(`/dm-${map.index}`) && node.endsWith(m.root)) || (m.root.endsWith(`/${map.name}`) && mapper.endsWith(m.root))));
  }

  /** multipathd resize: the map takes the size its paths report (after their rescan). */
  async resizeMap(map: DmMap): Promise<boolean> {
    const sizes = new Set(map.paths.map((p) => p.disk!.sectors));
    if (sizes.size !== 1) return false;
    map.sectors = [...sizes][0]!;
    writeFileSync(join(map.dir, 'size'), `${map.sectors}\n`);
    return true;
  }

  findMap(arg: string): DmMap | undefined {
    const name = arg.replace(/^\/dev\/mapper\//, '').replace(/^.*\/mapper\//, '');
    const dm = /(?:^|\/)dm-(\d+)$/.exec(arg);
    for (const m of this.maps.values()) {
      if (m.name === name || m.wwid === arg || (dm && m.index === Number(dm[1]))) return m;
    }
    return undefined;
  }

  // ---------------------------------------------------------------- views and teardown

  summaries(): SessionSummary[] {
    return [...this.sessions.values()].map((s) => ({
      sid: s.sid, host: s.host, target: s.target, portal: `${s.persistentAddress}:${s.persistentPort}`, iface: s.iface,
      initiatorName: s.initiatorName, state: s.state,
      devices: [...s.devices.values()].sort((a, b) => a.lun - b.lun).map((d) => {
        const map = this.maps.get(`3${d.naa}`);
        return {
          lun: d.lun, hctl: d.hctl,
          ...(d.disk ? { name: d.disk.name, loop: d.disk.loop.device, sizeBytes: d.disk.sectors * SECTOR } : {}),
          ...(map && d.disk ? { dm: `dm-${map.index}` } : {}),
        };
      }),
    }));
  }

  loopDevices(): string[] {
    return [...this.loops.values()].map((l) => l.device);
  }

  /** Logs out every session (devices, dm maps and loops go with them). */
  async shutdown(): Promise<void> {
    for (const s of [...this.sessions.values()]) {
      try {
        await this.logout(s);
      } catch (e) {
        this.log('error', 'logout during shutdown failed', { sid: s.sid, error: (e as Error).message });
      }
    }
    for (const m of [...this.maps.values()]) await this.removeMap(m).catch(() => undefined);
    for (const l of [...this.loops.values()]) {
      l.refs = 1;
      await this.releaseLoop(l);
    }
    this.loopBinder.close();
    for (const dir of [this.paths.dev, this.paths.sys]) {
      if (!readMountInfo().some((m) => m.mountPoint === dir)) continue;
      const r = await execTool('umount', [dir]);
      if (r.code !== 0) await execTool('umount', ['-l', dir]);
    }
  }
}
