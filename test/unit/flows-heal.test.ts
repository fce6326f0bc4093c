// The node healer's pass on the in-memory host: lost sessions and devices restored under the target
// lock, FAILED sessions and broken filesystems reported once per episode, failed repairs backed off,
// records left half-done taken down after the grace, and orphans — only of sessions this driver
// marked — removed after the grace unless something uses them.
import { describe, expect, it } from 'vitest';
import { healPass, type HealEvent } from '../../src/flows/heal.js';
import { HealMemory } from '../../src/flows/heal-memory.js';
import { volumeCondition } from '../../src/flows/condition.js';
import { stage } from '../../src/flows/stage.js';
import { FakeHost } from '../fake/host.js';
import { chap, IQN, P1, P2, stageSpec, stagingPathOf, type SpecOptions } from '../fake/specs.js';

const INTERVAL_MS = 1_000;
const GRACE_MS = 60_000;
const IQN2 = 'iqn.2026-12.dev.fake:target-2';

/** A healer over the fake: its own clock, a guard that can be made busy, the pass's events. */
class Healer {
  now = 1_000_000;
  busy = new Set<string>();
  reapOrphans = true;
  readonly memory = new HealMemory(INTERVAL_MS, () => this.now);
  constructor(readonly fake: FakeHost) {}

  pass(): Promise<HealEvent[]> {
    return healPass(this.fake.host, {
      memory: this.memory,
      takeVolume: (id) => (this.busy.has(id) ? null : () => undefined),
      graceMs: GRACE_MS,
      reapOrphans: this.reapOrphans,
      log: this.fake.log,
    });
  }

  later(ms: number): this {
    this.now += ms;
    return this;
  }
}

function summary(events: HealEvent[]): string[] {
  return events.map((e) => `${e.action} ${e.outcome}`);
}

async function stagedFake(o: SpecOptions = {}, prepare: (f: FakeHost) => void = () => undefined): Promise<FakeHost> {
  const fake = new FakeHost()
    .addTarget({ iqn: IQN, portals: [P1, P2], luns: { 0: {}, 1: {} } })
    .addTarget({ iqn: IQN2, portals: [P1], luns: { 0: {} } });
  prepare(fake);
  await stage(fake.host, stageSpec('vol-a', o), null, fake.log);
  return fake;
}

