// The node service's target handling on the simulated host: shared sessions, CHAP, a volume's own
// initiator name, dead portals, an existing foreign filesystem, expansion and volume health.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { mountCapability, blockCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';
import { codeOf } from '../helpers/client.js';
import { freePort } from '../sim/tgtd.js';
import { volumeKey } from '../../src/common/validate.js';

const MiB = 1024 * 1024;
let sd: SimDriver;
let work: string;

beforeAll(async () => {
  sd = await startSimDriver({ configure: (cfg) => { cfg.timeouts.deviceWaitMs = 3_000; } });
  work = join(sd.stateDir, 'kubelet');
  mkdirSync(work, { recursive: true });
});
afterAll(async () => {
  await sd?.stop();
});

const ctxFor = (iqn: string, lun: number, extra: Record<string, string> = {}) => ({ targetPortal: sd.host.portals[0]!, iqn, lun: String(lun), ...extra });
const stage = (id: string, context: Record<string, string>, capability: object, secrets: Record<string, string> = {}) =>
  sd.client.call('Node', 'NodeStageVolume', { volume_id: id, staging_target_path: join(work, `${id}-staging`), volume_capability: capability, volume_context: context, secrets });
const unstage = (id: string) => sd.client.call('Node', 'NodeUnstageVolume', { volume_id: id, staging_target_path: join(work, `${id}-staging`) });
const nodeRecords = (iqn: string) => {
  const dir = join(sd.host.root, 'var/lib/iscsi/nodes', iqn);
  return existsSync(dir) ? readdirSync(dir) : [];
};
const sessionsTo = async (iqn: string) => (await sd.host.sessions()).filter((s) => s.target === iqn);
const records = () => (existsSync(join(sd.stateDir, 'volumes')) ? readdirSync(join(sd.stateDir, 'volumes')) : []);

describe('two LUNs of one target', () => {
  const iqn = 'iqn.2026-11.dev.test:shared';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }, { lun: 2, sizeBytes: 32 * MiB }]); });

  it('share one session; unstaging one keeps it for the other; the last one logs out and deletes the node records', async () => {
    await stage('lunA', ctxFor(iqn, 1), mountCapability());
    await stage('lunB', ctxFor(iqn, 2), mountCapability());
    expect(await sessionsTo(iqn)).toHaveLength(1);
    expect(nodeRecords(iqn)).toHaveLength(1);

    await unstage('lunA');
    expect(await sessionsTo(iqn)).toHaveLength(1);
    // the other volume still works
    writeFileSync(join(work, 'lunB-staging', 'still.txt'), 'alive');
    execFileSync('sync', ['-f', join(work, 'lunB-staging', 'still.txt')]);
    expect(readFileSync(join(work, 'lunB-staging', 'still.txt'), 'utf8')).toBe('alive');
    const [session] = await sessionsTo(iqn);
    expect(session!.devices.map((d) => d.lun)).toEqual([2]);

    await unstage('lunB');
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
    expect(records()).toEqual([]);
  });

  it('staged and unstaged concurrently: one login, and the last unstage logs out', async () => {
    await Promise.all([stage('lunC', ctxFor(iqn, 1), mountCapability()), stage('lunD', ctxFor(iqn, 2), mountCapability())]);
    expect(await sessionsTo(iqn)).toHaveLength(1);
    await Promise.all([unstage('lunC'), unstage('lunD')]);
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
    expect(records()).toEqual([]);
  });
});

