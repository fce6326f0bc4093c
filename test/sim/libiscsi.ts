// The simulated initiator's wire side: discovery and login really go to the target through
// libiscsi's user-space tools, so the target's CHAP and ACL decide, exactly as on a node.
// CHAP secrets travel in libiscsi's environment variables (LIBISCSI_CHAP_PASSWORD, …, supported by
// libiscsi 1.19), never in argv or the URL, and are never logged.
import { execFile } from 'node:child_process';
import { isIPv6 } from 'node:net';
import { parsePortal } from './records.js';

const LIBISCSI_TIMEOUT_MS = 10_000;

export interface Chap {
  username?: string;
  password?: string;
  /** mutual CHAP: the target's credentials */
  usernameIn?: string;
  passwordIn?: string;
}

/** Why a login was refused, in open-iscsi's terms (see open-iscsi.md §1, usr/initiator.c). */
export type LoginFailure =
  | 'auth' //        status 0201/0202 → ISCSI_ERR_LOGIN_AUTH_FAILED (24)
  | 'fatal' //       any other login reject, e.g. 0203 target not found (tgt's ACL reject) → 19
  | 'connect'; //    TCP refused / unreachable → iscsid gives up with ISCSI_ERR_TRANS_TIMEOUT (8)

export type LibiscsiResult<T> = { ok: true; value: T } | { ok: false; failure: LoginFailure; message: string };

export interface DiscoveredTarget {
  iqn: string;
  address: string;
  port: number;
  tpgt: number;
}

const CHAP_ENV = ['LIBISCSI_CHAP_USERNAME', 'LIBISCSI_CHAP_PASSWORD', 'LIBISCSI_CHAP_TARGET_USERNAME', 'LIBISCSI_CHAP_TARGET_PASSWORD'];

function chapEnv(chap: Chap): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of CHAP_ENV) delete env[k];
  if (chap.username || chap.password) {
    env.LIBISCSI_CHAP_USERNAME = chap.username ?? '';
    env.LIBISCSI_CHAP_PASSWORD = chap.password ?? '';
  }
  if (chap.usernameIn || chap.passwordIn) {
    env.LIBISCSI_CHAP_TARGET_USERNAME = chap.usernameIn ?? '';
    env.LIBISCSI_CHAP_TARGET_PASSWORD = chap.passwordIn ?? '';
  }
  return env;
}

function hostPart(address: string): string {
  return isIPv6(address) ? `[${address}]` : address;
}

interface Run { code: number; stdout: string; stderr: string }

function run(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout: LIBISCSI_TIMEOUT_MS, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr: stderr || (err && code === -1 ? err.message : '') });
    });
  });
}

/** Maps libiscsi's message (it always exits 10 on login failure) to open-iscsi's classes. */
export function classifyLibiscsiFailure(text: string): LoginFailure {
  if (/\((513|514)\)/.test(text) || /Authentication failure|Authorization failure/i.test(text)) return 'auth';
  if (/Status: .*\(\d+\)/.test(text) || /Authentication failed|CHAP/i.test(text)) return 'fatal';
  return 'connect';
}

function failure<T>(r: Run): LibiscsiResult<T> {
  const message = (r.stderr + r.stdout).trim().split('\n').filter(Boolean).pop() ?? `exit ${r.code}`;
  return { ok: false, failure: classifyLibiscsiFailure(r.stderr + r.stdout), message };
}

/** SendTargets discovery (`iscsi-ls`): the targets this initiator may see on the portal. */
export async function sendTargets(address: string, port: number, initiator: string, chap: Chap): Promise<LibiscsiResult<DiscoveredTarget[]>> {
  const r = await run('iscsi-ls', ['-i', initiator, `iscsi://${hostPart(address)}:${port}/`], chapEnv(chap));
  if (r.code !== 0) return failure(r);
  const targets: DiscoveredTarget[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^Target:(\S+) Portal:(\S+)$/.exec(line.trim());
    if (!m) continue;
    const p = parsePortal(m[2]!);
    targets.push({ iqn: m[1]!, address: p.address, port: p.port, tpgt: p.tpgt < 0 ? 1 : p.tpgt });
  }
  return { ok: true, value: targets };
}

/**
 * A full login to the target (`iscsi-inq` on LUN 0, which every tgt target has): succeeds only if
 * the ACL admits the initiator name and the CHAP credentials are right.
 */
export async function loginCheck(address: string, port: number, iqn: string, initiator: string, chap: Chap): Promise<LibiscsiResult<void>> {
  const r = await run('iscsi-inq', ['-i', initiator, `iscsi://${hostPart(address)}:${port}/${iqn}/0`], chapEnv(chap));
  return r.code === 0 ? { ok: true, value: undefined } : failure(r);
}
