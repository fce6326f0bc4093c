import { readFileSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import type { CommandName } from '../../src/config.js';
import { CsiError } from '../../src/errors.js';
import { Secret } from '../../src/log.js';
import { safeArgv, type Arg, type CommandRunner, type RunResult } from '../../src/runner.js';
import {
  failureDetail, Iscsiadm, orThrow, parseDiscovery, parseIfaceRecord, parseRecords, portalArg, sessionChapSettings, type NodeRef,
} from '../../src/node-host/iscsiadm.js';
import { parsePortal } from '../../src/common/validate.js';

const fixture = (name: string): string => readFileSync(new URL(`../fixtures/iscsiadm/${name}`, import.meta.url), 'utf8');

/** Replays scripted results and records each call's argv (secrets revealed, as the process would get them). */
class ScriptedRunner implements CommandRunner {
  readonly stats = { commands: 0, commandMs: 0, byName: {} };
  readonly calls: { name: CommandName; args: Arg[]; argv: string[] }[] = [];
  constructor(private readonly results: Partial<RunResult>[]) {}
  async run(name: CommandName, args: Arg[]): Promise<RunResult> {
    this.calls.push({ name, args, argv: args.map((a) => (a instanceof Secret ? a.reveal() : a)) });
    const r = this.results.shift() ?? { exitCode: 0 };
    return { argv: safeArgv(args), exitCode: r.exitCode ?? 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '', durationMs: 1 };
  }
}

const node: NodeRef = { iqn: 'iqn.2026-11.io.example:t1', portal: parsePortal('127.0.0.1:3260'), iface: 'default' };
const NODE_ARGV = ['-m', 'node', '-T', 'iqn.2026-11.io.example:t1', '-p', '127.0.0.1:3260', '-I', 'default'];

describe('record parser', () => {
  it('reads the 2.1.8 iface record of the default iface', () => {
    const rec = parseIfaceRecord(fixture('iface-show-default.2.1.8.txt'))!;
    expect(rec.name).toBe('default');
    expect(rec.transport).toBe('tcp');
    expect(rec.initiatorName).toBeNull();
    expect(rec.settings['iface.vlan_id']).toBe('0');
    expect(rec.settings['iface.ipaddress']).toBe('');
    expect(Object.keys(rec.settings)).toHaveLength(55); // every iface.* line of the record
  });

  it('reads the 2.0-874 iface record (other key set) by key, not by position', () => {
    const rec = parseIfaceRecord(fixture('iface-show-default.2.0-874.txt'))!;
    expect(rec.name).toBe('default');
    expect(rec.transport).toBe('tcp');
    expect(rec.settings).not.toHaveProperty('iface.prefix_len');
  });

  it('turns transport <empty> into tcp and keeps values with spaces', () => {
    const rec = parseIfaceRecord('# BEGIN RECORD 2.1.8\niface.iscsi_ifacename = x\niface.transport_name = <empty>\niface.header_digest = None,CRC32C\n# END RECORD\n')!;
    expect(rec.transport).toBe('tcp');
    expect(rec.settings['iface.header_digest']).toBe('None,CRC32C');
    expect(parseIfaceRecord('iface.transport_name = iser\niface.hwaddress = 00:0F:1F:92:6B:BF\n')).toMatchObject({ name: 'default', transport: 'iser', hwAddress: '00:0F:1F:92:6B:BF' });
  });

  it('splits concatenated records and keeps a truncated last one', () => {
    const one = fixture('node-show.2.1.4.txt');
    expect(parseRecords(one + one)).toHaveLength(2);
    const truncated = parseRecords(fixture('node-show-head40.2.1.8.txt'));
    expect(truncated).toHaveLength(1);
    expect(truncated[0]!.get('node.name')).toBe('iqn.2026-11.io.example:t1');
    expect(truncated[0]!.get('node.tpgt')).toBe('-1');
    expect(truncated[0]!.get('node.startup')).toBe('manual');
    expect(truncated[0]!.has('node.conn[0].address')).toBe(false);
    expect(parseIfaceRecord(fixture('node-show-head40.2.1.8.txt'))!.transport).toBe('tcp');
  });
});

describe('listing parsers', () => {
  it('parses discovery output and the node list (unsigned tpgt -1)', () => {
    expect(parseDiscovery(fixture('discovery-csi-lib-iscsi.txt'))).toEqual([
      { address: '172.18.0.2', port: 3260, tpgt: 1, portal: '172.18.0.2:3260', iqn: 'iqn.2016-09.com.openebs.jiva:store1' },
    ]);
    expect(parseDiscovery(fixture('discovery-ceph.txt')).map((d) => [d.portal, d.tpgt])).toEqual([['192.168.56.101:3260', 1], ['192.168.56.102:3260', 2]]);
    expect(parseDiscovery(fixture('discovery-two-targets.txt')).map((d) => d.iqn)).toEqual([
      'iqn.2003-01.com.redhat.iscsi-gw0', 'iqn.2003-01.com.redhat.iscsi-gw0', 'iqn.2003-01.com.redhat.iscsi-gw1', 'iqn.2003-01.com.redhat.iscsi-gw1',
    ]);
    expect(parseDiscovery(fixture('node-list.2.1.8.txt'))).toEqual([
      { address: '127.0.0.1', port: 3260, tpgt: -1, portal: '127.0.0.1:3260', iqn: 'iqn.2026-11.io.example:t1' },
    ]);
    expect(parseDiscovery('[fd00::10]:3260,1 iqn.2003-01.org.example:t1\n192.168.68.203:3260,1024 iqn.2000-05.com.3pardata:20210002ac01db31\n')).toMatchObject([
      { address: 'fd00::10', portal: '[fd00::10]:3260' },
      { tpgt: 1024 },
    ]);
  });
});

describe('failure details', () => {
  it('picks the specific cause, not the restated exit status or systemd noise', () => {
    expect(failureDetail(fixture('discovery-no-driver.exit12.txt'), 'iSCSI driver not found. Please make sure it is loaded, and retry the operation'))
      .toBe('iSCSI driver tcp is not loaded. Load the module then retry the command.');
    expect(failureDetail(fixture('login-iscsid-notconn.exit20.txt'), 'could not connect to iscsid')).toBe('can not connect to iSCSI daemon (111)!');
    expect(failureDetail(fixture('login-auth.exit24.txt'), 'iSCSI login failed due to authorization failure')).toBe('');
    expect(failureDetail(fixture('iface-show-nosuch.exit6.txt'), 'encountered iSCSI database failure'))
      .toBe('Failed to open /etc/iscsi/ifaces/nosuch using read mode: 2 No such file or directory');
  });
});

describe('Iscsiadm adapter', () => {
  it('logs in with -T/-p/-I and reports success', async () => {
    const runner = new ScriptedRunner([{ stdout: fixture('login-ok.txt') }]);
    expect(await new Iscsiadm(runner).login(node)).toEqual({ ok: true, already: false });
    expect(runner.calls[0]!.argv).toEqual([...NODE_ARGV, '--login']);
    expect(runner.calls[0]!.name).toBe('iscsiadm');
  });

  it('treats login exit 15 (session exists) as logged in', async () => {
    const runner = new ScriptedRunner([{ exitCode: 15, stderr: fixture('login-already.exit15.txt') }]);
    expect(await new Iscsiadm(runner).login(node)).toEqual({ ok: true, already: true });
  });

  it('reports an authentication failure with name, exit and an actionable message', async () => {
    const runner = new ScriptedRunner([{ exitCode: 24, stderr: fixture('login-auth.exit24.txt') }]);
    const r = await new Iscsiadm(runner).login(node);
    expect(r).toEqual({
      ok: false, code: 'LOGIN_AUTH_FAILED', exit: 24,
      message: 'iSCSI login to 127.0.0.1:3260 iqn.2026-11.io.example:t1 failed: iSCSI login failed due to authorization failure (iscsiadm exit 24)',
    });
    let thrown: unknown;
    try {
      orThrow(r);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(CsiError);
    expect((thrown as CsiError).code).toBe(status.FAILED_PRECONDITION);
  });

  it('reports a connection timeout as a transient failure', async () => {
    const runner = new ScriptedRunner([{ exitCode: 8, stderr: fixture('login-timeout.exit8.txt') }]);
    const r = await new Iscsiadm(runner).login(node);
    expect(r).toMatchObject({ ok: false, code: 'TRANS_TIMEOUT', exit: 8 });
    expect(() => orThrow(r)).toThrow(expect.objectContaining({ code: status.UNAVAILABLE }));
  });

  it('treats logout 21/2 and node delete 21 as already done, other exits as failures', async () => {
    const runner = new ScriptedRunner([
      { exitCode: 21, stderr: fixture('logout-nosuch.exit21.txt') },
      { exitCode: 2 },
      { exitCode: 21, stderr: fixture('node-delete-nosuch.exit21.txt') },
      { exitCode: 32, stdout: fixture('logout-not-connected.exit32.txt') },
    ]);
    const iscsi = new Iscsiadm(runner);
    expect(await iscsi.logout(node)).toEqual({ ok: true, already: true });
    expect(await iscsi.logout(node)).toEqual({ ok: true, already: true });
    expect(await iscsi.deleteNode(node)).toEqual({ ok: true, already: true });
    expect(await iscsi.logout(node)).toMatchObject({ ok: false, code: 'SESSION_NOT_CONNECTED', exit: 32 });
    expect(runner.calls.map((c) => c.argv.slice(NODE_ARGV.length))).toEqual([['--logout'], ['--logout'], ['-o', 'delete'], ['--logout']]);
  });

  it('shows an iface; a missing iface (exit 6, No such file) is null', async () => {
    const runner = new ScriptedRunner([{ stdout: fixture('iface-show-default.2.1.8.txt') }, { exitCode: 6, stderr: fixture('iface-show-nosuch.exit6.txt') }, { exitCode: 6, stderr: 'iscsiadm: something else' }]);
    const iscsi = new Iscsiadm(runner);
    expect(orThrow(await iscsi.showIface('default')).value?.transport).toBe('tcp');
    expect(await iscsi.showIface('nosuch')).toEqual({ ok: true, value: null });
    expect(await iscsi.showIface('broken')).toMatchObject({ ok: false, code: 'IDBM', message: 'reading iSCSI interface broken failed: encountered iSCSI database failure (iscsiadm exit 6): something else' });
    expect(runner.calls[1]!.argv).toEqual(['-m', 'iface', '-I', 'nosuch', '-o', 'show']);
  });

  it('clones an iface: new (15 tolerated), copies non-default keys, sets the initiator name', async () => {
    const base = parseIfaceRecord(fixture('iface-show-default.2.1.8.txt'))!;
    base.settings['iface.net_ifacename'] = 'eth1';
    const runner = new ScriptedRunner([{ exitCode: 15 }, {}, {}]);
    expect(await new Iscsiadm(runner).cloneIface(base, 'csi-0123', 'iqn.2026-11.io.example:node-a')).toEqual({ ok: true, already: true });
    expect(runner.calls.map((c) => c.argv)).toEqual([
      ['-m', 'iface', '-I', 'csi-0123', '-o', 'new'],
      ['-m', 'iface', '-I', 'csi-0123', '-o', 'update', '-n', 'iface.net_ifacename', '-v', 'eth1'],
      ['-m', 'iface', '-I', 'csi-0123', '-o', 'update', '-n', 'iface.initiatorname', '-v', 'iqn.2026-11.io.example:node-a'],
    ]);
  });

  it('deletes a half-made clone when an update fails', async () => {
    const base = parseIfaceRecord('iface.iscsi_ifacename = iser\niface.transport_name = iser\n')!;
    const runner = new ScriptedRunner([{}, { exitCode: 7, stderr: 'iscsiadm: Could not update iface csi-1: invalid parameter\n' }, {}]);
    const r = await new Iscsiadm(runner).cloneIface(base, 'csi-1', 'iqn.2026-11.io.example:node-a');
    expect(r).toMatchObject({ ok: false, code: 'INVAL', exit: 7 });
    expect(runner.calls.map((c) => c.argv.slice(4))).toEqual([
      ['-o', 'new'],
      ['-o', 'update', '-n', 'iface.transport_name', '-v', 'iser'],
      ['-o', 'delete'],
    ]);
  });

  it('one-way CHAP empties the mutual pair, so a pair left from an earlier mutual setup is not used', () => {
    const settings = sessionChapSettings({ username: 'alice', password: new Secret('secretpass123') });
    expect(Object.fromEntries(Object.entries(settings).map(([k, v]) => [k, v instanceof Secret ? 'SECRET' : v]))).toEqual({
      'node.session.auth.authmethod': 'CHAP',
      'node.session.auth.username': 'alice',
      'node.session.auth.password': 'SECRET',
      'node.session.auth.username_in': '',
      'node.session.auth.password_in': '',
    });
    expect(sessionChapSettings(undefined)).toEqual({ 'node.session.auth.authmethod': 'None' });
  });

  it('sets CHAP in one call, passing passwords as Secret and never echoing them', async () => {
    const password = new Secret('secretpass123');
    const runner = new ScriptedRunner([{}, { exitCode: 7, stderr: 'iscsiadm: bad value secretpass123\n' }]);
    const iscsi = new Iscsiadm(runner);
    expect(await iscsi.updateNode(node, sessionChapSettings({ username: 'alice', password, usernameIn: 'tgt', passwordIn: new Secret('mutual') }))).toEqual({ ok: true, already: false });
    const call = runner.calls[0]!;
    expect(call.argv).toEqual([...NODE_ARGV, '-o', 'update',
      '-n', 'node.session.auth.authmethod', '-v', 'CHAP',
      '-n', 'node.session.auth.username', '-v', 'alice',
      '-n', 'node.session.auth.password', '-v', 'secretpass123',
      '-n', 'node.session.auth.username_in', '-v', 'tgt',
      '-n', 'node.session.auth.password_in', '-v', 'mutual']);
    expect(call.args.filter((a) => a instanceof Secret)).toHaveLength(2);
    const failed = await iscsi.setDiscoveryChap({ portal: node.portal, iface: 'default' }, { username: 'alice', password });
    expect(failed.ok).toBe(false);
    expect(JSON.stringify(failed)).not.toContain('secretpass123');
    expect(runner.calls[1]!.argv.slice(0, 9)).toEqual(['-m', 'discoverydb', '-t', 'sendtargets', '-p', '127.0.0.1:3260', '-I', 'default', '-o']);
    expect(runner.calls[1]!.argv).toContain('discovery.sendtargets.auth.password');
  });

  it('runs discovery with discoverydb --discover; 21 is an empty list', async () => {
    const runner = new ScriptedRunner([{}, { stdout: fixture('discovery-ceph.txt') }, { exitCode: 21, stderr: 'iscsiadm: No portals found\n' }, { exitCode: 12, stderr: fixture('discovery-no-driver.exit12.txt') }]);
    const iscsi = new Iscsiadm(runner);
    const ref = { portal: parsePortal('[fd00::10]:3260'), iface: 'default' };
    expect(await iscsi.newDiscovery(ref)).toEqual({ ok: true, already: false });
    expect(orThrow(await iscsi.discover(ref)).value).toHaveLength(2);
    expect(await iscsi.discover(ref)).toEqual({ ok: true, value: [] });
    const fail = await iscsi.discover(ref);
    expect(fail).toMatchObject({ ok: false, code: 'TRANS_NOT_FOUND', message: expect.stringMatching(/^iSCSI discovery at \[fd00::10\]:3260 failed: iSCSI driver not found.*\(iscsiadm exit 12\): iSCSI driver tcp is not loaded/) });
    expect(runner.calls[0]!.argv).toEqual(['-m', 'discoverydb', '-t', 'sendtargets', '-p', '[fd00::10]:3260', '-I', 'default', '-o', 'new']);
    expect(runner.calls[1]!.argv.at(-1)).toBe('--discover');
  });

  it('discovers without writing records (-o nonpersistent) and creates one record in a given portal group', async () => {
    const runner = new ScriptedRunner([{ stdout: fixture('discovery-ceph.txt') }, { stdout: fixture('node-new.2.1.8.txt') }]);
    const iscsi = new Iscsiadm(runner);
    const ref = { portal: parsePortal('10.128.3.94'), iface: 'default' };
    expect(orThrow(await iscsi.discover(ref, { persist: false })).value.map((t) => t.tpgt)).toEqual([1, 2]);
    expect(runner.calls[0]!.argv.slice(-3)).toEqual(['--discover', '-o', 'nonpersistent']);
    expect((await iscsi.newNode(node, 1)).ok).toBe(true);
    expect(runner.calls[1]!.argv).toEqual(['-m', 'node', '-T', node.iqn, '-p', `${portalArg(node.portal)},1`, '-I', node.iface, '-o', 'new']);
  });

  it('creates and updates node records, several keys in one call', async () => {
    const runner = new ScriptedRunner([{ stdout: fixture('node-new.2.1.8.txt') }, {}]);
    const iscsi = new Iscsiadm(runner);
    expect((await iscsi.newNode(node)).ok).toBe(true);
    expect((await iscsi.updateNode(node, { 'node.session.scan': 'manual', 'node.startup': 'manual' })).ok).toBe(true);
    expect(runner.calls[1]!.argv).toEqual([...NODE_ARGV, '-o', 'update', '-n', 'node.session.scan', '-v', 'manual', '-n', 'node.startup', '-v', 'manual']);
  });

  it('formats portals for -p', () => {
    expect(portalArg(parsePortal('10.0.0.1'))).toBe('10.0.0.1:3260');
    expect(portalArg(parsePortal('fd00::10'))).toBe('[fd00::10]:3260');
    expect(portalArg(parsePortal('SAN.example.com:3261'))).toBe('san.example.com:3261');
  });
});