describe('a session that also carries a LUN this driver did not stage', () => {
  const iqn = 'iqn.2026-11.dev.test:foreign-lun';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }, { lun: 2, sizeBytes: 16 * MiB }]); });

  it('is kept when the volume is unstaged: the other user of LUN 2 is not cut off', async () => {
    await stage('mine', ctxFor(iqn, 1), blockCapability());
    const [session] = await sessionsTo(iqn);
    // someone else (the in-tree plugin during a migration, an operator) scans LUN 2 on the same session
    writeFileSync(join(sd.cfg.host.sysRoot, 'class/scsi_host', `host${session!.host}`, 'scan'), '0 0 2');
    for (let i = 0; i < 100 && !(await sessionsTo(iqn))[0]!.devices.some((d) => d.lun === 2 && d.name); i++) await new Promise((r) => setTimeout(r, 20));
    const foreign = (await sessionsTo(iqn))[0]!.devices.find((d) => d.lun === 2)!;
    expect(foreign.name).toBeTruthy();

    await unstage('mine');
    expect(records()).toEqual([]);
    const [kept] = await sessionsTo(iqn);
    expect(kept?.sid).toBe(session!.sid);
    expect(kept!.devices.map((d) => d.lun)).toEqual([2]);
    expect(existsSync(join(sd.host.root, 'dev', foreign.name!))).toBe(true);

    // once that user is done, the next volume of the target takes the session over and logs out at the end
    writeFileSync(join(sd.cfg.host.sysRoot, 'block', foreign.name!, 'device/delete'), '1');
    for (let i = 0; i < 100 && (await sessionsTo(iqn))[0]!.devices.length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    await stage('mine', ctxFor(iqn, 1), blockCapability());
    await unstage('mine');
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
  });
});

describe('every volume of a target unstaged at once', () => {
  const iqn = 'iqn.2026-11.dev.test:drain';
  const luns = [1, 2, 3, 4, 5, 6];
  beforeAll(async () => { await sd.host.createTarget(iqn, luns.map((lun) => ({ lun, sizeBytes: 16 * MiB }))); });

  it('logs out and deletes the node record once, not once per volume', async () => {
    await Promise.all(luns.map((lun) => stage(`drain${lun}`, ctxFor(iqn, lun), blockCapability())));
    expect(await sessionsTo(iqn)).toHaveLength(1);
    const before = sd.runner.stats.byName.iscsiadm ?? 0;
    await Promise.all(luns.map((lun) => unstage(`drain${lun}`)));
    // a node drain: each unstage finds no other user once the others are detaching, yet only the
    // first has anything to do (one `--logout`, one `-o delete`)
    expect((sd.runner.stats.byName.iscsiadm ?? 0) - before).toBe(2);
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
    expect(records()).toEqual([]);
    // and the target stages again afterwards: a new login
    await stage('drain1', ctxFor(iqn, 1), blockCapability());
    expect(await sessionsTo(iqn)).toHaveLength(1);
    await unstage('drain1');
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
  });
});

describe('a portal that serves other targets too', () => {
  const [a, b, c] = ['disc-a', 'disc-b', 'disc-c'].map((n) => `iqn.2026-11.dev.test:${n}`) as [string, string, string];
  beforeAll(async () => { for (const iqn of [a, b, c]) await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }]); });
  const setting = async (iqn: string, key: string): Promise<string | undefined> => {
    const r = await sd.host.run('iscsiadm', ['-m', 'node', '-T', iqn, '-p', sd.host.portals[0]!, '-o', 'show']);
    return r.stdout.split('\n').find((l) => l.startsWith(`${key} = `))?.slice(key.length + 3);
  };
  const scanSetting = (iqn: string): Promise<string | undefined> => setting(iqn, 'node.session.scan');

  it('gets node records for the staged targets only; discovery neither adds others nor resets theirs', async () => {
    await stage('discB', ctxFor(b, 1), blockCapability());
    expect(await scanSetting(b)).toBe('manual');
    expect(await setting(b, 'node.startup')).toBe('manual');
    // iscsid's login attempts end before iscsiadm's timeout (30 s: (1 + 1) attempts of 12 s)
    expect(await setting(b, 'node.session.initial_login_retry_max')).toBe('1');
    expect(await setting(b, 'node.conn[0].timeo.login_timeout')).toBe('12');
    await stage('discA', ctxFor(a, 1), blockCapability());
    // the default discovery op would have written c's record and reset b's to iscsid.conf defaults (scan auto)
    expect(nodeRecords(c)).toEqual([]);
    // and the portal's discovery record is gone once used (it could hold a discovery CHAP password)
    const sendTargets = join(sd.host.root, 'var/lib/iscsi/send_targets');
    expect(existsSync(sendTargets) ? readdirSync(sendTargets) : []).toEqual([]);
    expect(await scanSetting(b)).toBe('manual');
    await unstage('discA');
    await unstage('discB');
    for (const iqn of [a, b, c]) expect(nodeRecords(iqn)).toEqual([]);
  });
});

