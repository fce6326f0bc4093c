// The doctor's parsers and rules, on verbatim outputs of the real tools where there are any (captured on
// the Debian 12 build machine: open-iscsi 2.1.8, multipath-tools 0.9.4-3+deb12u2, tgt 1.0.85, kernel
// mountinfo and unix socket table) and on what the man pages define.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config.js';
import { parseTgtSystem } from '../../src/controller/tgt/tgtadm.js';
import { exitCodeOf, fail, ok, summarize, warn } from '../../src/doctor/check.js';
import { describeHostAccess, hostAccessOf, unixSocketTableOf } from '../../src/doctor/host-access.js';
import { checkInitiatorName, GENERATOR_PREFIXES, initiatorNameProblem } from '../../src/doctor/initiator-name.js';
import { ISCSID_SOCKET, listensAt, parseIscsiadmVersion } from '../../src/doctor/iscsi.js';
import { describePropagation, mountContaining, propagationOf } from '../../src/doctor/kubelet.js';
import { multipathAdvice, parseMultipathDefaults } from '../../src/doctor/multipath.js';
import { renderJson, renderTable, wrap } from '../../src/doctor/render.js';
import { checkStateDir, missingDirCheck } from '../../src/doctor/state-dir.js';
import { parseMountInfo } from '../../src/node-host/mounts.js';

/** `multipath -t` on Debian 12 without /etc/multipath.conf (multipath-tools 0.9.4-3+deb12u2): the whole
 * defaults section verbatim, then the blacklist cut after its first device entry (closing brace added). */
const MULTIPATH_T_DEBIAN12 = [
  "defaults {",
  "\tverbosity 2",
  "\tpolling_interval 5",
  "\tmax_polling_interval 20",
  "\treassign_maps \"no\"",
  "\tpath_selector \"service-time 0\"",
  "\tpath_grouping_policy \"failover\"",
  "\tuid_attribute \"ID_SERIAL\"",
  "\tprio \"const\"",
  "\tprio_args \"\"",
  "\tfeatures \"0\"",
  "\tpath_checker \"tur\"",
  "\talias_prefix \"mpath\"",
  "\tfailback \"manual\"",
  "\trr_min_io 1000",
  "\trr_min_io_rq 1",
  "\tmax_fds \"max\"",
  "\trr_weight \"uniform\"",
  "\tqueue_without_daemon \"no\"",
  "\tallow_usb_devices \"no\"",
  "\tflush_on_last_del \"no\"",
  "\tuser_friendly_names \"no\"",
  "\tfast_io_fail_tmo 5",
  "\tbindings_file \"/etc/multipath/bindings\"",
  "\twwids_file \"/etc/multipath/wwids\"",
  "\tprkeys_file \"/etc/multipath/prkeys\"",
  "\tlog_checker_err \"always\"",
  "\tall_tg_pt \"no\"",
  "\tretain_attached_hw_handler \"yes\"",
  "\tdetect_prio \"yes\"",
  "\tdetect_checker \"yes\"",
  "\tforce_sync \"yes\"",
  "\tstrict_timing \"no\"",
  "\tdeferred_remove \"no\"",
  "\tdelay_watch_checks \"no\"",
  "\tdelay_wait_checks \"no\"",
  "\tsan_path_err_threshold \"no\"",
  "\tsan_path_err_forget_rate \"no\"",
  "\tsan_path_err_recovery_time \"no\"",
  "\tmarginal_path_err_sample_time \"no\"",
  "\tmarginal_path_err_rate_threshold \"no\"",
  "\tmarginal_path_err_recheck_gap_time \"no\"",
  "\tmarginal_path_double_failed_time \"no\"",
  "\tfind_multipaths \"strict\"",
  "\tuxsock_timeout 4000",
  "\tretrigger_tries 0",
  "\tretrigger_delay 10",
  "\tmissing_uev_wait_timeout 30",
  "\tskip_kpartx \"no\"",
  "\tdisable_changed_wwids \"ignored\"",
  "\tremove_retries 0",
  "\tghost_delay \"no\"",
  "\tfind_multipaths_timeout -10",
  "\tenable_foreign \"NONE\"",
  "\tmarginal_pathgroups \"off\"",
  "\trecheck_wwid \"no\"",
  "}",
  "blacklist {",
  "\tdevnode \"!^(sd[a-z]|dasd[a-z]|nvme[0-9])\"",
  "\tdevice {",
  "\t\tvendor \"SGI\"",
  "\t\tproduct \"Universal Xport\"",
  "\t}",
  "}",
].join('\n');

