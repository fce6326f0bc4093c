// The fake iscsiadm against a real tgtd: discovery and login really go to the target (libiscsi),
// so CHAP and ACLs decide; outputs and exit codes are open-iscsi 2.1.8's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, lstatSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SimulatedHost } from './host.js';

const IQN_OPEN = 'iqn.2026-11.io.example:open';
const IQN_CHAP = 'iqn.2026-11.io.example:chap';
const IQN_DENIED = 'iqn.2026-11.io.example:denied';
const IQN_IFACE = 'iqn.2026-11.io.example:via-iface';
const CHAP = { username: 'alice', password: 'secretpass123' };
const OTHER_INITIATOR = 'iqn.2026-11.io.example:someone-else';
const MiB = 1 << 20;

describe.skipIf(process.getuid?.() !== 0)('fake iscsiadm on a real tgtd', () => {
  let host: SimulatedHost;
  let portal: string;
  let addr: string;
  let port: string;
  const iscsiadm = (...args: string[]) => host.run('iscsiadm', args);

  beforeAll(async () => {
    host = await SimulatedHost.create();
    portal = host.tgtd.portal;
    [addr, port] = portal.split(':') as [string, string];
    await host.createTarget(IQN_OPEN, [{ lun: 1, sizeBytes: 16 * MiB }]);
    await host.createTarget(IQN_CHAP, [{ lun: 1, sizeBytes: 16 * MiB }], [host.initiatorName], CHAP);
    await host.createTarget(IQN_DENIED, [{ lun: 1, sizeBytes: 16 * MiB }], [OTHER_INITIATOR]);
  });

  afterAll(async () => {
    await host?.destroy();
  });

  it('reports its version and the built-in ifaces like 2.1.8', async () => {
    expect(await iscsiadm('--version')).toEqual({ code: 0, stdout: 'iscsiadm version 2.1.8\n', stderr: '' });
    expect(await iscsiadm('-m', 'iface')).toEqual({ code: 0, stdout: 'default tcp,<empty>,<empty>,<empty>,<empty>\niser iser,<empty>,<empty>,<empty>,<empty>\n', stderr: '' });
    expect(await iscsiadm('-m', 'session')).toEqual({ code: 21, stdout: '', stderr: 'iscsiadm: No active sessions.\n' });
    expect(await iscsiadm('-m', 'node')).toEqual({ code: 21, stdout: '', stderr: 'iscsiadm: No records found\n' });
    const missing = await iscsiadm('-m', 'iface', '-I', 'nosuch', '-o', 'show');
    expect(missing.code).toBe(6);
    expect(missing.stderr).toMatch(/^iSCSI ERROR: Failed to open .*\/ifaces\/nosuch using read mode: 2 No such file or directory/);
  });

  it('discovers through SendTargets only the targets whose ACL admits this initiator, and stores node records', async () => {
    const r = await iscsiadm('-m', 'discovery', '-t', 'sendtargets', '-p', portal);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n').filter(Boolean).sort()).toEqual([`${portal},1 ${IQN_CHAP}`, `${portal},1 ${IQN_OPEN}`]);
    const file = join(host.paths.nodes, IQN_OPEN, `${addr},${port},1`, 'default');
    const text = readFileSync(file, 'utf8');
    expect(text.split('\n')[0]).toBe('# BEGIN RECORD 2.1.8');
    expect(text).toContain(`node.name = ${IQN_OPEN}`);
    expect(text).toContain('node.discovery_type = send_targets');
    expect(lstatSync(join(host.paths.sendTargets, `${addr},${port}`, `${IQN_OPEN},${addr},${port},1,default`)).isSymbolicLink()).toBe(true);
    expect(existsSync(join(host.paths.sendTargets, `${addr},${port}`, 'st_config'))).toBe(true);
    const list = await iscsiadm('-m', 'node');
    expect(list.stdout.split('\n').filter(Boolean).sort()).toEqual([`${portal},1 ${IQN_CHAP}`, `${portal},1 ${IQN_OPEN}`]);
  });

  it('logs in without CHAP, lists the session, and refuses a second login with exit 15', async () => {
    const r = await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', portal, '--login');
    const p = `[iface: default, target: ${IQN_OPEN}, portal: ${addr},${port}]`;
    expect(r).toEqual({ code: 0, stdout: `Logging in to ${p}\nLogin to ${p} successful.\n`, stderr: '' });
    const s = await iscsiadm('-m', 'session');
    expect(s.stdout).toMatch(new RegExp(`^tcp: \\[(\\d+)\\] ${portal},1 ${IQN_OPEN} \\(non-flash\\)\\n$`));
    const tree = await iscsiadm('-m', 'session', '-P', '3');
    expect(tree.stdout).toContain(`Target: ${IQN_OPEN} (non-flash)\n\tCurrent Portal: ${portal},1\n\tPersistent Portal: ${portal},1\n`);
    expect(tree.stdout).toContain(`\t\tIface Initiatorname: ${host.initiatorName}\n`);
    expect(tree.stdout).toContain('\t\tiSCSI Session State: LOGGED_IN\n');
    expect(tree.stdout).toMatch(/\t\tHost Number: \d+\tState: running\n/);
    const again = await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', portal, '--login');
    expect(again).toEqual({ code: 15, stdout: '', stderr: 'iscsiadm: default: 1 session requested, but 1 already present.\niscsiadm: Could not log into all portals\n' });
    const del = await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', portal, '-o', 'delete');
    expect(del.code).toBe(15);
    expect(del.stderr).toContain('but a session is using it. Logout session then rerun command to remove record.');
  });

  it('fails a CHAP target without or with a wrong secret with exit 24, and logs in with the right one', async () => {
    const p = `[iface: default, target: ${IQN_CHAP}, portal: ${addr},${port}]`;
    const authFailure = `iscsiadm: Could not login to ${p}.\niscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\niscsiadm: Could not log into all portals\n`;
    const none = await iscsiadm('-m', 'node', '-T', IQN_CHAP, '-p', portal, '--login');
    expect(none).toEqual({ code: 24, stdout: `Logging in to ${p}\n`, stderr: authFailure });

    const set = (n: string, v: string) => iscsiadm('-m', 'node', '-T', IQN_CHAP, '-p', portal, '-o', 'update', '-n', n, '-v', v);
    expect((await set('node.session.auth.authmethod', 'CHAP')).code).toBe(0);
    expect((await set('node.session.auth.username', CHAP.username)).code).toBe(0);
    expect((await set('node.session.auth.password', 'wrong-secret-1')).code).toBe(0);
    const wrong = await iscsiadm('-m', 'node', '-T', IQN_CHAP, '-p', portal, '--login');
    expect(wrong).toEqual({ code: 24, stdout: `Logging in to ${p}\n`, stderr: authFailure });
    expect(wrong.stdout + wrong.stderr).not.toContain('wrong-secret-1');

    await set('node.session.auth.password', CHAP.password);
    const show = await iscsiadm('-m', 'node', '-T', IQN_CHAP, '-p', portal, '-o', 'show');
    expect(show.stdout).toContain('node.session.auth.password = ********');
    expect(show.stdout).not.toContain(CHAP.password);
    // clear text only in the record file, as open-iscsi keeps it
    expect(readFileSync(join(host.paths.nodes, IQN_CHAP, `${addr},${port},1`, 'default'), 'utf8')).toContain(`node.session.auth.password = ${CHAP.password}`);
    const ok = await iscsiadm('-m', 'node', '-T', IQN_CHAP, '-p', portal, '--login');
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain(`Login to ${p} successful.`);
  });

  it('refuses an initiator the ACL does not admit: tgt says "target not found", iscsiadm exits 19', async () => {
    const add = await iscsiadm('-m', 'node', '-T', IQN_DENIED, '-p', portal, '-o', 'new');
    expect(add).toEqual({ code: 0, stdout: `New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] ${addr},${port},-1 ${IQN_DENIED}] added\n`, stderr: '' });
    expect(existsSync(join(host.paths.nodes, IQN_DENIED, `${addr},${port}`))).toBe(true); // old-style record, tpgt unknown
    const r = await iscsiadm('-m', 'node', '-T', IQN_DENIED, '-p', portal, '--login');
    expect(r.code).toBe(19);
    expect(r.stderr).toBe(`iscsiadm: Could not login to [iface: default, target: ${IQN_DENIED}, portal: ${addr},${port}].\niscsiadm: initiator reported error (19 - encountered non-retryable iSCSI login failure)\niscsiadm: Could not log into all portals\n`);
    expect((await host.sessions()).some((s) => s.target === IQN_DENIED)).toBe(false);
    expect((await iscsiadm('-m', 'node', '-T', IQN_DENIED, '-p', portal, '-o', 'delete')).code).toBe(0);
    expect(existsSync(join(host.paths.nodes, IQN_DENIED))).toBe(false);
  });

  it('logs in with the initiator name of a cloned iface (the in-tree initiatorName flow)', async () => {
    const name = 'iqn.2026-11.io.example:cloned-initiator';
    await host.createTarget(IQN_IFACE, [{ lun: 1, sizeBytes: 16 * MiB }], [name]);
    const iface = `${portal}:pv-1`;
    expect(await iscsiadm('-m', 'iface', '-I', iface, '-o', 'new')).toEqual({ code: 0, stdout: `New interface ${iface} added\n`, stderr: '' });
    expect(await iscsiadm('-m', 'iface', '-I', iface, '-o', 'update', '-n', 'iface.initiatorname', '-v', name)).toEqual({ code: 0, stdout: `${iface} updated.\n`, stderr: '' });
    expect((await iscsiadm('-m', 'iface')).stdout.split('\n')[0]).toBe(`${iface} tcp,<empty>,<empty>,<empty>,${name}`);
    const disc = await iscsiadm('-m', 'discoverydb', '-t', 'sendtargets', '-p', portal, '-I', iface, '-o', 'new');
    expect(disc).toEqual({ code: 0, stdout: `New discovery record for [${addr},${port}] added.\n`, stderr: '' });
    const found = await iscsiadm('-m', 'discoverydb', '-t', 'sendtargets', '-p', portal, '-I', iface, '--discover');
    expect(found.stdout).toBe(`${portal},1 ${IQN_IFACE}\n`); // the only target whose ACL admits that name
    const login = await iscsiadm('-m', 'node', '-T', IQN_IFACE, '-p', portal, '-I', iface, '--login');
    expect(login.code).toBe(0);
    const s = (await host.sessions()).find((x) => x.target === IQN_IFACE)!;
    expect(s).toMatchObject({ iface, initiatorName: name });
    const sessionDir = join(host.paths.sys, 'class/iscsi_session', `session${s.sid}`);
    expect(readFileSync(join(sessionDir, 'initiatorname'), 'utf8')).toBe(`${name}\n`);
    expect(readFileSync(join(sessionDir, 'ifacename'), 'utf8')).toBe(`${iface}\n`);
    const busy = await iscsiadm('-m', 'iface', '-I', iface, '-o', 'delete');
    expect(busy.code).toBe(15);
    expect(busy.stderr).toBe(`iscsiadm: Could not delete iface ${iface}: session exists\n`);
  });

  it('logs out by target and portal, then reports nothing to log out with exit 21', async () => {
    const sid = (await host.sessions()).find((x) => x.target === IQN_OPEN)!.sid;
    const out = await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', portal, '--logout');
    const p = `[sid: ${sid}, target: ${IQN_OPEN}, portal: ${addr},${port}]`;
    expect(out).toEqual({ code: 0, stdout: `Logging out of session ${p}\nLogout of ${p} successful.\n`, stderr: '' });
    expect(existsSync(join(host.paths.sys, 'class/iscsi_session', `session${sid}`))).toBe(false);
    expect(await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', portal, '--logout')).toEqual({ code: 21, stdout: '', stderr: 'iscsiadm: No matching sessions found\n' });
    expect((await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', portal, '-o', 'delete')).code).toBe(0);
    expect(await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', portal, '-o', 'delete')).toEqual({ code: 21, stdout: '', stderr: 'iscsiadm: No records found\n' });
  });

  it('fault portalDown: login exits 8 (connection timed out), discovery cannot connect', async () => {
    await host.setFaults({ portalDown: [portal] });
    try {
      const login = await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', portal, '-o', 'new');
      expect(login.code).toBe(0);
      const r = await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', portal, '--login');
      expect(r.code).toBe(8);
      expect(r.stderr).toContain('iscsiadm: initiator reported error (8 - connection timed out)\n');
      const d = await iscsiadm('-m', 'discovery', '-t', 'st', '-p', portal);
      expect(d.code).toBe(11);
      expect(d.stderr).toContain(`iscsiadm: cannot make connection to ${addr}: Connection refused\n`);
      expect(d.stderr).toContain('iscsiadm: Could not perform SendTargets discovery: iSCSI PDU timed out\n');
      // a session to the downed portal turns FAILED, like a target that went away
      const failed = (await host.sessions()).find((s) => s.target === IQN_CHAP)!;
      expect(failed.state).toBe('FAILED');
    } finally {
      await host.setFaults({});
    }
    expect((await host.sessions()).find((s) => s.target === IQN_CHAP)!.state).toBe('LOGGED_IN');
  });

  it('also fails a login to a portal nothing listens on with exit 8', async () => {
    await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', '127.0.0.1:1', '-o', 'new');
    const r = await iscsiadm('-m', 'node', '-T', IQN_OPEN, '-p', '127.0.0.1:1', '--login');
    expect(r.code).toBe(8);
  });

  it('fault hang: the command never returns, so the caller\'s timeout must fire', async () => {
    await host.setFaults({ hang: ['login'] });
    try {
      const started = Date.now();
      const r = await host.run('iscsiadm', ['-m', 'node', '-T', IQN_OPEN, '-p', portal, '--login'], 1500);
      expect(r.code).not.toBe(0);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
      // other commands are unaffected
      expect((await iscsiadm('-m', 'session')).code).toBe(0);
    } finally {
      await host.setFaults({});
    }
  });

  it('keeps the discovery CHAP settings in the discovery record and masks them in show', async () => {
    const set = (n: string, v: string) => iscsiadm('-m', 'discoverydb', '-t', 'sendtargets', '-p', portal, '-o', 'update', '-n', n, '-v', v);
    expect((await set('discovery.sendtargets.auth.authmethod', 'CHAP')).code).toBe(0);
    expect((await set('discovery.sendtargets.auth.username', 'disc-user')).code).toBe(0);
    expect((await set('discovery.sendtargets.auth.password', 'disc-secret-9')).code).toBe(0);
    const show = await iscsiadm('-m', 'discoverydb', '-t', 'sendtargets', '-p', portal, '-o', 'show');
    expect(show.stdout).toContain('discovery.sendtargets.auth.username = disc-user\n');
    expect(show.stdout).toContain('discovery.sendtargets.auth.password = ********\n');
    expect(show.stdout).not.toContain('disc-secret-9');
  });
});
