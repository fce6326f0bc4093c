// `npm run bench` / `make bench`: figures (not a pass/fail test) for NodeStageVolume on the simulated
// host with a real tgtd, the driver in this process behind its gRPC socket:
//   1. stage latency p50/p95 for a first login and for a warm session (another LUN of a target that
//      already has a session), with the external commands per stage, the time inside them, the wait
//      for the device link, and the driver's own time (the rest), broken down by step;
//   2. a storm: N LUNs of one target staged at once (block, then ext4), against the same N stages one
//      after another: wall time, logins, per-volume p95, longest IQN-lock hold, whether any stage
//      held the lock while waiting for its device, and the CPU each part of the host used (the floor
//      a storm cannot beat on this machine's cores); each pair runs a few rounds, the median reported;
//   3. how fast a wait reacts to the by-path link appearing (fallback poll 60 s, so only the watch counts).
// Everything it creates (simulated host, tgtd, loops, mounts, temp dirs) is removed on every path.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Devices } from '../src/node-host/devices.js';
import { Sysfs } from '../src/node-host/sysfs.js';
import { parsePortal } from '../src/common/validate.js';
import { blockCapability, mountCapability, startSimDriver, type SimDriver } from '../test/helpers/sim-driver.js';
import { cpuBetween, cpuSnapshot, type CpuRole, type CpuUse } from './cpu.js';
import { commandLabel, installInstrumentation, isLogin, recordCommands, Recorder, type CommandEvent } from './instrument.js';
import { formatTally, intOption, max, ms, overlap, percentile, sum, table, tally } from './stats.js';

const MiB = 1024 * 1024;
const IQN_PREFIX = 'iqn.2026-11.dev.bench';
const ROLE_DRIVER = 'driver + gRPC client (this process)';
const ROLE_COMMANDS = "driver's commands (fake iscsiadm, blockdev, mkfs, …)";
const ROLE_KERNEL = 'simulated kernel (+ its losetup, tgtadm)';
const ROLE_TGTD = 'tgtd';
/** Budgets from issue 4 (the storm's "≥ 4× sequential" was retired by issue 13: the CPU floor decides; bench/cost.ts checks the storm against it). */
const BUDGET_WARM_OWN_P50_MS = 20;
const BUDGET_LINK_REACTION_MS = 5;
/** Device-link test: fallback poll so long that only the directory watch can end the wait. */
const LINK_FALLBACK_POLL_MS = 60_000;
const LINK_DEADLINE_MS = 10_000;
/** Let a link wait finish its first look (link absent) before the link is made: we time the reaction. */
const LINK_SETTLE_MS = 3;

interface Options {
  runs: number;
  warmup: number;
  storm: number;
  lunMiB: number;
  linkRuns: number;
  limitMinutes: number;
  /** each storm pair (concurrent, one by one) is run this many times; the round with the median speed-up is reported */
  stormRounds: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '1' },
      storm: { type: 'string', default: '32' },
      'lun-mib': { type: 'string', default: '16' },
      'link-runs': { type: 'string', default: '200' },
      'limit-minutes': { type: 'string', default: '10' },
      'storm-rounds': { type: 'string', default: '3' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log('usage: node dist/bench/stage.js [--runs N=10] [--warmup N=1] [--storm LUNS=32] [--lun-mib MiB=16] [--link-runs N=200] [--limit-minutes M=10] [--storm-rounds N=3]');
    process.exit(0);
  }
  const int = intOption;
  return {
    runs: int('runs', values.runs, 1),
    warmup: int('warmup', values.warmup, 0),
    storm: int('storm', values.storm, 2),
    lunMiB: int('lun-mib', values['lun-mib'], 8),
    linkRuns: int('link-runs', values['link-runs'], 1),
    limitMinutes: int('limit-minutes', values['limit-minutes'], 1),
    stormRounds: int('storm-rounds', values['storm-rounds'], 1),
  };
}

function progress(msg: string): void {
  process.stderr.write(`[bench] ${msg}\n`);
}

type Kind = 'block' | 'ext4';

interface StageCall {
  volumeId: string;
  iqn: string;
  lun: number;
  start: number;
  end: number;
}

/** The figures of one stage run alone (nothing else running): where its time went. */
interface StageBreakdown {
  total: number;
  commands: number;
  commandMs: number;
  waitMs: number;
  own: number;
  lockHeldMs: number;
  lockFileMs: number;
  labels: string[];
  names: string[];
  spans: Map<string, number>;
  /** sum of the top-level spans (nested ones are already inside them) */
  spanMs: number;
}