describe('parseMultipathDefaults', () => {
  it('reads find_multipaths and user_friendly_names of the defaults section of multipathd show config / multipath -t', () => {
    expect(parseMultipathDefaults(MULTIPATH_T_DEBIAN12)).toEqual({ findMultipaths: 'strict', userFriendlyNames: 'no', findMultipathsTimeout: -10 });
  });

  it('reads an operator\'s /etc/multipath.conf: unquoted yes/no, comments, and only the defaults section', () => {
    const conf = [
      '# written by hand',
      'defaults {',
      '    user_friendly_names yes   # names mpathN',
      '    find_multipaths    yes',
      '    failback immediate',
      '}',
      'devices {',
      '    device {',
      '        vendor "IET"',
      '        user_friendly_names no',
      '        find_multipaths no',
      '    }',
      '}',
    ].join('\n');
    expect(parseMultipathDefaults(conf)).toEqual({ findMultipaths: 'on', userFriendlyNames: 'yes' });
    expect(parseMultipathDefaults('defaults {\n\tfind_multipaths "off"\n}\n').findMultipaths).toBe('off');
    expect(parseMultipathDefaults('defaults {\n\tfind_multipaths "smart"\n\tfind_multipaths_timeout 5\n}\n')).toEqual({ findMultipaths: 'smart', findMultipathsTimeout: 5 });
    expect(parseMultipathDefaults('')).toEqual({});
  });
});

