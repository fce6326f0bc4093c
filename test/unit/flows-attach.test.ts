// The attach algorithm on the in-memory host: the order of its steps, what runs under the target lock,
// dead portals, the multipath wait and the device name recorded.
import { describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import { stage, unstage, type StageSpec } from '../../src/flows/stage.js';
import { attach } from '../../src/flows/attach.js';
import { clonedIfaceName } from '../../src/common/validate.js';
import { StepTimes } from '../../src/common/step-times.js';
import { FakeHost, rejectionOf } from '../fake/host.js';
import { chap, IQN, OWN_INITIATOR, P1, P2, stageSpec, stagingPathOf, targetOf } from '../fake/specs.js';

const LUN0_LINK = `/dev/disk/by-path/ip-10.0.0.1:3260-iscsi-${IQN}-lun-0`;

function fakeWithTarget(portals = [P1, P2]): FakeHost {
  return new FakeHost().addTarget({ iqn: IQN, portals, luns: { 0: {}, 1: {} } });
}

function stageRejects(fake: FakeHost, spec: StageSpec): Promise<Error & { code?: number }> {
  return rejectionOf(stage(fake.host, spec, null, fake.log));
}

describe('attach: order of the steps', () => {
  it('records the attach before the iface clone, clones the iface before the login, and logs in through the clone', async () => {
    // the target admits only the volume's own initiator name
    const fake = new FakeHost().addTarget({ iqn: IQN, portals: [P1], luns: { 0: {} }, acl: [OWN_INITIATOR] });
    await stage(fake.host, stageSpec('vol-a', { initiatorName: OWN_INITIATOR }), null, fake.log);

    const clone = clonedIfaceName('default', 'vol-a');
    const saved = fake.indexOf('metadata.save', 'vol-a attaching');
    const cloned = fake.indexOf('iscsi.cloneIface', clone);
    const login = fake.indexOf('iscsi.login');
    expect(saved).toBeGreaterThanOrEqual(0);
    expect(saved).toBeLessThan(cloned);
    expect(cloned).toBeLessThan(login);
    expect(fake.callsOf('iscsi.login').map((c) => c.detail)).toEqual([`${P1} ${IQN} ${clone}`]);
    expect(fake.sessions()).toEqual([{ iqn: IQN, portal: P1, iface: clone, state: 'LOGGED_IN' }]);
    expect(fake.record('vol-a')).toMatchObject({ phase: 'staged', iface: clone, clonedIface: clone, initiatorName: OWN_INITIATOR });
  });

  it('has saved the attaching record by the time the first login runs (a concurrent detach counts it)', async () => {
    const fake = fakeWithTarget();
    let recordAtLogin: unknown;
    const login = fake.host.iscsi.login.bind(fake.host.iscsi);
    fake.host.iscsi.login = async (node) => {
      recordAtLogin ??= fake.record('vol-a')?.phase;
      return login(node);
    };
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);
    expect(recordAtLogin).toBe('attaching');
  });

  it('holds the target lock for login and scan only, never while it waits for the device', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a', { portals: [P1, P2] }), null, fake.log);

    for (const op of ['iscsi.newNode', 'iscsi.updateNode', 'iscsi.login', 'sysfs.scanLun']) {
      const calls = fake.callsOf(op);
      expect(calls, op).toHaveLength(2);
      for (const c of calls) expect(c.locks, `${op} ${c.detail}`).toContain(IQN);
    }
    // the discovery record is the portal's: its own lock, taken inside the target's (portals are connected side by side)
    for (const c of fake.callsOf('iscsi.discover')) {
      expect(c.locks[0]).toBe(IQN);
      expect(c.locks).toContain(`discovery ${c.detail.split(' ')[0]}`);
    }
    const waits = [...fake.callsOf('devices.waitForLunDevice'), ...fake.callsOf('devices.waitForMultipathHolder'), ...fake.callsOf('fs.mkfs'), ...fake.callsOf('mounts.mount')];
    expect(waits.length).toBeGreaterThanOrEqual(4);
    for (const c of waits) expect(c.locks, `${c.op} ${c.detail}`).toEqual([]);
    expect(fake.leftovers().locks).toEqual([]);
  });

  it('logs in with a manual scan and manual startup, deletes the discovery record after use, and sets session CHAP without writing the secret', async () => {
    const fake = fakeWithTarget([P1]);
    await stage(fake.host, stageSpec('vol-a', { sessionChap: chap('alice', 'sekrit-1'), discoveryChap: chap('disco', 'sekrit-2') }), null, fake.log);

    expect(fake.nodeRecordSettings(P1, IQN, 'default')).toMatchObject({
      'node.session.scan': 'manual', 'node.startup': 'manual', 'node.session.auth.authmethod': 'CHAP', 'node.session.auth.username': 'alice',
    });
    expect(JSON.stringify(fake.nodeRecordSettings(P1, IQN, 'default'))).not.toContain('sekrit');
    expect(fake.ops('iscsi.').slice(0, 4)).toEqual(['iscsi.newDiscovery', 'iscsi.setDiscoveryChap', 'iscsi.discover', 'iscsi.deleteDiscovery']);
    expect(fake.callsOf('iscsi.discover')[0]!.detail).toContain('nonpersistent');
    expect(fake.discoveryRecordKeys()).toEqual([]);
    expect(JSON.stringify(fake.calls) + JSON.stringify(fake.logs)).not.toContain('sekrit');
  });

  it('only scans the LUN on a portal that is already logged in: no discovery, no second login', async () => {
    const fake = fakeWithTarget([P1]);
    await stage(fake.host, stageSpec('vol-a', { lun: 0 }), null, fake.log);
    const before = fake.calls.length;
    await stage(fake.host, stageSpec('vol-b', { lun: 1 }), null, fake.log);

    const second = fake.calls.slice(before).map((c) => c.op);
    expect(second).toContain('sysfs.scanLun');
    expect(second.filter((op) => op.startsWith('iscsi.'))).toEqual([]);
    expect(fake.sessions()).toHaveLength(1);
    expect(fake.deviceNames()).toHaveLength(2);
  });

  it('resolves a portal given by host name before anything is recorded: records, sessions and the record use the address', async () => {
    const fake = fakeWithTarget([P1]).addHostName('san.example', '10.0.0.1');
    await stage(fake.host, stageSpec('vol-a', { portals: ['san.example:3260'] }), null, fake.log);

    expect(fake.indexOf('resolver.resolvePortals')).toBeLessThan(fake.indexOf('metadata.save'));
    expect(fake.nodeRecords()).toEqual([`${P1} ${IQN} default`]);
    expect(fake.record('vol-a')!.portals).toEqual([P1]);
  });

  it('a name that does not resolve fails before any record or command', async () => {
    const fake = fakeWithTarget([P1]);
    const e = await stageRejects(fake, stageSpec('vol-a', { portals: ['nowhere.example:3260'] }));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(fake.ops('metadata.save')).toEqual([]);
    expect(fake.ops('iscsi.')).toEqual([]);
  });

  it('refuses an iface that does not exist on the node before any login', async () => {
    const fake = fakeWithTarget([P1]);
    const e = await stageRejects(fake, stageSpec('vol-a', { iface: 'iface-missing' }));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.message).toBe('iSCSI interface iface-missing does not exist on this node (iscsiadm -m iface -I iface-missing)');
    expect(fake.ops('iscsi.login')).toEqual([]);
  });

  it('hands the caller the plan (resolved portals, iface) before it changes the host', async () => {
    const fake = fakeWithTarget([P1]);
    const seen: string[] = [];
    const attached = await attach(fake.host, targetOf({ initiatorName: OWN_INITIATOR }), 'vol-a', fake.log, async (plan) => {
      seen.push(`${plan.iface} ${plan.clonedIface} ${plan.target.portals.length} after ${fake.ops('iscsi.').length} iscsi calls`);
    }, new StepTimes());
    const clone = clonedIfaceName('default', 'vol-a');
    expect(seen).toEqual([`${clone} ${clone} 1 after 0 iscsi calls`]);
    expect(attached.paths.map((p) => p.portal)).toEqual([P1]);
  });
});