class Bench {
  readonly work: string;

  constructor(
    readonly sd: SimDriver,
    readonly rec: Recorder,
  ) {
    this.work = join(sd.stateDir, 'kubelet');
    mkdirSync(this.work, { recursive: true });
  }

  async stage(volumeId: string, iqn: string, lun: number, kind: Kind): Promise<StageCall> {
    const start = performance.now();
    await this.sd.client.call('Node', 'NodeStageVolume', {
      volume_id: volumeId,
      staging_target_path: join(this.work, volumeId),
      volume_capability: kind === 'block' ? blockCapability() : mountCapability('ext4'),
      volume_context: { targetPortal: this.sd.host.portals[0]!, iqn, lun: String(lun) },
    });
    return { volumeId, iqn, lun, start, end: performance.now() };
  }

  async unstage(volumeId: string): Promise<void> {
    await this.sd.client.call('Node', 'NodeUnstageVolume', { volume_id: volumeId, staging_target_path: join(this.work, volumeId) });
  }

  /** who uses the CPU during a storm: the driver (with the client), what it runs, the simulated kernel, tgtd */
  cpuRoles(): CpuRole[] {
    return [
      { name: ROLE_DRIVER, pid: process.pid, children: ROLE_COMMANDS },
      { name: ROLE_KERNEL, pid: this.sd.host.kernelPid },
      { name: ROLE_TGTD, pid: this.sd.host.tgtd.pid },
    ];
  }

  async sessionsOf(iqn: string): Promise<{ sessions: number; devices: number }> {
    const s = (await this.sd.host.sessions()).filter((x) => x.target === iqn);
    return { sessions: s.length, devices: sum(s.map((x) => x.devices.length)) };
  }

  /**
   * p50 of the sysfs read a stage does under the IQN lock to find the portal→host map
   * (Sysfs.portalHostMap(iqn): sessions and connections only), with what is staged right now.
   */
  async topologyWalk(iqn: string, calls = 20): Promise<{ luns: number; p50: number }> {
    const sysfs = new Sysfs(this.sd.cfg.host.sysRoot);
    const times: number[] = [];
    let luns = 0;
    for (let i = 0; i < calls; i++) {
      const t = performance.now();
      await sysfs.portalHostMap(iqn);
      times.push(performance.now() - t);
    }
    const topo = await sysfs.topology(iqn);
    luns = sum(topo.sessionsForTarget(iqn).map((x) => x.luns.length));
    return { luns, p50: percentile(times, 50) };
  }

  breakdown(call: StageCall): StageBreakdown {
    const w = this.rec.window(call.start, call.end);
    const commandMs = sum(w.commands.map((c) => c.end - c.start));
    const waitMs = sum(w.waits.map((x) => x.end - x.start));
    const total = call.end - call.start;
    const spans = new Map<string, number>();
    for (const s of w.spans) spans.set(s.label, (spans.get(s.label) ?? 0) + (s.end - s.start));
    return {
      spanMs: sum(w.spans.filter((s) => !s.nested).map((s) => s.end - s.start)),
      total,
      commands: w.commands.length,
      commandMs,
      waitMs,
      own: total - commandMs - waitMs,
      lockHeldMs: sum(w.locks.map((l) => l.released - l.acquired)),
      lockFileMs: sum(w.locks.map((l) => l.fnStart - l.acquired + (l.released - l.fnEnd))),
      labels: w.commands.map(commandLabel),
      names: w.commands.map((c) => c.name),
      spans,
    };
  }
}

// ------------------------------------------------------------------------------------------ phase 1

interface LatencyResult {
  name: string;
  runs: StageBreakdown[];
  /** the lock holder's sysfs walk, measured with this phase's volumes staged */
  walk?: { luns: number; p50: number };
}

async function firstLoginLatency(b: Bench, opts: Options): Promise<LatencyResult> {
  const iqn = `${IQN_PREFIX}:first`;
  await b.sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: opts.lunMiB * MiB }]);
  const runs: StageBreakdown[] = [];
  try {
    for (let i = 0; i < opts.warmup + opts.runs; i++) {
      const call = await b.stage('first-1', iqn, 1, 'block');
      if (i >= opts.warmup) runs.push(b.breakdown(call));
      await b.unstage('first-1');
      const left = await b.sessionsOf(iqn);
      if (left.sessions !== 0) throw new Error(`unstage of the only volume left ${left.sessions} session(s) to ${iqn}: the next run would not be a first login`);
    }
  } finally {
    await b.sd.host.deleteTarget(iqn).catch(() => undefined);
  }
  return { name: 'first login', runs };
}