describe('multipathAdvice', () => {
  it('warns about strict (the built-in default): a new volume with several portals would get no map', () => {
    const c = multipathAdvice(parseMultipathDefaults(MULTIPATH_T_DEBIAN12));
    expect(c.status).toBe('warn');
    expect(c.detail).toMatch(/find_multipaths strict .*\/etc\/multipath\/wwids/);
    expect(c.detail).toMatch(/user_friendly_names no/);
    expect(c.fix).toMatch(/find_multipaths yes/);
  });

  it('is ok with on, off, greedy and smart, and with either user_friendly_names (the driver keys on the WWID)', () => {
    for (const fm of ['on', 'off', 'greedy', 'smart']) {
      const c = multipathAdvice({ findMultipaths: fm, userFriendlyNames: 'yes' });
      expect(c.status, fm).toBe('ok');
      expect(c.fix).toBeUndefined();
      expect(c.detail).toContain(`find_multipaths ${fm} (`);
      expect(c.detail).toMatch(/user_friendly_names yes \(maps are named mpathN; the driver finds a map by the WWID/);
    }
  });
});

describe('parseIscsiadmVersion', () => {
  it('reads open-iscsi\'s version line', () => {
    expect(parseIscsiadmVersion('iscsiadm version 2.1.8\n')).toBe('2.1.8'); // verbatim, Debian 12
    expect(parseIscsiadmVersion('iscsiadm version 6.2.1.4-1\n')).toBe('6.2.1.4-1'); // RHEL's distro-style version
    expect(parseIscsiadmVersion('')).toBeUndefined();
    expect(parseIscsiadmVersion('iscsiadm: Unrecognized option\n')).toBeUndefined();
  });
});

describe('mount propagation', () => {
  // /proc/self/mountinfo of the build machine (verbatim lines): / is private there
  const BUILD_MACHINE = [
    '22 27 0:21 / /proc rw,relatime - proc proc rw',
    '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534',
    '45 27 0:40 / /tmp/iscsi-sim-uKB4zF/sys rw,relatime - tmpfs sim-sysfs rw,size=65536k,mode=755',
  ].join('\n');
  // a systemd host (shared root) with a bind of the kubelet dir, and a container's slave view (proc(5)'s example form)
  const SYSTEMD_HOST = [
    '25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
    '31 25 8:1 /var/lib/kubelet /var/lib/kubelet rw,relatime shared:1 - ext4 /dev/sda1 rw',
    '610 31 0:55 / /var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pvc/mount rw,relatime shared:210 - ext4 /dev/sdb rw',
  ].join('\n');
  const SLAVE = '36 35 98:0 /mnt1 /var/lib/kubelet rw,noatime master:1 - ext3 /dev/root rw,errors=continue';

  it('finds the mount a path lives on, the deepest one', () => {
    const host = parseMountInfo(SYSTEMD_HOST);
    expect(mountContaining(host, '/var/lib/kubelet')!.mountId).toBe(31);
    expect(mountContaining(host, '/var/lib/kubelet/plugins/x')!.mountId).toBe(31);
    expect(mountContaining(host, '/var/lib/kubeletx')!.mountId).toBe(25);
    expect(mountContaining(parseMountInfo(BUILD_MACHINE), '/var/lib/kubelet')!.mountPoint).toBe('/');
  });

  it('reads shared:N, master:N and private from the optional fields', () => {
    const [shared] = parseMountInfo(SYSTEMD_HOST);
    expect(propagationOf(shared!)).toEqual({ shared: 1, unbindable: false });
    expect(describePropagation(propagationOf(shared!))).toBe('shared:1');
    const [slave] = parseMountInfo(SLAVE);
    expect(describePropagation(propagationOf(slave!))).toBe('master:1 (a slave)');
    const root = parseMountInfo(BUILD_MACHINE).find((e) => e.mountPoint === '/')!;
    expect(propagationOf(root)).toEqual({ unbindable: false });
    expect(describePropagation(propagationOf(root))).toBe('private');
    expect(describePropagation(propagationOf({ optionalFields: ['shared:4', 'master:2'] }))).toBe('shared:4 master:2');
  });
});

describe('initiator name rules', () => {
  it('accepts generated names, as this build machine\'s', () => {
    expect(initiatorNameProblem('iqn.1993-08.org.debian:01:98bba5a32')).toBeUndefined();
    expect(initiatorNameProblem('iqn.2016-04.com.flatcar.iscsi:05c4437a5af8466eb19bbe2c1bad2903')).toBeUndefined();
    expect(initiatorNameProblem('iqn.2026-11.dev.example:node-1')).toBeUndefined();
  });

  it('refuses a generator prefix with nothing unique after it, and placeholder suffixes', () => {
    for (const prefix of GENERATOR_PREFIXES) {
      expect(initiatorNameProblem(prefix), prefix).toMatch(/nothing in it is unique/);
      expect(initiatorNameProblem(prefix.replace(/:$/, '')), prefix).toMatch(/nothing in it is unique/);
    }
    expect(initiatorNameProblem('iqn.1993-08.org.debian:01:000000000000')).toMatch(/placeholder/);
    expect(initiatorNameProblem('iqn.2005-03.org.open-iscsi:xxxxxxxx')).toMatch(/placeholder/);
    expect(initiatorNameProblem('iqn.1994-05.com.redhat:ab')).toMatch(/placeholder/);
  });

  it('checks the file with the driver\'s own reader: missing, GenerateName=yes, invalid, not unique, ok', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'doctor-iname-'));
    try {
      const at = (text: string | null) => {
        const file = join(dir, `f${Math.random()}`);
        if (text !== null) writeFileSync(file, text);
        const cfg = buildConfig(undefined);
        cfg.host.initiatorNameFile = file;
        return checkInitiatorName(cfg);
      };
      expect(await at(null)).toMatchObject({ status: 'fail', detail: expect.stringContaining('ENOENT'), fix: expect.stringContaining('iscsi-iname') });
      expect(await at('## DO NOT EDIT OR REMOVE THIS FILE!\nGenerateName=yes\n')).toMatchObject({ status: 'fail', detail: expect.stringContaining('GenerateName=yes') });
      expect(await at('InitiatorName=IQN.1993-08.org.debian:01:abc\n')).toMatchObject({ status: 'fail', detail: expect.stringContaining('lower case') });
      expect(await at('InitiatorName=iqn.1993-08.org.debian:01:\n')).toMatchObject({ status: 'fail', detail: expect.stringContaining('nothing in it is unique') });
      const good = await at('## comment\nInitiatorName=iqn.1993-08.org.debian:01:98bba5a32\n');
      expect(good).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^iqn\.1993-08\.org\.debian:01:98bba5a32 \(the node id\); .*kubectl get csinode/) });
      expect(good.fix).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('host access', () => {
  it('reads deploy/config-node.yaml\'s nsenter prefix, a chroot prefix and none', () => {
    const nsenter = hostAccessOf(['nsenter', '--target', '1', '--mount', '--net', '--']);
    expect(nsenter).toEqual({ kind: 'nsenter', targetPid: 1, mount: true, net: true });
    expect(describeHostAccess(nsenter)).toBe("nsenter into PID 1's mount and network namespaces");
    expect(unixSocketTableOf(nsenter)).toBe('/proc/1/net/unix');
    expect(hostAccessOf(['/usr/bin/nsenter', '-t1', '-mn'])).toEqual({ kind: 'nsenter', targetPid: 1, mount: true, net: true });
    const mountOnly = hostAccessOf(['nsenter', '--target=1', '--mount', '--']);
    expect(unixSocketTableOf(mountOnly)).toBe('/proc/self/net/unix');
    const chroot = hostAccessOf(['chroot', '/host']);
    expect(describeHostAccess(chroot)).toBe('chroot /host');
    expect(unixSocketTableOf(chroot)).toBe('/proc/self/net/unix');
    expect(hostAccessOf([])).toEqual({ kind: 'none' });
    expect(hostAccessOf(['sudo', '-n'])).toEqual({ kind: 'other', argv: ['sudo', '-n'] });
  });
});