describe('attach: a failed login', () => {
  it('deletes the node record it made (a reboot would retry it forever) and answers the login error', async () => {
    const fake = fakeWithTarget([P1]).fail('iscsi.login', { exit: 24 });
    const e = await stageRejects(fake, stageSpec('vol-a'));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.message).toBe(`iSCSI login to ${P1} ${IQN} default failed: iSCSI login failed due to authorization failure (iscsiadm exit 24)`);
    expect(fake.indexOf('iscsi.deleteNode')).toBeGreaterThan(fake.indexOf('iscsi.login'));
    expect(fake.nodeRecords()).toEqual([]);
  });
});

describe('attach: dead portals', () => {
  it('a portal whose login fails while another comes up: staged; its node record stays with manual startup (the healer logs in with it), and unstage deletes it', async () => {
    const fake = fakeWithTarget().fail('iscsi.login', { exit: 24 }, { match: P2 });
    await stage(fake.host, stageSpec('vol-a', { portals: [P1, P2] }), null, fake.log);
    expect(fake.record('vol-a')!.phase).toBe('staged');
    expect(fake.nodeRecords()).toEqual([`${P1} ${IQN} default`, `${P2} ${IQN} default`]);
    expect(fake.nodeRecordSettings(P2, IQN, 'default')).toMatchObject({ 'node.startup': 'manual', 'node.session.scan': 'manual' });
    await unstage(fake.host, fake.record('vol-a')!, fake.log);
    expect(fake.nodeRecords()).toEqual([]);
    expect(fake.markedSessions()).toEqual([]);
  });

  it('a node record whose settings cannot be written is deleted (without manual startup a boot would log in to it)', async () => {
    const fake = fakeWithTarget().fail('iscsi.updateNode', { exit: 6 }, { match: P2 });
    await stage(fake.host, stageSpec('vol-a', { portals: [P1, P2] }), null, fake.log);
    expect(fake.nodeRecords()).toEqual([`${P1} ${IQN} default`]);
  });

  it('one portal of two down: staged with the one path that came up, the dead one reported', async () => {
    const fake = fakeWithTarget();
    fake.faults.portalsDown.add(P2);
    await stage(fake.host, stageSpec('vol-a', { portals: [P1, P2] }), null, fake.log);

    const rec = fake.record('vol-a')!;
    expect(rec.phase).toBe('staged');
    expect(rec.devices).toHaveLength(1);
    expect(rec.portals).toEqual([P1, P2]);
    expect(fake.sessions().map((s) => s.portal)).toEqual([P1]);
    expect(fake.warnings()).toContain('some portals are down; continuing with the paths that came up');
  });

  it('every portal down: the first error\'s code, every reason, nothing left', async () => {
    const fake = fakeWithTarget();
    fake.faults.portalsDown.add(P1).add(P2);
    const e = await stageRejects(fake, stageSpec('vol-a', { portals: [P1, P2] }));
    expect(e.code).toBe(status.UNAVAILABLE);
    expect(e.message).toMatch(new RegExp(`^could not attach LUN 0 of ${IQN} on any portal: ${P1}: iSCSI discovery at ${P1} failed: connection timed out \\(iscsiadm exit 8\\); ${P2}: `));
    expect(fake.warnings()).toContain('no portal came up');
    expect(Object.values(fake.leftovers()).flat()).toEqual([]);
  });

  it('the code is the first portal\'s: an authorization failure before a portal that is down', async () => {
    const fake = fakeWithTarget().fail('iscsi.login', { exit: 24 }, { match: P1 });
    fake.faults.portalsDown.add(P2);
    const e = await stageRejects(fake, stageSpec('vol-a', { portals: [P1, P2] }));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.message).toContain(`${P2}: iSCSI discovery at ${P2} failed: connection timed out`);
  });

  it('one portal whose LUN never gets a device: DEADLINE_EXCEEDED naming the LUN, the portal and the wait', async () => {
    const fake = fakeWithTarget([P1]);
    fake.faults.noDevice.add(P1);
    const e = await stageRejects(fake, stageSpec('vol-a'));
    expect(e.code).toBe(status.DEADLINE_EXCEEDED);
    expect(e.message).toBe(`LUN 0 of ${IQN} on ${P1} (SCSI host 3, ${LUN0_LINK}) got no block device within ${fake.cfg.timeouts.deviceWaitMs} ms`);
  });
});