async function warmSessionLatency(b: Bench, opts: Options): Promise<LatencyResult> {
  const iqn = `${IQN_PREFIX}:warm`;
  await b.sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: opts.lunMiB * MiB }, { lun: 2, sizeBytes: opts.lunMiB * MiB }]);
  const runs: StageBreakdown[] = [];
  let walk: LatencyResult['walk'];
  try {
    await b.stage('warm-holder', iqn, 1, 'block'); // holds the session for the timed stages
    for (let i = 0; i < opts.warmup + opts.runs; i++) {
      const call = await b.stage('warm-2', iqn, 2, 'block');
      if (i >= opts.warmup) runs.push(b.breakdown(call));
      if (i === opts.warmup + opts.runs - 1) walk = await b.topologyWalk(iqn);
      await b.unstage('warm-2');
    }
    await b.unstage('warm-holder');
  } finally {
    await b.sd.host.deleteTarget(iqn).catch(() => undefined);
  }
  return { name: 'warm session', runs, ...(walk ? { walk } : {}) };
}

// ------------------------------------------------------------------------------------------ phase 2

/** Where one storm volume's time went, in order (ms). */
interface VolumePhases {
  beforeLock: number;
  lockWait: number;
  lockHeld: number;
  lockToWait: number;
  deviceWait: number;
  afterDevice: number;
}

interface StormResult {
  kind: Kind;
  mode: 'concurrent' | 'sequential';
  /** a session to the target existed before (one more LUN kept staged) */
  warm: boolean;
  phases: VolumePhases[];
  lockHeldTotal: number;
  /** durations of each instrumented driver step during the storm, by step */
  steps: Map<string, number[]>;
  /** the lock holder's sysfs walk with all the storm's volumes staged */
  walk: { luns: number; p50: number };
  volumes: number;
  wall: number;
  logins: number;
  devicesSeen: number;
  sessionsSeen: number;
  latencies: number[];
  waits: number[];
  commands: CommandEvent[];
  lockHolds: number;
  maxLockHeld: number;
  maxLockWait: number;
  /** volumes whose device wait overlapped a hold of the IQN lock that scanned their LUN */
  heldWhileWaiting: { lun: number; overlapMs: number }[];
  unstageWall: number;
  unstageLeftSessions: number;
  /** CPU used by the machine and by each role during the stages */
  cpu: CpuUse;
}

async function storm(b: Bench, kind: Kind, mode: StormResult['mode'], warm: boolean, tag: string, opts: Options): Promise<StormResult> {
  const iqn = `${IQN_PREFIX}:storm-${tag}`;
  const luns = Array.from({ length: opts.storm }, (_, i) => i + 1);
  const holderLun = opts.storm + 1;
  await b.sd.host.createTarget(iqn, [...luns, ...(warm ? [holderLun] : [])].map((lun) => ({ lun, sizeBytes: opts.lunMiB * MiB })));
  const ids = luns.map((lun) => `storm-${tag}-${lun}`);
  const holderId = `storm-${tag}-holder`;
  try {
    if (warm) await b.stage(holderId, iqn, holderLun, 'block');
    const c0 = cpuSnapshot();
    const t0 = performance.now();
    let calls: StageCall[];
    if (mode === 'concurrent') {
      calls = await Promise.all(luns.map((lun, i) => b.stage(ids[i]!, iqn, lun, kind)));
    } else {
      calls = [];
      for (const [i, lun] of luns.entries()) calls.push(await b.stage(ids[i]!, iqn, lun, kind));
    }
    const t1 = performance.now();
    const cpu = cpuBetween(c0, cpuSnapshot(), b.cpuRoles());
    const seen = await b.sessionsOf(iqn);
    const walk = await b.topologyWalk(iqn);
    const w = b.rec.window(t0, t1);
    const locks = w.locks.filter((l) => l.iqn === iqn);
    const waits = w.waits.filter((x) => x.iqn === iqn);
    const heldWhileWaiting: StormResult['heldWhileWaiting'] = [];
    for (const wait of waits) {
      const own = locks.filter((l) => l.luns.includes(wait.lun));
      const o = sum(own.map((l) => overlap({ start: l.acquired, end: l.released }, wait)));
      if (o > 0) heldWhileWaiting.push({ lun: wait.lun, overlapMs: o });
    }
    const phases: VolumePhases[] = [];
    for (const c of calls) {
      const lock = locks.find((l) => l.luns.includes(c.lun));
      const wait = waits.find((x) => x.lun === c.lun);
      if (!lock || !wait) continue;
      phases.push({
        beforeLock: lock.requested - c.start,
        lockWait: lock.acquired - lock.requested,
        lockHeld: lock.released - lock.acquired,
        lockToWait: wait.start - lock.released,
        deviceWait: wait.end - wait.start,
        afterDevice: c.end - wait.end,
      });
    }

    // unstage everything, all at once as kubelet would after a rollout; the session must go with the last
    const u0 = performance.now();
    await Promise.all([...ids, ...(warm ? [holderId] : [])].map((id) => b.unstage(id)));
    const unstageWall = performance.now() - u0;
    const left = await b.sessionsOf(iqn);
    if (left.sessions > 0) await forceLogout(b, iqn);

    const steps = new Map<string, number[]>();
    for (const x of w.spans) steps.set(x.label, [...(steps.get(x.label) ?? []), x.end - x.start]);
    steps.set('lock file take + release', locks.map((l) => l.fnStart - l.acquired + (l.released - l.fnEnd)));
    return {
      kind,
      mode,
      warm,
      phases,
      steps,
      walk,
      lockHeldTotal: sum(locks.map((l) => l.released - l.acquired)),
      volumes: luns.length,
      wall: t1 - t0,
      logins: w.commands.filter(isLogin).length,
      devicesSeen: seen.devices,
      sessionsSeen: seen.sessions,
      latencies: calls.map((c) => c.end - c.start),
      waits: waits.map((x) => x.end - x.start),
      commands: w.commands,
      lockHolds: locks.length,
      maxLockHeld: max(locks.map((l) => l.released - l.acquired)),
      maxLockWait: max(locks.map((l) => l.acquired - l.requested)),
      heldWhileWaiting,
      unstageWall,
      unstageLeftSessions: left.sessions,
      cpu,
    };
  } finally {
    await b.sd.host.deleteTarget(iqn).catch(() => undefined);
  }
}

