// The node's initiator stack as the driver will use it: the host's iscsiadm (through the configured
// host access), iscsid's control socket, and the kernel's iSCSI TCP transport.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { DeadlineExceeded, errnoCode } from '../errors.js';
import { ISCSI_EXIT } from '../node-host/iscsi-exit.js';
import { firstLine, type CommandRunner, type RunResult } from '../runner.js';
import { CHECK, fail, ok, warn, type Check } from './check.js';
import { describeHostAccess, hostAccessOf, prefixOf, unixSocketTableOf, type HostAccess } from './host-access.js';

/** `iscsiadm --version` prints `iscsiadm version 2.1.8` (RHEL builds: a distro version such as 6.2.1.4-1). */
export function parseIscsiadmVersion(stdout: string): string | undefined {
  return /^iscsiadm version (\S+)\s*$/m.exec(stdout)?.[1];
}

/**
 * iscsid's control socket (open-iscsi usr/mgmt_ipc.h ISCSIADM_NAMESPACE), an abstract unix socket in
 * the network namespace iscsid runs in; systemd's iscsid.socket listens on it for a not yet started
 * iscsid. `iscsiadm -m session` does not tell: it lists sessions from sysfs without asking iscsid
 * (open-iscsi 2.1.x exits 21 "No active sessions" with no iscsid at all).
 */
export const ISCSID_SOCKET = '@ISCSIADM_ABSTRACT_NAMESPACE';

/** /proc/net/unix Flags bit of a listening socket (__SO_ACCEPTCON). */
const SO_ACCEPTCON = 0x10000;

/** Whether /proc/<pid>/net/unix has a listening socket at `path` (abstract names start with "@"). */
export function listensAt(table: string, path: string): boolean {
  for (const line of table.split('\n').slice(1)) {
    // Num RefCount Protocol Flags Type St Inode [Path]
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && f.slice(7).join(' ') === path && (Number.parseInt(f[3]!, 16) & SO_ACCEPTCON) !== 0) return true;
  }
  return false;
}

/** nsenter's own exit status when it cannot execute the command inside (util-linux: 126/127 as a shell's). */
const EXIT_NOT_FOUND = 127;

async function run(runner: CommandRunner, name: 'iscsiadm', args: string[]): Promise<RunResult | Error> {
  try {
    return await runner.run(name, args);
  } catch (e) {
    return e as Error;
  }
}

function installIscsiadm(access: HostAccess): string {
  const where = access.kind === 'none' ? 'on this machine' : 'on the host';
  const path = access.kind === 'none' ? 'its absolute path' : "its absolute path on the host (the driver runs the host's iscsiadm)";
  return `install open-iscsi ${where} (Debian/Ubuntu: apt install open-iscsi; RHEL: dnf install iscsi-initiator-utils), or set commands.iscsiadm.argv to ${path}`;
}

export async function checkIscsiadm(cfg: Config, runner: CommandRunner): Promise<Check> {
  const access = hostAccessOf(prefixOf(cfg, 'iscsiadm'));
  const via = describeHostAccess(access);
  const r = await run(runner, 'iscsiadm', ['--version']);
  if (r instanceof DeadlineExceeded) return fail(CHECK.iscsiadm, `iscsiadm --version did not finish (host access: ${via}): ${r.message}`, 'check that the host access in commandPrefix works (e.g. run the same prefix with `true` on the node)');
  if (r instanceof Error) return fail(CHECK.iscsiadm, `${r.message} (host access: ${via})`, installIscsiadm(access));
  if (r.exitCode === EXIT_NOT_FOUND || (r.exitCode !== 0 && /No such file or directory|not found/i.test(r.stderr))) {
    return fail(CHECK.iscsiadm, `not found (host access: ${via}): ${firstLine(r)}`, installIscsiadm(access));
  }
  const version = parseIscsiadmVersion(r.stdout);
  if (r.exitCode !== 0 || !version) return fail(CHECK.iscsiadm, `iscsiadm --version exited ${r.exitCode} (host access: ${via}): ${firstLine(r)}`, installIscsiadm(access));
  return ok(CHECK.iscsiadm, `iscsiadm version ${version} (host access: ${via})`);
}

const FIX_ISCSID = 'on the host: `systemctl enable --now iscsid.socket` (Debian/Ubuntu; RHEL: `systemctl enable --now iscsid`); run exactly one iscsid per node, the host\'s, never one in a pod (its netlink socket is not namespaced)';

export async function checkIscsid(cfg: Config, runner: CommandRunner, procRoot?: string): Promise<Check> {
  const access = hostAccessOf(prefixOf(cfg, 'iscsiadm'));
  const tablePath = unixSocketTableOf(access, procRoot);
  const [table, sessions] = await Promise.all([
    readFile(tablePath, 'utf8').catch((e: unknown) => e as Error),
    run(runner, 'iscsiadm', ['-m', 'session']),
  ]);
  let sessionsText = '';
  if (!(sessions instanceof Error)) {
    const notConnected = sessions.exitCode === ISCSI_EXIT.ISCSID_NOTCONN || /can not connect to iSCSI daemon/.test(sessions.stderr);
    if (notConnected) return fail(CHECK.iscsid, `iscsiadm cannot connect to iscsid: ${firstLine(sessions)} (exit ${sessions.exitCode})`, FIX_ISCSID);
    if (sessions.exitCode === 0) {
      const n = sessions.stdout.split('\n').filter((l) => /^\S+: \[\d+\]/.test(l)).length;
      sessionsText = `; ${n} session${n === 1 ? '' : 's'}`;
    } else if (sessions.exitCode === ISCSI_EXIT.NO_OBJS_FOUND) {
      sessionsText = '; no sessions';
    }
  }
  if (table instanceof Error) {
    return warn(CHECK.iscsid, `cannot tell: ${tablePath} is not readable (${errnoCode(table) ?? table.message})${sessionsText}`,
      `run the doctor where it can read ${tablePath} (as root; in the node plugin's pod, which has hostPID); or check on the host: \`ss -xl | grep ISCSIADM\``);
  }
  if (!listensAt(table, ISCSID_SOCKET)) {
    return fail(CHECK.iscsid, `nothing listens on iscsid's control socket ${ISCSID_SOCKET} in ${tablePath}: logins would fail with "could not connect to iscsid" (exit 20)`, FIX_ISCSID);
  }
  return ok(CHECK.iscsid, `listening on ${ISCSID_SOCKET} (${tablePath})${sessionsText}`);
}

/** The kernel's iSCSI over TCP transport (iscsi_tcp, with scsi_transport_iscsi under it). */
export const ISCSI_TCP_MODULE = 'iscsi_tcp';

export async function checkIscsiTcp(cfg: Config): Promise<Check> {
  const dir = join(cfg.host.sysRoot, 'module', ISCSI_TCP_MODULE);
  const found = await stat(dir).then((s) => s.isDirectory(), () => false);
  if (found) return ok(CHECK.iscsiTcp, `loaded (${dir})`);
  return fail(CHECK.iscsiTcp, `not loaded: ${dir} does not exist`,
    `on the host: \`modprobe ${ISCSI_TCP_MODULE}\`, and for every boot \`echo ${ISCSI_TCP_MODULE} > /etc/modules-load.d/${ISCSI_TCP_MODULE}.conf\`; if modprobe cannot find it, this kernel has no iSCSI initiator module (install the distribution's extra-modules package for it)`);
}