describe('CHAP', () => {
  const iqn = 'iqn.2026-11.dev.test:chap';
  const secrets = { 'node.session.auth.username': 'alice', 'node.session.auth.password': 'Secretpass123' };
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }], [sd.host.initiatorName], { username: 'alice', password: 'Secretpass123' }); });

  it('a wrong secret fails with an actionable error and leaves nothing behind', async () => {
    const err = await stage('chapbad', ctxFor(iqn, 1, { sessionCHAPAuth: 'true' }), blockCapability(), { ...secrets, 'node.session.auth.password': 'WrongPass999' })
      .catch((e: { code: number; details: string }) => e);
    expect((err as { code: number }).code).toBe(status.FAILED_PRECONDITION);
    expect((err as { details: string }).details).toMatch(/authorization failure .*exit 24/);
    expect((err as { details: string }).details).not.toContain('WrongPass999');
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
    expect(records()).toEqual([]);
  });

  it('no secret at all fails too; the right secret logs in, and the password is in no driver file', async () => {
    expect(await codeOf(stage('chapnone', ctxFor(iqn, 1), blockCapability()))).toBe(status.FAILED_PRECONDITION);
    await stage('chapok', ctxFor(iqn, 1, { sessionCHAPAuth: 'true' }), blockCapability(), secrets);
    expect(await sessionsTo(iqn)).toHaveLength(1);
    // grep exits 1 when no file under the driver's state holds the password
    expect(spawnSync('grep', ['-rl', 'Secretpass123', sd.stateDir]).status).toBe(1);
    await unstage('chapok');
    expect(await sessionsTo(iqn)).toEqual([]);
  });
});

describe('a volume with its own initiator name', () => {
  const iqn = 'iqn.2026-11.dev.test:own-initiator';
  const initiator = 'iqn.2026-11.dev.test:volume-initiator';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }], [initiator]); });

  it('is refused with the node initiator name (the ACL), and logs in through a cloned iface with its own', async () => {
    expect(await codeOf(stage('own0', ctxFor(iqn, 1), blockCapability()))).not.toBe(status.OK);
    await stage('own1', ctxFor(iqn, 1, { initiatorName: initiator }), blockCapability());
    const [session] = await sessionsTo(iqn);
    expect(session!.initiatorName).toBe(initiator);
    expect(session!.iface).toMatch(/^csi-[0-9a-f]{16}$/);
    expect(readdirSync(join(sd.host.root, 'var/lib/iscsi/ifaces'))).toEqual([session!.iface]);
    await unstage('own1');
    expect(readdirSync(join(sd.host.root, 'var/lib/iscsi/ifaces'))).toEqual([]);
    expect(await sessionsTo(iqn)).toEqual([]);
  });
});

describe('two volumes of one target, one with its own initiator name', () => {
  const iqn = 'iqn.2026-11.dev.test:two-initiators';
  const initiator = 'iqn.2026-11.dev.test:volume-initiator-2';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }, { lun: 2, sizeBytes: 16 * MiB }], [sd.host.initiatorName, initiator]); });

  it('scans each LUN on its own session: the node session is not borrowed for the other initiator', async () => {
    await stage('mine', ctxFor(iqn, 1), blockCapability());
    await stage('theirs', ctxFor(iqn, 2, { initiatorName: initiator }), blockCapability());
    const sessions = await sessionsTo(iqn);
    expect(sessions).toHaveLength(2);
    const byInitiator = new Map(sessions.map((s) => [s.initiatorName, s.devices.map((d) => d.lun)]));
    expect(byInitiator.get(sd.host.initiatorName)).toEqual([1]);
    expect(byInitiator.get(initiator)).toEqual([2]);
    await unstage('theirs');
    expect((await sessionsTo(iqn)).map((s) => s.initiatorName)).toEqual([sd.host.initiatorName]);
    await unstage('mine');
    expect(await sessionsTo(iqn)).toEqual([]);
  });
});