/** A session the unstages left behind (a finding, reported): log it out so the next phase starts clean. */
async function forceLogout(b: Bench, iqn: string): Promise<void> {
  const portal = b.sd.host.portals[0]!;
  await b.sd.host.run('iscsiadm', ['-m', 'node', '-T', iqn, '-p', portal, '--logout']);
  await b.sd.host.run('iscsiadm', ['-m', 'node', '-T', iqn, '-p', portal, '-o', 'delete']);
}

// ------------------------------------------------------------------------------------------ phase 3

async function linkReaction(runs: number): Promise<{ reactions: number[]; dir: string }> {
  const root = mkdtempSync(join(os.tmpdir(), 'iscsi-bench-dev-'));
  try {
    const sysRoot = join(root, 'sys');
    const devRoot = join(root, 'dev');
    mkdirSync(join(devRoot, 'disk', 'by-path'), { recursive: true });
    const devices = new Devices(devRoot, new Sysfs(sysRoot));
    const name = { portal: parsePortal('127.0.0.1:3260'), iqn: `${IQN_PREFIX}:link` };
    const reactions: number[] = [];
    for (let i = 0; i < runs; i++) {
      // what the kernel shows first (the disk in sysfs), then devtmpfs's node at t0
      const disk = `sd${String.fromCharCode(97 + (Math.floor(i / 26) % 26))}${String.fromCharCode(97 + (i % 26))}`; // sdaa, sdab …: SCSI disk names
      const minor = 100 + (i % 100);
      mkdirSync(join(sysRoot, `class/iscsi_host/host9/device/session9/target9:0:0/9:0:0:${i}/block/${disk}`), { recursive: true });
      mkdirSync(join(sysRoot, 'block', disk), { recursive: true });
      writeFileSync(join(sysRoot, 'block', disk, 'dev'), `7:${minor}\n`);
      const waiting = devices.waitForLunDevice(9, i, name, { deadlineMs: LINK_DEADLINE_MS, pollMs: LINK_FALLBACK_POLL_MS });
      await sleep(LINK_SETTLE_MS);
      // execFileSync blocks this loop until mknod has exited: the wait can only react after t0
      execFileSync('mknod', [join(devRoot, disk), 'b', '7', String(minor)]);
      const t0 = performance.now();
      const r = await waiting;
      const t1 = performance.now();
      if (!r.ok) throw new Error(`device wait ${i} ended with ${r.reason} after ${r.waitedMs} ms`);
      reactions.push(t1 - t0);
      unlinkSync(join(devRoot, disk));
    }
    return { reactions, dir: root };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------------------------ report

function p50p95(values: number[]): [string, string] {
  return [ms(percentile(values, 50)), ms(percentile(values, 95))];
}

function latencySection(results: LatencyResult[], rtt: number[]): string[] {
  const rows: string[][] = [['', ...results.flatMap((r) => [`${r.name} p50`, 'p95'])]];
  const metric = (label: string, pick: (b: StageBreakdown) => number): void => {
    rows.push([label, ...results.flatMap((r) => p50p95(r.runs.map(pick)))]);
  };
  metric('total (client → reply)', (x) => x.total);
  metric('inside commands', (x) => x.commandMs);
  metric('waiting for device link', (x) => x.waitMs);
  metric("driver's own (total − cmds − wait)", (x) => x.own);
  metric('  IQN lock held', (x) => x.lockHeldMs);
  metric('  of which lock file (proper-lockfile)', (x) => x.lockFileMs);
  const labels = new Set(results.flatMap((r) => r.runs.flatMap((x) => [...x.spans.keys()])));
  const nested = 'of which fsync';
  for (const label of [...labels].filter((l) => l !== nested).sort()) {
    metric(`  ${label}`, (x) => x.spans.get(label) ?? 0);
    if (label.startsWith('metadata save')) metric(`    ${nested}`, (x) => x.spans.get(nested) ?? 0);
  }
  metric('  rest (JS, gRPC, logging, mutex)', (x) => x.own - x.lockFileMs - x.spanMs);
  const lines = [table(rows), ''];
  for (const r of results) {
    const n = r.runs.length;
    const counts = r.runs.map((x) => x.commands);
    lines.push(`  ${r.name}: ${percentile(counts, 50)} external commands per stage (min ${Math.min(...counts)}, max ${Math.max(...counts)})`);
    lines.push(`    by name:    ${formatTally(tally(r.runs.flatMap((x) => x.names)), n)}`);
    lines.push(`    by command: ${formatTally(tally(r.runs.flatMap((x) => x.labels)), n)}`);
  }
  const [rp50, rp95] = p50p95(rtt);
  for (const r of results) if (r.walk) lines.push(`  portal→host map read under the IQN lock, with ${r.walk.luns} LUNs staged: p50 ${ms(r.walk.p50)}`);
  lines.push(`  gRPC round trip alone (NodeGetCapabilities, ${rtt.length} calls): p50 ${rp50}, p95 ${rp95} — included in "driver's own"`);
  return lines;
}

function stormName(r: StormResult): string {
  return `${r.volumes} ${r.kind}, ${r.warm ? 'warm' : 'cold'}`;
}

function stormSection(results: StormResult[], roundSpeedups: Map<string, number[]>): string[] {
  const rows: string[][] = [['volumes', 'mode', 'wall', 'logins', 'per-vol p50', 'p95', 'dev wait p50', 'p95', 'lock max held', 'locks held (sum)', 'held while waiting', 'cmds']];
  for (const r of results) {
    const [lp50, lp95] = p50p95(r.latencies);
    const [wp50, wp95] = p50p95(r.waits);
    rows.push([
      stormName(r), r.mode, ms(r.wall), String(r.logins), lp50, lp95, wp50, wp95, ms(r.maxLockHeld), ms(r.lockHeldTotal),
      r.heldWhileWaiting.length === 0 ? 'none' : `${r.heldWhileWaiting.length} volume(s)`, String(r.commands.length),
    ]);
  }
  const lines = [table(rows), '  (cold: the storm includes the one login; warm: one more LUN of the target kept staged, so no login)', ''];
  for (const c of results.filter((r) => r.mode === 'concurrent')) {
    const s = results.find((r) => r.kind === c.kind && r.warm === c.warm && r.mode === 'sequential');
    if (!s) continue;
    const ratio = s.wall / c.wall;
    const budget = '';
    const all = roundSpeedups.get(stormName(c)) ?? [];
    const roundsNote = all.length > 1 ? ` (median of ${all.length} rounds: ${all.map((x) => `${x.toFixed(2)}×`).join(', ')})` : '';
    lines.push(`  ${stormName(c)}: storm ${ms(c.wall)} vs one after another ${ms(s.wall)} → speed-up ${ratio.toFixed(2)}×${roundsNote}${budget}`);
    // The one login (fake iscsiadm processes, each a Node start) cannot overlap anything: it bounds a
    // cold storm's speed-up. The rest is CPU on this machine's cores (driver, simulated kernel, losetup).
    if (!c.warm) {
      const login = s.maxLockHeld;
      lines.push(`    the login alone (${ms(login)}) bounds a cold storm's speed-up at ≈ ${(s.wall / login).toFixed(2)}× on this host`);
    }
  }
  lines.push('', '  CPU during the stages (from /proc; per volume in brackets). A storm cannot end before the machine');
  lines.push('  has done its CPU work: busy time / cores is its floor on this machine, whatever the driver does.');
  const cpuRows: string[][] = [['', ...results.map((r) => `${stormName(r)}, ${r.mode === 'concurrent' ? 'storm' : 'one by one'}`)]];
  const perVol = (r: StormResult, v: number): string => `${ms(v)} (${ms(v / r.volumes)})`;
  cpuRows.push(['wall', ...results.map((r) => ms(r.wall))]);
  cpuRows.push(['CPU busy, whole machine', ...results.map((r) => perVol(r, r.cpu.busyMs))]);
  cpuRows.push([`machine use (busy / wall × ${results[0]?.cpu.cores ?? '?'} CPUs)`, ...results.map((r) => `${(r.cpu.utilisation * 100).toFixed(0)} %`)]);
  cpuRows.push(['floor: busy / CPUs', ...results.map((r) => ms(r.cpu.floorMs))]);
  for (const role of [...new Set(results.flatMap((r) => [...r.cpu.byRole.keys()]))]) {
    cpuRows.push([`  ${role}`, ...results.map((r) => perVol(r, r.cpu.byRole.get(role) ?? 0))]);
  }
  lines.push(table(cpuRows));
  for (const c of results.filter((r) => r.mode === 'concurrent')) {
    const s = results.find((r) => r.kind === c.kind && r.warm === c.warm && r.mode === 'sequential');
    if (s) lines.push(`  ${stormName(c)}: the storm's CPU floor ${ms(c.cpu.floorMs)} caps its speed-up over one by one (${ms(s.wall)}) at ${(s.wall / c.cpu.floorMs).toFixed(2)}× on this machine; measured ${(s.wall / c.wall).toFixed(2)}×`);
  }
  lines.push('', '  Where a storm volume\'s time goes (per volume, p50 / p95):');
  const phaseRows: string[][] = [['', ...results.filter((r) => r.mode === 'concurrent').map(stormName)]];
  const phase = (label: string, pick: (p: VolumePhases) => number): void => {
    phaseRows.push([label, ...results.filter((r) => r.mode === 'concurrent').map((r) => p50p95(r.phases.map(pick)).join(' / '))]);
  };
  phase('request → asks for the IQN lock', (p) => p.beforeLock);
  phase('waiting for the IQN lock', (p) => p.lockWait);
  phase('holding the IQN lock', (p) => p.lockHeld);
  phase('lock released → device wait starts', (p) => p.lockToWait);
  phase('waiting for the device link', (p) => p.deviceWait);
  phase('device → reply (metadata; ext4: blkid, mkfs, mount)', (p) => p.afterDevice);
  lines.push(table(phaseRows), '');
  lines.push('  Driver steps during the storms, per call (p50 / p95 / max):');
  const concurrent = results.filter((r) => r.mode === 'concurrent');
  const stepLabels = [...new Set(concurrent.flatMap((r) => [...r.steps.keys()]))].sort();
  const stepRows: string[][] = [['', ...concurrent.map(stormName)]];
  for (const label of stepLabels) {
    stepRows.push([label, ...concurrent.map((r) => {
      const v = r.steps.get(label) ?? [];
      return v.length ? `${ms(percentile(v, 50))} / ${ms(percentile(v, 95))} / ${ms(max(v))}` : '-';
    })]);
  }
  lines.push(table(stepRows), '');
  const walks = results.filter((r) => r.mode === 'concurrent').map((r) => `${r.walk.luns} LUNs ${ms(r.walk.p50)}`);
  lines.push(`  portal→host map read under the IQN lock (Sysfs.portalHostMap), p50 alone: ${walks.join(', ')}`, '');
  for (const r of results) {
    const issues: string[] = [];
    const wantLogins = r.warm ? 0 : 1;
    if (r.logins !== wantLogins) issues.push(`${r.logins} logins (expected ${wantLogins})`);
    const wantDevices = r.volumes + (r.warm ? 1 : 0);
    if (r.sessionsSeen !== 1 || r.devicesSeen !== wantDevices) issues.push(`after staging: ${r.sessionsSeen} session(s), ${r.devicesSeen}/${wantDevices} devices`);
    if (r.heldWhileWaiting.length > 0) issues.push(`lock held while waiting for the device: LUNs ${r.heldWhileWaiting.map((h) => `${h.lun} (${ms(h.overlapMs)})`).join(', ')}`);
    if (r.unstageLeftSessions > 0) issues.push(`unstaging all volumes at once left ${r.unstageLeftSessions} session(s) logged in (the bench logged it out)`);
    lines.push(`  ${stormName(r)} ${r.mode}: commands ${formatTally(tally(r.commands.map(commandLabel)))}; ${r.lockHolds} lock holds; unstage all at once ${ms(r.unstageWall)}${issues.length ? ` — ${issues.join('; ')}` : ''}`);
  }
  return lines;
}

// ------------------------------------------------------------------------------------------ main

async function main(): Promise<void> {
  const opts = parseOptions();
  const commandLine = process.env.npm_lifecycle_event === 'bench'
    ? `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`
    : `node dist/bench/stage.js${process.argv.length > 2 ? ` ${process.argv.slice(2).join(' ')}` : ''}`;
  const rec = new Recorder();
  await installInstrumentation(rec);

  let sd: SimDriver | undefined;
  let stopping: Promise<void> | undefined;
  const cleanup = (): Promise<void> => (stopping ??= (sd ? sd.stop() : Promise.resolve()).catch((e: Error) => progress(`cleanup failed: ${e.message}`)));
  const abort = (why: string, code: number): void => {
    progress(`${why}: cleaning up`);
    void cleanup().finally(() => process.exit(code));
  };
  process.once('SIGINT', () => abort('SIGINT', 130));
  process.once('SIGTERM', () => abort('SIGTERM', 143));
  const watchdog = setTimeout(() => abort(`still running after ${opts.limitMinutes} min (--limit-minutes)`, 2), opts.limitMinutes * 60_000);
  watchdog.unref();

  const started = performance.now();
  const loadAtStart = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  const out: string[] = [];
  try {
    progress(`device-link reaction, ${opts.linkRuns} runs`);
    const link = await linkReaction(opts.linkRuns);

    progress('starting the simulated host (tgtd, simulated kernel) and the driver');
    sd = await startSimDriver();
    recordCommands(sd.runner, rec);
    const b = new Bench(sd, rec);

    const rtt: number[] = [];
    await sd.client.call('Node', 'NodeGetCapabilities', {}); // connects the channel: not part of a round trip
    for (let i = 0; i < Math.max(opts.runs, 10); i++) {
      const t = performance.now();
      await sd.client.call('Node', 'NodeGetCapabilities', {});
      rtt.push(performance.now() - t);
    }

    progress(`stage latency: first login, ${opts.warmup} + ${opts.runs} runs`);
    const first = await firstLoginLatency(b, opts);
    progress(`stage latency: warm session, ${opts.warmup} + ${opts.runs} runs`);
    const warm = await warmSessionLatency(b, opts);

    // The machine is shared and a storm lasts a fraction of a second: each pair runs several rounds
    // and the round with the median speed-up is the one reported (all rounds' speed-ups are listed).
    const pairs: [Kind, boolean, string][] = [['block', false, 'blk'], ['block', true, 'blk'], ['ext4', false, 'fs']];
    const rounds = new Map<string, { concurrent: StormResult; sequential: StormResult }[]>();
    for (let round = 1; round <= opts.stormRounds; round++) {
      for (const [kind, warm, tag] of pairs) {
        progress(`storm round ${round}/${opts.stormRounds}: ${opts.storm} ${kind} volumes, ${warm ? 'session already there' : 'first login included'}, all at once then one by one`);
        // ext4: separate targets per run, so both runs format empty LUNs
        const concurrent = await storm(b, kind, 'concurrent', warm, `${tag}-${round}a`, opts);
        const sequential = await storm(b, kind, 'sequential', warm, `${tag}-${round}b`, opts);
        const key = `${kind}/${warm}`;
        rounds.set(key, [...(rounds.get(key) ?? []), { concurrent, sequential }]);
      }
    }
    const storms: StormResult[] = [];
    const roundSpeedups = new Map<string, number[]>();
    for (const [kind, warm] of pairs) {
      const all = rounds.get(`${kind}/${warm}`)!;
      const ratio = (p: (typeof all)[number]): number => p.sequential.wall / p.concurrent.wall;
      const median = [...all].sort((x, y) => ratio(x) - ratio(y))[Math.floor((all.length - 1) / 2)]!;
      storms.push(median.concurrent, median.sequential);
      roundSpeedups.set(stormName(median.concurrent), all.map(ratio));
    }

    const warmOwnP50 = percentile(warm.runs.map((x) => x.own), 50);
    const speedup = (warmSession: boolean): number => {
      const pick = (mode: StormResult['mode']): number => storms.find((r) => r.kind === 'block' && r.warm === warmSession && r.mode === mode)!.wall;
      return pick('sequential') / pick('concurrent');
    };
    /** the most a storm could gain here: one-by-one wall over the storm's CPU floor (busy time / cores) */
    const cpuCap = (warmSession: boolean): number => {
      const pick = (mode: StormResult['mode']): StormResult => storms.find((r) => r.kind === 'block' && r.warm === warmSession && r.mode === mode)!;
      return pick('sequential').wall / pick('concurrent').cpu.floorMs;
    };
    const blockSpeedup = speedup(false);
    const warmSpeedup = speedup(true);
    const linkP50 = percentile(link.reactions, 50);
    const linkP95 = percentile(link.reactions, 95);
    const stormsOk = storms.every((r) => r.logins === (r.warm ? 0 : 1));
    const unstageOk = storms.every((r) => r.unstageLeftSessions === 0);
    const lockOk = storms.every((r) => r.heldWhileWaiting.length === 0);

    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    out.push(
      '',
      '=== iscsi-csi NodeStageVolume benchmark (simulated host, real tgtd, driver behind its gRPC socket) ===',
      `command: ${commandLine}`,
      `machine: ${os.availableParallelism()} CPUs (${cpu}), ${os.type()} ${os.release()}, node ${process.version}, state dir on ${sd.stateDir.split('/').slice(0, 2).join('/')}`,
      `load:    ${loadAtStart} at start, ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} at the end (1/5/15 min load average; other work on the machine skews the figures)`,
      `date:    ${new Date().toISOString()}; runs ${opts.runs} (+${opts.warmup} warm-up), storm ${opts.storm} LUNs of ${opts.lunMiB} MiB, ${opts.stormRounds} round(s)`,
      '',
      `1. Stage latency, block volume, ${opts.runs} runs each`,
      ...latencySection([first, warm], rtt),
      '',
      `2. Storm: ${opts.storm} LUNs of one target (ext4 LUNs formatted during the stage)`,
      ...stormSection(storms, roundSpeedups),
      '',
      `3. Device reaction: waitForLunDevice with a ${LINK_FALLBACK_POLL_MS / 1000} s fallback poll, the disk in sysfs, its /dev node made just before t0 (mknod), ${opts.linkRuns} runs`,
      `  resolve − t0: p50 ${ms(linkP50)}, p95 ${ms(linkP95)}, max ${ms(max(link.reactions))}  (${os.tmpdir()})`,
      '',
      'Budgets (issue 4)',
      table([
        ['budget', 'figure', 'verdict'],
        [`driver's own time per warm stage, p50 < ${BUDGET_WARM_OWN_P50_MS} ms`, ms(warmOwnP50), warmOwnP50 < BUDGET_WARM_OWN_P50_MS ? 'met' : 'MISSED'],
        [`(no budget: the CPU floor decides, see bench/cost.ts) ${opts.storm}-volume block storm against sequential`, `${blockSpeedup.toFixed(2)}× (warm session ${warmSpeedup.toFixed(2)}×); CPU cap here ${cpuCap(false).toFixed(2)}× (warm ${cpuCap(true).toFixed(2)}×)`, '-'],
        ['one login per storm (none on a warm session)', storms.map((r) => r.logins).join(', '), stormsOk ? 'met' : 'MISSED'],
        ['IQN lock never held while waiting for a device', `${sum(storms.map((r) => r.heldWhileWaiting.length))} overlaps`, lockOk ? 'met' : 'MISSED'],
        [`device-link reaction < ${BUDGET_LINK_REACTION_MS} ms (p50 / p95)`, `${ms(linkP50)} / ${ms(linkP95)}`, linkP95 < BUDGET_LINK_REACTION_MS ? 'met' : linkP50 < BUDGET_LINK_REACTION_MS ? 'met at p50 only' : 'MISSED'],
        ['(no budget) unstaging all volumes at once logs out', `${storms.filter((r) => r.unstageLeftSessions > 0).length}/${storms.length} phases left a session`, unstageOk ? 'yes' : 'NO, see section 2'],
      ]),
      '',
    );
  } finally {
    progress('cleaning up');
    await cleanup();
    clearTimeout(watchdog);
  }
  out.push(`(finished in ${ms(performance.now() - started)}, simulated host destroyed)`);
  console.log(out.join('\n'));
}

main().catch((e: Error) => {
  console.error(`bench failed: ${e.stack ?? e.message}`);
  process.exitCode = 1;
});