describe('listensAt (/proc/net/unix)', () => {
  // this kernel's table (verbatim lines): iscsid's socket name bound by a program that passes the exact
  // name length (as iscsid and systemd do), and a name Node bound padded with NULs to the whole
  // sun_path (another name: iscsiadm would not reach it)
  const TABLE = [
    'Num       RefCount Protocol Flags    Type St Inode Path',
    '00000000224903ae: 00000002 00000000 00010000 0001 01 180172 @ISCSIADM_ABSTRACT_NAMESPACE',
    '00000000f1ae37e8: 00000002 00000000 00010000 0001 01 178887 @iscsi-csi-probe-x@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@',
  ].join('\n');

  it('finds a listening socket by its exact name only', () => {
    expect(listensAt(TABLE, ISCSID_SOCKET)).toBe(true);
    expect(listensAt(TABLE, '@iscsi-csi-probe-x')).toBe(false);
    // the same socket connected rather than listening (no __SO_ACCEPTCON flag, state 03)
    expect(listensAt(TABLE.replace('00010000 0001 01 180172', '00000000 0001 03 180172'), ISCSID_SOCKET)).toBe(false);
    expect(listensAt(TABLE.split('\n')[0]!, ISCSID_SOCKET)).toBe(false);
  });

  it('reads this kernel\'s own table', async () => {
    const table = await readFile('/proc/self/net/unix', 'utf8');
    expect(table.split('\n')[0]).toMatch(/^Num\s+RefCount Protocol Flags\s+Type St Inode Path/);
    expect(listensAt(table, `@iscsi-csi-doctor-no-such-socket-${process.pid}`)).toBe(false);
  });
});