describe('portals', () => {
  const iqn = 'iqn.2026-11.dev.test:portals';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }]); });

  it('tolerates a dead portal while one path comes up, and fails clearly when none does', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    await stage('twoportals', ctxFor(iqn, 1, { portals: JSON.stringify([sd.host.portals[0], dead]) }), blockCapability());
    expect(await sessionsTo(iqn)).toHaveLength(1);
    await unstage('twoportals');
    expect(await sessionsTo(iqn)).toEqual([]);

    const err = await stage('deadonly', { targetPortal: dead, iqn, lun: '1' }, blockCapability()).catch((e: { code: number; details: string }) => e);
    expect((err as { code: number }).code).toBe(status.UNAVAILABLE);
    expect((err as { details: string }).details).toContain(dead);
    expect(records()).toEqual([]);
  });

  it('accepts a portal given by host name: it attaches through the address the name resolves to', async () => {
    const port = sd.host.portals[0]!.split(':')[1];
    await stage('byname', { targetPortal: `localhost:${port}`, iqn, lun: '1' }, blockCapability());
    const [session] = await sessionsTo(iqn);
    expect(session!.portal).toBe(`127.0.0.1:${port}`);
    expect(session!.devices.map((d) => d.lun)).toEqual([1]);
    const [key] = records();
    const saved = JSON.parse(readFileSync(join(sd.stateDir, 'volumes', key!, 'iscsi.json'), 'utf8')) as { portals: string[] };
    expect(saved.portals).toEqual([`127.0.0.1:${port}`]);
    await unstage('byname');
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
    expect(records()).toEqual([]);
  });

  it('reports a device that never appears as DEADLINE_EXCEEDED and cleans up', async () => {
    await sd.host.setFaults({ noDevice: [{ iqn, lun: 1 }] });
    try {
      expect(await codeOf(stage('nodevice', ctxFor(iqn, 1), blockCapability()))).toBe(status.DEADLINE_EXCEEDED);
    } finally {
      await sd.host.setFaults({});
    }
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(records()).toEqual([]);
  });
});

describe('a udev that lags behind the kernel (a storm on a real node)', () => {
  const iqn = 'iqn.2026-11.dev.test:udev-lag';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }, { lun: 2, sizeBytes: 16 * MiB }]); });

  it('stages by the kernel\'s own device while the by-path link is still missing, past the device wait', async () => {
    // the by-path link comes long after timeouts.deviceWaitMs (3 s here); the disk and its node at once
    await sd.host.setFaults({ linkDelayMs: 8_000 });
    try {
      const started = Date.now();
      await Promise.all([stage('lagfs', ctxFor(iqn, 1), mountCapability('ext4')), stage('lagblk', ctxFor(iqn, 2), blockCapability())]);
      expect(Date.now() - started).toBeLessThan(8_000);
      const [session] = await sessionsTo(iqn);
      const disks = session!.devices.map((d) => d.name).sort();
      expect(disks).toHaveLength(2);
      expect(readdirSync(sd.host.paths.byPath).filter((l) => l.includes(iqn))).toEqual([]);
      const mounted = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === join(work, 'lagfs-staging'));
      expect(mounted).toBeDefined();
      const record = JSON.parse(readFileSync(join(sd.stateDir, 'volumes', volumeKey('lagblk'), 'iscsi.json'), 'utf8')) as { devicePath: string };
      expect(record.devicePath).toMatch(/\/sd[a-z]+$/);
    } finally {
      await sd.host.setFaults({});
    }
    await unstage('lagfs');
    await unstage('lagblk');
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(records()).toEqual([]);
  });
});

describe('an iscsid restarted while a volume is staged', () => {
  const iqn = 'iqn.2026-11.dev.test:iscsid-restart';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }]); });

  it('is waited for at logout: "no matching sessions" while the kernel keeps the session is not a logout', async () => {
    await stage('resync', ctxFor(iqn, 1), blockCapability());
    await sd.host.setFaults({ iscsidResyncUntil: Date.now() + 1_500 });
    try {
      await unstage('resync');
    } finally {
      await sd.host.setFaults({});
    }
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
    expect(records()).toEqual([]);
  });
});