describe('healing a staged volume', () => {
  it('a healthy node: a pass changes nothing', async () => {
    const fake = await stagedFake({ portals: [P1, P2] });
    const before = fake.calls.length;
    expect(await new Healer(fake).pass()).toEqual([]);
    expect(fake.calls.slice(before).map((c) => c.op).filter((op) => !/^(sysfs\.(portalHostMap|topology|volumePaths|devicesForIqnLun|multipathHolder)|metadata\.(survey|load)|marks\.list|mounts\.)/.test(op))).toEqual([]);
  });

  it('a session logged out behind the driver\'s back: logged in again under the target lock, the LUN scanned, the record names the new device', async () => {
    const fake = await stagedFake({ block: true });
    const oldDevice = fake.record('vol-a')!.devices[0];
    fake.logoutBehindBack(IQN, P1);
    expect((await volumeCondition(fake.host, fake.record('vol-a')!, stagingPathOf('vol-a'))).abnormal).toBe(true);

    const events = await new Healer(fake).pass();
    expect(summary(events)).toEqual(['session-login done']);
    expect(events[0]).toMatchObject({ volumeId: 'vol-a', iqn: IQN, portal: P1, reason: expect.stringContaining('logged out behind the driver') });
    expect(fake.callsOf('iscsi.login').at(-1)!.locks).toEqual([IQN]);
    expect(fake.callsOf('sysfs.scanLun').at(-1)!.locks).toEqual([IQN]);
    const devices = fake.deviceNames();
    expect(devices).toHaveLength(1);
    expect(devices[0]).not.toBe(oldDevice);
    expect(fake.record('vol-a')!.devices).toEqual(devices);
    expect(await volumeCondition(fake.host, fake.record('vol-a')!, stagingPathOf('vol-a'))).toEqual({ abnormal: false, message: 'healthy' });
  });

  it('the session up but the LUN\'s device deleted: the LUN scanned again, no login', async () => {
    const fake = await stagedFake({ block: true });
    fake.deleteDeviceBehindBack(fake.record('vol-a')!.devices[0]!);
    const logins = fake.ops('iscsi.login').length;
    expect(summary(await new Healer(fake).pass())).toEqual(['lun-rescan done']);
    expect(fake.ops('iscsi.login')).toHaveLength(logins);
    expect(fake.deviceNames()).toHaveLength(1);
  });

  it('a FAILED session is reported once, never logged out; its end is reported when it recovers', async () => {
    const fake = await stagedFake();
    const healer = new Healer(fake);
    fake.setSessionState(IQN, P1, 'FAILED');
    const first = await healer.pass();
    expect(summary(first)).toEqual(['session-failed reported']);
    expect(first[0]!.reason).toContain('iscsid is recovering it');
    expect(await healer.pass()).toEqual([]);
    expect(fake.ops('iscsi.logout')).toEqual([]);
    fake.setSessionState(IQN, P1, 'LOGGED_IN');
    expect(summary(await healer.pass())).toEqual(['session-failed ended']);
  });

  it('a portal down at stage comes back: the healer makes its node record (manual scan and startup) and logs in; the new path joins the multipath map', async () => {
    const fake = await stagedFake({ portals: [P1, P2] }, (f) => {
      f.faults.portalsDown.add(P2);
      f.faults.multipathd = 'at-once';
    });
    const dm = fake.record('vol-a')!.multipath!.dm;
    const healer = new Healer(fake);
    const down = await healer.pass();
    expect(summary(down)).toEqual(['session-login failed']);
    expect(down[0]!.reason).toContain(P2);

    fake.faults.portalsDown.delete(P2);
    expect(await healer.pass()).toEqual([]); // backing off: the next try waits an interval
    healer.later(INTERVAL_MS);
    const up = await healer.pass();
    expect(summary(up)).toEqual(['session-login done']);
    expect(fake.nodeRecordSettings(P2, IQN, 'default')).toMatchObject({ 'node.startup': 'manual', 'node.session.scan': 'manual' });
    expect(fake.sessions().map((s) => s.portal).sort()).toEqual([P1, P2]);
    expect(fake.record('vol-a')!.devices).toHaveLength(2);
    expect(fake.record('vol-a')!.multipath!.dm).toBe(dm);
    expect(await volumeCondition(fake.host, fake.record('vol-a')!, stagingPathOf('vol-a'))).toEqual({ abnormal: false, message: 'healthy' });
  });

  it('a login that failed at stage kept its node record: the healer logs in with it, CHAP settings included', async () => {
    const fake = await stagedFake({ portals: [P1, P2], sessionChap: chap('user', 'secret-123') }, (f) => { f.fail('iscsi.login', { exit: 8 }, { match: P2, times: 1 }); });
    expect(fake.record('vol-a')!.sessionChap).toBe(true);
    expect(summary(await new Healer(fake).pass())).toEqual(['session-login done']);
    expect(fake.ops('iscsi.newNode')).toHaveLength(2);
    expect(fake.nodeRecordSettings(P2, IQN, 'default')).toMatchObject({ 'node.session.auth.username': 'user' });
  });

  it('a CHAP volume whose portal was down at stage (no node record): not rebuilt without the secret, said so', async () => {
    const fake = await stagedFake({ portals: [P1, P2], sessionChap: chap('user', 'secret-123') }, (f) => { f.faults.portalsDown.add(P2); });
    fake.faults.portalsDown.delete(P2);
    const events = await new Healer(fake).pass();
    expect(summary(events)).toEqual(['session-login failed']);
    expect(events[0]!.reason).toContain('uses CHAP, whose secret the driver does not keep');
    expect(JSON.stringify(fake.logs)).not.toContain('secret-123');
  });

  it('failed repairs back off: one, two, four intervals', async () => {
    const fake = await stagedFake({ portals: [P1, P2] }, (f) => { f.faults.portalsDown.add(P2); });
    const healer = new Healer(fake);
    const tries = async (): Promise<number> => (await healer.pass()).filter((e) => e.action === 'session-login').length;
    expect(await tries()).toBe(1);
    expect(await tries()).toBe(0);
    expect(await healer.later(INTERVAL_MS).pass().then((e) => e.length)).toBe(1);
    expect(await healer.later(INTERVAL_MS).pass().then((e) => e.length)).toBe(0);
    expect(await healer.later(INTERVAL_MS).pass().then((e) => e.length)).toBe(1);
    expect(await healer.later(3 * INTERVAL_MS).pass().then((e) => e.length)).toBe(0);
    expect(await healer.later(INTERVAL_MS).pass().then((e) => e.length)).toBe(1);
  });

  it('a restored path that is another logical unit is deleted, nothing written', async () => {
    const fake = await stagedFake({ portals: [P1, P2], block: true });
    fake.faults.staleWwid.set(P1, 'naa.6001405deadbeef000000000000000');
    fake.logoutBehindBack(IQN, P1);
    const events = await new Healer(fake).pass();
    expect(summary(events)).toEqual(['wrong-device done']);
    expect(events[0]!.reason).toContain('not the volume');
    expect(fake.deviceNames()).toEqual(fake.record('vol-a')!.devices);
    expect(fake.deviceNames()).toHaveLength(1);
  });

  it('a multipath volume whose restored path does not join its map: reported as failed', async () => {
    const fake = await stagedFake({ portals: [P1, P2] }, (f) => { f.faults.multipathd = 'at-once'; });
    fake.faults.multipathd = 'off';
    fake.logoutBehindBack(IQN, P2);
    const events = await new Healer(fake).pass();
    expect(summary(events)).toEqual(['path-not-in-map failed']);
  });

  it('a healthy volume is checked without taking it from CSI calls', async () => {
    const fake = await stagedFake({ block: true });
    const healer = new Healer(fake);
    const taken: string[] = [];
    const events = await healPass(fake.host, { memory: healer.memory, takeVolume: (id) => { taken.push(id); return () => undefined; }, graceMs: GRACE_MS, reapOrphans: true, log: fake.log });
    expect(events).toEqual([]);
    expect(taken).toEqual([]);
  });

  it('a volume a CSI call holds is skipped', async () => {
    const fake = await stagedFake({ block: true });
    fake.logoutBehindBack(IQN, P1);
    const healer = new Healer(fake);
    healer.busy.add('vol-a');
    expect(await healer.pass()).toEqual([]);
    expect(fake.sessions()).toEqual([]);
    healer.busy.clear();
    expect(summary(await healer.pass())).toEqual(['session-login done']);
  });

  it('a filesystem remounted read-only by the kernel, or gone: reported once, its end reported', async () => {
    const fake = await stagedFake();
    const healer = new Healer(fake);
    fake.breakMount(stagingPathOf('vol-a'), 'remounted-ro');
    const events = await healer.pass();
    expect(summary(events)).toEqual(['filesystem-problem reported']);
    expect(events[0]!.reason).toContain('read-only');
    expect(await healer.pass()).toEqual([]);
    await fake.host.mounts.unmount(stagingPathOf('vol-a'));
    await fake.host.mounts.mount(fake.record('vol-a')!.devicePath!, stagingPathOf('vol-a'), 'ext4', []);
    expect(summary(await healer.pass())).toEqual(['filesystem-problem ended']);
  });
});