describe('parseTgtSystem', () => {
  it('reads tgtd\'s state and its drivers (tgt 1.0.85, verbatim head)', () => {
    const text = 'System:\n    State: ready\n    debug: off\nLLDs:\n    iscsi: ready\n    iser: error\nBacking stores:\n    sheepdog\n    rdwr (bsoflags sync:direct)\n';
    expect(parseTgtSystem(text)).toEqual({ state: 'ready', llds: { iscsi: 'ready', iser: 'error' } });
  });
});

describe('state dir probe', () => {
  it('creates and removes its own probe file, touching nothing else', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'doctor-state-'));
    try {
      writeFileSync(join(dir, 'record.json'), '{}');
      expect(await checkStateDir(dir)).toMatchObject({ status: 'ok', detail: expect.stringContaining('is writable') });
      expect(readdirSync(dir)).toEqual(['record.json']);
      expect(await checkStateDir(join(dir, 'not', 'yet'))).toMatchObject({ status: 'ok', detail: expect.stringContaining('does not exist yet') });
      expect(await checkStateDir(join(dir, 'record.json'))).toMatchObject({ status: 'fail', detail: expect.stringContaining('not a directory') });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a directory that does not exist', () => {
  const check = (denied: string | undefined) => missingDirCheck('tgt pool dir', '/ro/pool', 'controller.tgt.poolDir', "the volumes' backing files", '/ro', denied);

  it('is ok when its parent is writable: the driver creates it', () => {
    expect(check(undefined)).toEqual({ name: 'tgt pool dir', status: 'ok', detail: '/ro/pool does not exist yet; the driver creates it at start (/ro is writable)' });
  });

  it('under a parent on a read-only filesystem (the guest kernel\'s EROFS for root too) names that, and asks for another path, not to create it', () => {
    expect(check('EROFS')).toEqual({
      name: 'tgt pool dir', status: 'fail',
      detail: '/ro/pool does not exist and /ro is not writable: it is on a read-only filesystem',
      fix: "set controller.tgt.poolDir to a path on a writable filesystem (the volumes' backing files); /ro/pool cannot be created on a read-only one",
    });
  });

  it('under a parent the driver may not write asks to create it', () => {
    expect(check('EACCES')).toMatchObject({ status: 'fail', detail: "/ro/pool does not exist and /ro is not writable: the driver's user may not write there", fix: "create /ro/pool for the driver, or set controller.tgt.poolDir (the volumes' backing files)" });
  });
});

describe('report', () => {
  const checks = [ok('a', 'fine'), warn('bb', 'hmm', 'do this'), fail('c', 'broken '.repeat(20).trim(), 'fix '.repeat(30).trim())];
  const report = { mode: 'node' as const, checks, summary: summarize(checks), notes: ['a note'] };

  it('exits 1 only when a check failed', () => {
    expect(exitCodeOf(checks)).toBe(1);
    expect(exitCodeOf(checks.slice(0, 2))).toBe(0);
  });

  it('renders a table with every detail and fix wrapped to the width, and the counts', () => {
    const table = renderTable(report, 80);
    const lines = table.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^CHECK\s+STATUS\s+DETAIL\s+FIX$/);
    expect(lines.every((l) => l.length <= 80)).toBe(true);
    expect(table.replace(/\s+/g, ' ')).toContain('broken broken');
    expect(lines.filter((l) => /^bb\s+warn\s+hmm\s+do this$/.test(l))).toHaveLength(1);
    expect(table).toContain('node checks: 1 ok, 1 warn, 1 fail');
    expect(table).toContain('a note');
    expect(wrap('one two three', 7)).toEqual(['one two', 'three']);
  });

  it('renders one JSON document with name, status, detail and fix (null when ok)', () => {
    const doc = JSON.parse(renderJson(report));
    expect(doc.checks[0]).toEqual({ name: 'a', status: 'ok', detail: 'fine', fix: null });
    expect(doc.checks[1]).toEqual({ name: 'bb', status: 'warn', detail: 'hmm', fix: 'do this' });
    expect(doc.summary).toEqual({ ok: 1, warn: 1, fail: 1 });
    expect(doc.notes).toEqual(['a note']);
  });
});