describe('a published volume whose staging mount went away', () => {
  const iqn = 'iqn.2026-11.dev.test:restage';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }]); });

  it('is staged again and still known as published: unstage refuses until it is unpublished', async () => {
    const cap = mountCapability('ext4');
    const staging = join(work, 'restage-staging');
    const target = join(work, 'restage-target');
    await stage('restage', ctxFor(iqn, 1), cap);
    await sd.client.call('Node', 'NodePublishVolume', { volume_id: 'restage', staging_target_path: staging, target_path: target, volume_capability: cap, readonly: false });
    execFileSync('umount', [staging]); // e.g. an operator, or a node agent cleaning up
    await stage('restage', ctxFor(iqn, 1), cap); // kubelet's next stage mounts it again
    expect(await codeOf(unstage('restage'))).toBe(status.FAILED_PRECONDITION);
    await sd.client.call('Node', 'NodeUnpublishVolume', { volume_id: 'restage', target_path: target });
    await unstage('restage');
    expect(await sessionsTo(iqn)).toEqual([]);
  });
});

describe('a reader-only volume', () => {
  const iqn = 'iqn.2026-11.dev.test:reader';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }]); });

  it('is published read-only even when the publish flag says otherwise, and republishing is idempotent', async () => {
    const cap = blockCapability('MULTI_NODE_READER_ONLY');
    await stage('reader', ctxFor(iqn, 1), cap);
    const target = join(work, 'reader-dev');
    const publish = () => sd.client.call('Node', 'NodePublishVolume', { volume_id: 'reader', staging_target_path: join(work, 'reader-staging'), target_path: target, volume_capability: cap, readonly: false });
    await publish();
    await publish();
    const line = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === target)!;
    expect(line.split(' ')[5]!.split(',')).toContain('ro');
    await sd.client.call('Node', 'NodeUnpublishVolume', { volume_id: 'reader', target_path: target });
    await unstage('reader');
  });
});

describe('a portal whose discovery hangs', () => {
  const iqns = ['hang-d1', 'hang-d2', 'hang-d3'].map((n) => `iqn.2026-11.dev.test:${n}`);
  beforeAll(async () => { for (const iqn of iqns) await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }]); });

  it('costs the stages of its targets one discovery timeout together, not one each in turn', async () => {
    const iscsiadm = sd.cfg.commands.iscsiadm;
    const saved = iscsiadm.timeoutMs;
    iscsiadm.timeoutMs = 1_500;
    const runner = sd.runner as { run: typeof sd.runner.run };
    const run = runner.run;
    let discoveries = 0;
    runner.run = (name, args, opts) => {
      // a discovery starts with its record's `-o new` (the record's `-o delete` follows it)
      if (name === 'iscsiadm' && args.includes('discoverydb') && !args.includes('delete')) discoveries += 1;
      return run.call(sd.runner, name, args, opts);
    };
    await sd.host.setFaults({ hang: ['discovery'] });
    try {
      const codes = await Promise.all(iqns.map((iqn, i) => codeOf(stage(`hangdisc${i}`, ctxFor(iqn, 1), blockCapability()))));
      expect(codes).toEqual([status.DEADLINE_EXCEEDED, status.DEADLINE_EXCEEDED, status.DEADLINE_EXCEEDED]);
      expect(discoveries).toBe(1);
    } finally {
      runner.run = run;
      await sd.host.setFaults({});
      iscsiadm.timeoutMs = saved;
    }
    expect(records()).toEqual([]);
    await stage('hangdisc0', ctxFor(iqns[0]!, 1), blockCapability());
    await unstage('hangdisc0');
    for (const iqn of iqns) expect(nodeRecords(iqn)).toEqual([]);
  });
});

describe('a hung iscsiadm', () => {
  const iqn = 'iqn.2026-11.dev.test:hang';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }]); });

  it('is killed at its timeout: DEADLINE_EXCEEDED, the target lock released, nothing left behind', async () => {
    const iscsiadm = sd.cfg.commands.iscsiadm;
    const saved = iscsiadm.timeoutMs;
    iscsiadm.timeoutMs = 1_500;
    await sd.host.setFaults({ hang: ['login'] });
    try {
      const started = Date.now();
      const err = await stage('hung', ctxFor(iqn, 1), blockCapability()).catch((e: { code: number; details: string }) => e);
      expect((err as { code: number }).code).toBe(status.DEADLINE_EXCEEDED);
      expect((err as { details: string }).details).toContain('iscsiadm did not finish within 1500 ms');
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await sd.host.setFaults({});
      iscsiadm.timeoutMs = saved;
    }
    expect(records()).toEqual([]);
    // the lock was released: the same target stages and unstages at once
    await stage('hung', ctxFor(iqn, 1), blockCapability());
    await unstage('hung');
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
  });
});