describe('records left half-done', () => {
  it('an attaching record no call touches is taken down after the grace, not before', async () => {
    const fake = await stagedFake();
    fake.putRecord({ ...fake.record('vol-a')!, phase: 'attaching' });
    const healer = new Healer(fake);
    expect(await healer.pass()).toEqual([]);
    expect(await healer.later(GRACE_MS - 1).pass()).toEqual([]);
    const events = await healer.later(1).pass();
    expect(summary(events)).toEqual(['half-done-finished done']);
    expect(fake.leftovers()).toEqual({ sessions: [], nodeRecords: [], discoveryRecords: [], clonedIfaces: [], devices: [], maps: [], mounts: [], records: [], marks: [], locks: [] });
  });

  it('one that is still published is not taken down', async () => {
    const fake = await stagedFake();
    const target = '/var/lib/kubelet/pods/p1/volumes/vol-a/mount';
    await fake.host.mounts.bindMount(stagingPathOf('vol-a'), target, {});
    fake.putRecord({ ...fake.record('vol-a')!, phase: 'detaching', publishedAt: [target] });
    const healer = new Healer(fake);
    await healer.pass();
    const events = await healer.later(GRACE_MS).pass();
    expect(summary(events)).toEqual(['half-done-finished failed']);
    expect(events[0]!.reason).toContain('still published');
    expect(fake.sessions()).toHaveLength(1);
  });
});