describe('attach: multipath', () => {
  it('several paths: waits for the map and stages the dm device', async () => {
    const fake = fakeWithTarget();
    fake.faults.multipathd = 'while-waited';
    await stage(fake.host, stageSpec('vol-a', { portals: [P1, P2] }), null, fake.log);

    expect(fake.ops('devices.waitForMultipathHolder')).toHaveLength(1);
    const rec = fake.record('vol-a')!;
    expect(rec.devicePath).toBe('/dev/dm-0');
    expect(rec.multipath).toMatchObject({ dm: 'dm-0', name: 'mpatha' });
    expect(rec.devices).toHaveLength(2);
    expect(fake.mountPoints()[0]!.source).toBe('/dev/dm-0');
    expect(fake.ops('udev.multipathClaim')).toEqual([]);
  });

  it('a single path that multipath claims: waits for its map', async () => {
    const fake = fakeWithTarget([P1]);
    fake.faults.multipathd = 'while-waited';
    fake.faults.claim = 'claimed';
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);

    expect(fake.indexOf('udev.multipathClaim')).toBeLessThan(fake.indexOf('devices.waitForMultipathHolder'));
    expect(fake.record('vol-a')!.devicePath).toBe('/dev/dm-0');
  });

  it('a single path nobody claims: no wait, the path is the device', async () => {
    const fake = fakeWithTarget([P1]);
    fake.faults.multipathd = 'while-waited';
    fake.faults.claim = 'no';
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);

    expect(fake.ops('devices.waitForMultipathHolder')).toEqual([]);
    expect(fake.record('vol-a')!.devicePath).toBe(LUN0_LINK);
    expect(fake.record('vol-a')!.multipath).toBeUndefined();
  });

  it('a map multipathd made at once is found without waiting, even for one path', async () => {
    const fake = fakeWithTarget([P1]);
    fake.faults.multipathd = 'at-once';
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);

    expect(fake.ops('devices.waitForMultipathHolder')).toEqual([]);
    expect(fake.record('vol-a')!.devicePath).toBe('/dev/dm-0');
  });

  it('several paths but the map never appears: the first path is used, with a warning', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a', { portals: [P1, P2] }), null, fake.log);

    expect(fake.ops('devices.waitForMultipathHolder')).toHaveLength(1);
    expect(fake.warnings()).toContain('several paths but no multipath device appeared; using the first path');
    expect(fake.record('vol-a')!.devicePath).toBe(LUN0_LINK);
  });

  it('a claimed single path whose map never appears: the path is used, with a warning', async () => {
    const fake = fakeWithTarget([P1]);
    fake.faults.claim = 'maybe';
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);

    expect(fake.warnings()).toContain('multipath claims the path but no map appeared; using the path');
    expect(fake.record('vol-a')!.devicePath).toBe(LUN0_LINK);
  });
});

