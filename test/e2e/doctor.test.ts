// `iscsi-csi doctor` as an operator runs it: the built executable with the driver's config file. On the
// simulated host (its kernel's sysfs and iscsid socket, fake iscsiadm and multipathd, the real tgtd) every
// check is ok; on a bare host (an empty root, commands that do not exist, its own empty network
// namespace) each failure is named with its fix and the exit status is 1. Neither writes anything but
// the state dir's probe file.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { createLogger } from '../../src/log.js';
import { CHECK } from '../../src/doctor/check.js';
import { ISCSID_SOCKET, listensAt } from '../../src/doctor/iscsi.js';
import { startSimDriver, type SimDriver } from '../helpers/sim-driver.js';

const CLI = join(process.cwd(), 'dist/src/cli.js');
const execFileP = promisify(execFile);

interface DoctorJson {
  mode: string;
  checks: { name: string; status: 'ok' | 'warn' | 'fail'; detail: string; fix: string | null }[];
  summary: { ok: number; warn: number; fail: number };
  notes: string[];
}

/** Runs the CLI (optionally through a wrapper such as `unshare -n`); never rejects on a non-zero exit. */
async function doctor(args: string[], wrapper: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  const [file, ...rest] = [...wrapper, 'node', CLI, 'doctor', ...args];
  try {
    const r = await execFileP(file!, rest, { timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    if (typeof err.code !== 'number') throw e;
    return { code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

const byName = (doc: DoctorJson) => Object.fromEntries(doc.checks.map((c) => [c.name, c]));

describe('doctor on the simulated host', () => {
  let sd: SimDriver;
  let dir: string;
  let configFile: string;
  let kubeletDir: string;

  beforeAll(async () => {
    sd = await startSimDriver({ multipath: true });
    dir = mkdtempSync(join(tmpdir(), 'doctor-sim-'));
    configFile = join(dir, 'config.json');
    writeFileSync(configFile, JSON.stringify(sd.cfg));
    // a real node's kubelet dir sits on a shared mount (systemd makes / shared); this machine's / is private
    kubeletDir = join(dir, 'kubelet');
    mkdirSync(kubeletDir);
    await execFileP('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'doctor-kubelet', kubeletDir]);
    await execFileP('mount', ['--make-shared', kubeletDir]);
    // the simulated kernel's iscsid socket is held by a helper that may still be starting (or waiting for
    // another simulated host's to go)
    const deadline = Date.now() + 15_000;
    while (!listensAt(readFileSync('/proc/self/net/unix', 'utf8'), ISCSID_SOCKET)) {
      if (Date.now() > deadline) throw new Error(`nothing listens on ${ISCSID_SOCKET}: the simulated kernel's holder did not start`);
      await new Promise((r) => setTimeout(r, 100));
    }
  });

  afterAll(async () => {
    if (kubeletDir) await execFileP('umount', [kubeletDir]).catch(() => undefined);
    await sd?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('finds every check ok, node and controller, and exits 0', async () => {
    // the driver's own start-up checks make (and remove) a probe file of their own at about this time
    const listing = () => readdirSync(sd.stateDir).filter((n) => !n.startsWith('.doctor-probe-')).sort();
    const before = listing();
    const r = await doctor(['--json', '--mode', 'all', '--config', configFile, '--kubelet-dir', kubeletDir]);
    expect(r.stderr).toBe('');
    const doc = JSON.parse(r.stdout) as DoctorJson;
    expect(doc.checks.filter((c) => c.status !== 'ok')).toEqual([]);
    expect(doc.checks.map((c) => c.name)).toEqual([CHECK.iscsiadm, CHECK.iscsid, CHECK.initiatorName, CHECK.iscsiTcp, CHECK.multipathd, CHECK.kubeletDir, CHECK.stateDir, CHECK.tgtd, CHECK.tgtPool]);
    expect(r.code).toBe(0);
    const c = byName(doc);
    expect(c[CHECK.iscsiadm]!.detail).toMatch(/^iscsiadm version 2\.1\.8 \(host access: none/);
    expect(c[CHECK.iscsid]!.detail).toContain('listening on @ISCSIADM_ABSTRACT_NAMESPACE');
    expect(c[CHECK.initiatorName]!.detail).toContain(sd.host.initiatorName);
    expect(c[CHECK.iscsiTcp]!.detail).toContain(join(sd.cfg.host.sysRoot, 'module/iscsi_tcp'));
    expect(c[CHECK.multipathd]!.detail).toMatch(/running; find_multipaths greedy .*user_friendly_names yes/);
    expect(c[CHECK.kubeletDir]!.detail).toMatch(/propagation shared:\d+/);
    expect(c[CHECK.tgtd]!.detail).toContain(`control port ${sd.host.tgtd.controlPort}: state ready`);
    expect(doc.checks.every((x) => x.fix === null)).toBe(true);
    // no probe file is left; the driver's own files are as they were
    await expect.poll(() => readdirSync(sd.stateDir).filter((n) => n.startsWith('.doctor-probe-')), { timeout: 5_000 }).toEqual([]);
    expect(listing()).toEqual(before);
  });

  it('prints the same as a table', async () => {
    const r = await doctor(['--mode', 'node', '--config', configFile, '--kubelet-dir', kubeletDir]);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')[0]).toMatch(/^CHECK\s+STATUS\s+DETAIL\s+FIX$/);
    for (const name of [CHECK.iscsiadm, CHECK.iscsid, CHECK.initiatorName, CHECK.iscsiTcp, CHECK.multipathd, CHECK.kubeletDir, CHECK.stateDir]) {
      expect(r.stdout).toMatch(new RegExp(`^${name}\\s+ok\\s`, 'm'));
    }
    expect(r.stdout).toContain('node checks: 7 ok, 0 warn, 0 fail');
    process.stdout.write(`\n--- doctor on the simulated host ---\n${r.stdout}`);
  });
});

describe('doctor on a bare host', () => {
  const root = mkdtempSync(join(tmpdir(), 'doctor-bare-'));
  const configFile = join(root, 'config.json');
  const stateDir = join(root, 'state');
  const missing = (tool: string) => ({ argv: [join(root, 'bin', tool)], timeoutMs: 2_000 });
  writeFileSync(configFile, JSON.stringify({
    stateDir,
    host: {
      sysRoot: join(root, 'sys'), devRoot: join(root, 'dev'), mountInfoPath: '/proc/self/mountinfo',
      initiatorNameFile: join(root, 'etc/iscsi/initiatorname.iscsi'), udevDataDir: join(root, 'run/udev/data'), iscsiLockDir: join(root, 'run/lock/iscsi'),
    },
    commands: { iscsiadm: missing('iscsiadm'), multipath: missing('multipath'), multipathd: missing('multipathd'), tgtadm: missing('tgtadm') },
    controller: { backend: 'tgt', tgt: { controlPort: 7, portals: ['127.0.0.1:3260'], poolDir: join(root, 'pool'), iqnPrefix: 'iqn.2026-11.dev.tsdriver', sharedTargetName: 'shared' } },
  }));
  // its own network namespace: no iscsid socket of this machine (or of a simulated host running now) in it
  const isolated = ['unshare', '--net'];
  const args = ['--mode', 'all', '--config', configFile, '--kubelet-dir', join(root, 'var/lib/kubelet')];

  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('names each failure with its fix and exits 1; --json parses', async () => {
    const r = await doctor(['--json', ...args], isolated);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout) as DoctorJson;
    const c = byName(doc);
    const statuses = Object.fromEntries(doc.checks.map((x) => [x.name, x.status]));
    expect(statuses).toEqual({
      [CHECK.iscsiadm]: 'fail', [CHECK.iscsid]: 'fail', [CHECK.initiatorName]: 'fail', [CHECK.iscsiTcp]: 'fail',
      [CHECK.multipathd]: 'warn', [CHECK.kubeletDir]: 'fail', [CHECK.stateDir]: 'ok', [CHECK.tgtd]: 'fail', [CHECK.tgtPool]: 'ok',
    });
    for (const x of doc.checks) {
      if (x.status === 'ok') expect(x.fix, x.name).toBeNull();
      else expect(x.fix, x.name).toMatch(/\w{3,}/);
    }
    expect(c[CHECK.iscsiadm]!.detail).toContain(`cannot run iscsiadm (${join(root, 'bin/iscsiadm')}): not found`);
    expect(c[CHECK.iscsiadm]!.fix).toContain('install open-iscsi');
    expect(c[CHECK.iscsid]!.detail).toContain('nothing listens on iscsid\'s control socket @ISCSIADM_ABSTRACT_NAMESPACE');
    expect(c[CHECK.iscsid]!.fix).toContain('systemctl enable --now iscsid.socket');
    expect(c[CHECK.initiatorName]!.detail).toContain('ENOENT');
    expect(c[CHECK.iscsiTcp]!.detail).toContain(`${join(root, 'sys/module/iscsi_tcp')} does not exist`);
    expect(c[CHECK.iscsiTcp]!.fix).toContain('modprobe iscsi_tcp');
    expect(c[CHECK.multipathd]!.detail).toContain(`cannot run multipathd (${join(root, 'bin/multipathd')}): not found`);
    expect(c[CHECK.kubeletDir]!.detail).toContain('does not exist');
    expect(c[CHECK.stateDir]!.detail).toContain('does not exist yet');
    expect(c[CHECK.tgtd]!.fix).toContain('install tgt');
    expect(doc.summary).toEqual({ ok: 2, warn: 1, fail: 6 });
    expect(doc.notes.join(' ')).toContain('This host has no kernel iSCSI initiator');
    // nothing was written: the state dir the driver would create is still not there
    expect(existsSync(stateDir)).toBe(false);
  });

  it('prints the table, no stack trace', async () => {
    const r = await doctor(args, isolated);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('');
    expect(r.stdout).not.toMatch(/\n\s+at /);
    expect(r.stdout).toMatch(/^iscsi_tcp module\s+fail\s/m);
    expect(r.stdout).toContain('node and controller checks: 2 ok, 1 warn, 6 fail');
    expect(r.stdout).toContain('This host has no kernel iSCSI initiator');
    process.stdout.write(`\n--- doctor on a bare host ---\n${r.stdout}`);
  });

  it('exits 2 with one line for a bad flag or config', async () => {
    expect(await doctor(['--mode', 'sideways'])).toMatchObject({ code: 2, stderr: 'iscsi-csi doctor: --mode must be node, controller or all, got "sideways"\n' });
    const bad = join(root, 'bad.json');
    writeFileSync(bad, JSON.stringify({ stateDri: '/x' }));
    const r = await doctor(['--config', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`iscsi-csi doctor: invalid config (${bad}): unknown key stateDri\n`);
  });
});

describe('the node plugin at start', () => {
  it('logs each check that is not ok at warn and a summary at info, after it serves', async () => {
    const lines: { level: string; msg: string; check?: string; fix?: string; component?: string }[] = [];
    const sink = new Writable({ write(chunk: Buffer, _e, cb) { for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l)); cb(); } });
    // no multipathd on this simulated host, and /var/lib/kubelet is not on a shared mount here
    const sd = await startSimDriver({ multipath: false, logger: createLogger('info', sink) });
    try {
      await expect.poll(() => lines.some((l) => /^node checks: /.test(l.msg)), { timeout: 20_000 }).toBe(true);
      const serving = lines.findIndex((l) => l.msg === 'serving');
      const summary = lines.findIndex((l) => /^node checks: /.test(l.msg));
      expect(serving).toBeGreaterThanOrEqual(0);
      expect(summary).toBeGreaterThan(serving);
      expect(lines[summary]).toMatchObject({ level: 'info', component: 'doctor' });
      const multipathd = lines.find((l) => l.check === CHECK.multipathd);
      expect(multipathd).toMatchObject({ level: 'warn', msg: 'node check multipathd: warn', fix: expect.stringContaining('multipathd') });
      // the checks the simulated host provides are not logged
      for (const name of [CHECK.iscsiadm, CHECK.iscsid, CHECK.initiatorName, CHECK.iscsiTcp, CHECK.stateDir]) {
        expect(lines.find((l) => l.check === name), name).toBeUndefined();
      }
      expect(lines.filter((l) => l.component === 'doctor' && l.level === 'warn').every((l) => typeof l.fix === 'string')).toBe(true);
    } finally {
      await sd.stop();
    }
  });
});