describe('orphans', () => {
  it('a session of this driver whose record was lost: its device deleted and the session logged out after the grace', async () => {
    const fake = await stagedFake({ block: true });
    fake.loseRecord('vol-a');
    const healer = new Healer(fake);
    expect(await healer.pass()).toEqual([]);
    expect(fake.sessions()).toHaveLength(1);
    const events = await healer.later(GRACE_MS).pass();
    expect(summary(events)).toEqual(['orphan-device done', 'orphan-session done']);
    expect(fake.leftovers()).toMatchObject({ sessions: [], nodeRecords: [], devices: [], marks: [] });
    expect(fake.callsOf('iscsi.logout').at(-1)!.locks).toEqual([IQN]);
  });

  it('an operator\'s own session (not marked) is never touched', async () => {
    const fake = await stagedFake({ block: true });
    const theirs = fake.operatorLogin(IQN2, P1, [0]);
    const healer = new Healer(fake);
    await healer.pass();
    expect(await healer.later(10 * GRACE_MS).pass()).toEqual([]);
    expect(fake.sessions().map((s) => s.iqn).sort()).toEqual([IQN, IQN2]);
    expect(fake.deviceNames()).toEqual(expect.arrayContaining(theirs));
  });

  it('a device no record covers on a session another volume uses: deleted, the session kept', async () => {
    const fake = await stagedFake({ block: true });
    await stage(fake.host, stageSpec('vol-b', { block: true, lun: 1 }), null, fake.log);
    const lost = fake.record('vol-b')!.devices[0]!;
    fake.loseRecord('vol-b');
    const healer = new Healer(fake);
    await healer.pass();
    expect(summary(await healer.later(GRACE_MS).pass())).toEqual(['orphan-device done']);
    expect(fake.deviceNames()).toEqual(fake.record('vol-a')!.devices);
    expect(fake.deviceNames()).not.toContain(lost);
    expect(fake.sessions()).toHaveLength(1);
  });

  it('an orphan device that is mounted or held by a layer is kept, and so is its session', async () => {
    const fake = await stagedFake();
    fake.loseRecord('vol-a'); // its filesystem is still mounted at the staging path
    const healer = new Healer(fake);
    await healer.pass();
    const events = await healer.later(GRACE_MS).pass();
    expect(summary(events)).toEqual(['orphan-device kept', 'orphan-session kept']);
    expect(events[0]!.reason).toContain('mounted at');
    expect(await healer.later(GRACE_MS).pass()).toEqual([]); // reported once
    expect(fake.sessions()).toHaveLength(1);

    const held = await stagedFake({ block: true });
    held.holdDevice(held.record('vol-a')!.devices[0]!, 'dm-7');
    held.loseRecord('vol-a');
    const h2 = new Healer(held);
    await h2.pass();
    const e2 = await h2.later(GRACE_MS).pass();
    expect(e2[0]).toMatchObject({ action: 'orphan-device', outcome: 'kept', reason: expect.stringContaining('held by dm-7') });
    expect(held.deviceNames()).toHaveLength(1);
  });

  it('nothing is reaped while a record file cannot be read (its volume would look like an orphan)', async () => {
    const fake = await stagedFake({ block: true });
    fake.loseRecord('vol-a');
    fake.addUnreadableRecord('/var/lib/iscsi-csi/volumes/vol-a/iscsi.json');
    const healer = new Healer(fake);
    await healer.pass();
    const events = await healer.later(GRACE_MS).pass();
    expect(summary(events)).toEqual([]);
    expect(fake.sessions()).toHaveLength(1);
    expect(fake.deviceNames()).toHaveLength(1);
  });

  it('reapOrphans off: nothing is reaped', async () => {
    const fake = await stagedFake({ block: true });
    fake.loseRecord('vol-a');
    const healer = new Healer(fake);
    healer.reapOrphans = false;
    await healer.pass();
    expect(await healer.later(GRACE_MS).pass()).toEqual([]);
    expect(fake.sessions()).toHaveLength(1);
  });

  it('the mark of a session that is gone, with its node record: cleared after the grace', async () => {
    const fake = await stagedFake({ block: true });
    fake.loseRecord('vol-a');
    fake.logoutBehindBack(IQN, P1);
    const healer = new Healer(fake);
    await healer.pass();
    expect(summary(await healer.later(GRACE_MS).pass())).toEqual(['orphan-mark done']);
    expect(fake.leftovers()).toMatchObject({ nodeRecords: [], marks: [] });
  });

  it('a stage under way (its attaching record saved) is never an orphan', async () => {
    const fake = await stagedFake({ block: true });
    fake.putRecord({ ...fake.record('vol-a')!, phase: 'attaching' });
    const healer = new Healer(fake);
    healer.busy.add('vol-a'); // the stage holds the volume
    await healer.pass();
    expect(await healer.later(10 * GRACE_MS).pass()).toEqual([]);
    expect(fake.sessions()).toHaveLength(1);
  });
});