describe('an unstage that fails at logout', () => {
  const iqn = 'iqn.2026-11.dev.test:logout-fails';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 16 * MiB }]); });

  const failLogout = async (): Promise<void> => {
    const iscsiadm = sd.cfg.commands.iscsiadm;
    const saved = iscsiadm.timeoutMs;
    iscsiadm.timeoutMs = 1_500;
    await sd.host.setFaults({ hang: ['logout'] });
    try {
      expect(await codeOf(unstage('lofail'))).toBe(status.DEADLINE_EXCEEDED);
    } finally {
      await sd.host.setFaults({});
      iscsiadm.timeoutMs = saved;
    }
    // devices gone, session still there, the record kept (marked detaching) for the retry
    expect(await sessionsTo(iqn)).toHaveLength(1);
    expect(records()).toHaveLength(1);
  };

  it('is finished by the next unstage: logged out, nothing left', async () => {
    await stage('lofail', ctxFor(iqn, 1), blockCapability());
    await failLogout();
    await unstage('lofail');
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(nodeRecords(iqn)).toEqual([]);
    expect(records()).toEqual([]);
  });

  it('or the volume is staged again: the half-done unstage is finished first (its session logged out)', async () => {
    await stage('lofail', ctxFor(iqn, 1), blockCapability());
    await failLogout();
    const [old] = await sessionsTo(iqn);
    await stage('lofail', ctxFor(iqn, 1), blockCapability());
    const [fresh] = await sessionsTo(iqn);
    expect(fresh!.sid).not.toBe(old!.sid);
    expect(fresh!.devices.map((d) => d.lun)).toEqual([1]);
    await unstage('lofail');
    expect(await sessionsTo(iqn)).toEqual([]);
    expect(records()).toEqual([]);
  });
});

describe('a volume whose I/O hangs', () => {
  const iqn = 'iqn.2026-11.dev.test:io-hang';
  beforeAll(async () => { await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 32 * MiB }]); });
  type Stats = { usage: unknown[]; volume_condition: { abnormal: boolean; message: string } };

  it('gets its stats answered within timeouts.volumeProbeMs, abnormal, with one stuck read at most', async () => {
    await stage('iohang', ctxFor(iqn, 1), mountCapability('ext4'));
    const staging = join(work, 'iohang-staging');
    const healthy = await sd.client.call<Stats>('Node', 'NodeGetVolumeStats', { volume_id: 'iohang', volume_path: staging });
    expect(healthy.volume_condition).toEqual({ abnormal: false, message: 'healthy' });
    expect(healthy.usage).toHaveLength(2);

    // a read of the volume that never returns, as on a dead target under queue_if_no_path
    const stuck = join(work, 'stuck-read.sh');
    writeFileSync(stuck, '#!/bin/sh\nexec sleep 31.5\n', { mode: 0o755 });
    const find = sd.cfg.commands.find;
    const saved = { argv: find.argv, probe: sd.cfg.timeouts.volumeProbeMs };
    find.argv = [stuck];
    sd.cfg.timeouts.volumeProbeMs = 300;
    const hung = (): number => Number(spawnSync('pgrep', ['-c', '-f', 'sleep 31.5'], { encoding: 'utf8' }).stdout.trim() || '0');
    try {
      const first = await sd.client.call<Stats>('Node', 'NodeGetVolumeStats', { volume_id: 'iohang', volume_path: staging });
      expect(first.volume_condition).toEqual({ abnormal: true, message: `I/O on ${staging} does not complete: reading it took longer than 300 ms` });
      // kubelet drops a reply without usage (and its condition): the last figures read are reported
      expect(first.usage).toEqual(healthy.usage);
      const second = await sd.client.call<Stats>('Node', 'NodeGetVolumeStats', { volume_id: 'iohang', volume_path: staging });
      expect(second.volume_condition.abnormal).toBe(true);
      expect(second.volume_condition.message).toMatch(new RegExp(`^I/O on ${staging} is stuck: a read started \\d+ s ago has not finished$`));
      expect(hung()).toBe(1); // the second call started no second read
    } finally {
      spawnSync('pkill', ['-KILL', '-f', 'sleep 31.5']);
      find.argv = saved.argv;
      sd.cfg.timeouts.volumeProbeMs = saved.probe;
    }
    // the stuck read is gone: the next stats are healthy again
    for (let i = 0; i < 50 && hung() > 0; i++) await new Promise((r) => setTimeout(r, 20));
    const again = await sd.client.call<Stats>('Node', 'NodeGetVolumeStats', { volume_id: 'iohang', volume_path: staging });
    expect(again.volume_condition).toEqual({ abnormal: false, message: 'healthy' });
    await unstage('iohang');
  });
});