describe('attach: the device name recorded', () => {
  it('udev lagging: the kernel node is formatted and mounted, the by-path link made meanwhile is recorded', async () => {
    const fake = fakeWithTarget([P1]);
    fake.faults.byPathLinks = 'after-mount';
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);

    expect(fake.mountPoints()).toEqual([{ source: '/dev/sdb', target: stagingPathOf('vol-a'), fsType: 'ext4', options: [] }]);
    expect(fake.record('vol-a')!.devicePath).toBe(LUN0_LINK);
  });

  it('no by-path link at all: the kernel node is recorded', async () => {
    const fake = fakeWithTarget([P1]);
    fake.faults.byPathLinks = 'never';
    await stage(fake.host, stageSpec('vol-a', { block: true }), null, fake.log);
    expect(fake.record('vol-a')!.devicePath).toBe('/dev/sdb');
  });
});

describe('stage and unstage: where the time went', () => {
  it('logs each step of a stage with its time: the stage second at the target lock waits while the first logs in', async () => {
    const fake = new FakeHost().addTarget({ iqn: IQN, portals: [P1], luns: { 0: {}, 1: {} } });
    const login = fake.host.iscsi.login.bind(fake.host.iscsi);
    fake.host.iscsi.login = async (node) => {
      await new Promise((r) => setTimeout(r, 60));
      return login(node);
    };
    const a = fake.log.child({ volumeId: 'vol-a' });
    const b = fake.log.child({ volumeId: 'vol-b' });
    await Promise.all([
      stage(fake.host, stageSpec('vol-a', { portals: [P1], lun: 0 }), null, a),
      stage(fake.host, stageSpec('vol-b', { portals: [P1], lun: 1, block: true }), null, b),
    ]);
    const staged = (id: string) => fake.logs.find((l) => l.msg === 'staged' && l.volumeId === id)!.steps as Record<string, number>;
    const first = staged('vol-a');
    const second = staged('vol-b');
    expect(Object.keys(first)).toEqual(['check', 'plan', 'record', 'iface', 'lockWait', 'connect', 'deviceWait', 'identity', 'multipath', 'probe', 'mkfs', 'mount', 'stableName']);
    // a block volume is neither probed, formatted nor mounted
    expect(Object.keys(second)).toEqual(['check', 'plan', 'record', 'iface', 'lockWait', 'connect', 'deviceWait', 'identity', 'multipath', 'stableName']);
    // whichever got the lock first logged in (60 ms) while the other waited for it, then only scanned
    const [loggedIn, waited] = first.connect! > second.connect! ? [first, second] : [second, first];
    expect(loggedIn.connect).toBeGreaterThanOrEqual(55);
    expect(loggedIn.lockWait).toBeLessThan(30);
    expect(waited.lockWait).toBeGreaterThanOrEqual(50);
    expect(waited.connect).toBeLessThan(30);
    for (const ms of [...Object.values(first), ...Object.values(second)]) expect(ms).toBeGreaterThanOrEqual(0);

    await unstage(fake.host, fake.record('vol-a')!, a);
    const unstaged = fake.logs.find((l) => l.msg === 'unstaged' && l.volumeId === 'vol-a')!.steps as Record<string, number>;
    expect(Object.keys(unstaged)).toEqual(['check', 'removeDevices', 'record', 'lockWait', 'logout']);
  });
});