describe('a LUN that already holds another filesystem', () => {
  const iqn = 'iqn.2026-11.dev.test:xfs';
  let backing: string;
  beforeAll(async () => {
    backing = (await sd.host.createTarget(iqn, [{ lun: 1, sizeBytes: 320 * MiB }])).luns[0]!.path;
    execFileSync('mkfs.xfs', ['-q', '-f', backing]);
  });

  it('is FAILED_PRECONDITION when staged as ext4, and its filesystem is intact', async () => {
    const before = execFileSync('blkid', ['-p', '-o', 'export', backing], { encoding: 'utf8' });
    const err = await stage('xfsvol', ctxFor(iqn, 1), mountCapability('ext4')).catch((e: { code: number; details: string }) => e);
    expect((err as { code: number }).code).toBe(status.FAILED_PRECONDITION);
    expect((err as { details: string }).details).toContain('xfs');
    expect(execFileSync('blkid', ['-p', '-o', 'export', backing], { encoding: 'utf8' })).toBe(before);
    expect(await sessionsTo(iqn)).toEqual([]);
  });

  it('stages as xfs, grows online after the LUN grew, and reports health', async () => {
    const staging = join(work, 'xfsvol-staging');
    const target = join(work, 'xfsvol-target');
    await stage('xfsvol', ctxFor(iqn, 1), mountCapability('xfs'));
    await sd.client.call('Node', 'NodePublishVolume', { volume_id: 'xfsvol', staging_target_path: staging, target_path: target, volume_capability: mountCapability('xfs'), readonly: false });
    const stats = await sd.client.call<{ usage: { unit: string; total: number }[]; volume_condition: { abnormal: boolean; message: string } }>('Node', 'NodeGetVolumeStats', { volume_id: 'xfsvol', volume_path: target });
    expect(stats.volume_condition).toEqual({ abnormal: false, message: 'healthy' });
    expect(stats.usage.map((u) => u.unit)).toEqual(['BYTES', 'INODES']);
    const sizeBefore = (await statfs(target)).blocks;

    await sd.host.growLun(iqn, 1, 640 * MiB);
    const res = await sd.client.call<{ capacity_bytes: number }>('Node', 'NodeExpandVolume', { volume_id: 'xfsvol', volume_path: target, capacity_range: { required_bytes: 640 * MiB } });
    expect(res.capacity_bytes).toBe(640 * MiB);
    expect((await statfs(target)).blocks).toBeGreaterThan(sizeBefore * 1.8);
    // already big enough → OK
    await sd.client.call('Node', 'NodeExpandVolume', { volume_id: 'xfsvol', volume_path: target, capacity_range: { required_bytes: 320 * MiB } });

    // the target goes away: the condition says so
    await sd.host.setFaults({ portalDown: [sd.host.portals[0]!] });
    try {
      const bad = await sd.client.call<{ volume_condition: { abnormal: boolean; message: string } }>('Node', 'NodeGetVolumeStats', { volume_id: 'xfsvol', volume_path: target });
      expect(bad.volume_condition.abnormal).toBe(true);
      expect(bad.volume_condition.message).toContain('FAILED');
    } finally {
      await sd.host.setFaults({});
    }
    expect(await codeOf(sd.client.call('Node', 'NodeGetVolumeStats', { volume_id: 'xfsvol', volume_path: join(work, 'elsewhere') }))).toBe(status.NOT_FOUND);
    expect(await codeOf(sd.client.call('Node', 'NodeGetVolumeStats', { volume_id: 'xfsvol', volume_path: 'some/path' }))).toBe(status.NOT_FOUND);

    await sd.client.call('Node', 'NodeUnpublishVolume', { volume_id: 'xfsvol', target_path: target });
    await unstage('xfsvol');
    expect(await sessionsTo(iqn)).toEqual([]);
  });
});
