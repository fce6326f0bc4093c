// open-iscsi's iscsiadm, as typed calls. Every call goes through the CommandRunner (argv only, timeout,
// secrets redacted) and returns a typed outcome instead of throwing on a non-zero exit, because most
// exit codes carry meaning a flow acts on: 15 on login = already logged in, 21 on logout/delete =
// already gone. `orThrow` turns a failure into the typed error for the gRPC surface.
// Output parsers are pure functions, key-based where iscsiadm prints records, and tested on verbatim
// outputs of several open-iscsi versions.
import { CsiError, DeadlineExceeded } from '../errors.js';
import { Secret, type Logger } from '../log.js';
import type { Arg, CommandRunner, RunResult } from '../runner.js';
import type { StaleLockSweeper } from './iscsi-db-lock.js';
import { ISCSI_EXIT, iscsiExitError, iscsiExitMessage, iscsiExitName, type IscsiExitCode } from './iscsi-exit.js';
import { formatPortal, portalKeyOf, type Portal } from '../common/validate.js';
import type { ChapCredentials } from '../contract/chap.js';

// ---------------------------------------------------------------------------------------------------
// Results

export interface IscsiOk {
  ok: true;
  /** the object was already in the wanted state (e.g. exit 15 on login, 21 on logout) */
  already: boolean;
}

export interface IscsiFailure {
  ok: false;
  code: IscsiExitCode;
  exit: number;
  /** operator-facing: what failed, iscsiadm's reason, the exit status; never a secret */
  message: string;
}

export type IscsiOutcome = IscsiOk | IscsiFailure;
export type IscsiValue<T> = { ok: true; value: T } | IscsiFailure;

/** The typed error for a failed call (UNAVAILABLE for transient causes, FAILED_PRECONDITION for CHAP/ACL…). */
export function iscsiFailureError(failure: IscsiFailure): CsiError {
  return iscsiExitError(failure.exit, failure.message);
}

/** Returns a successful result, or throws the typed error of a failure. */
export function orThrow<R extends { ok: true }>(result: R | IscsiFailure): R {
  if (!result.ok) throw iscsiFailureError(result);
  return result;
}

// ---------------------------------------------------------------------------------------------------
// Argument types

/** A node record: target, portal and the iface it is bound to. */
export interface NodeRef {
  iqn: string;
  portal: Portal;
  iface: string;
}

/** A sendtargets discovery record. */
export interface DiscoveryRef {
  portal: Portal;
  iface: string;
}

export type RecordSettings = Record<string, string | Secret>;

/** The form iscsiadm's `-p` takes: `ip:port`, `[v6]:port`, `host:port`. */
export function portalArg(portal: Portal): string {
  return formatPortal(portal);
}

// ---------------------------------------------------------------------------------------------------
// Parsers

/** open-iscsi prints empty strings as this (usr/iscsi_settings.h UNKNOWN_VALUE). */
export const EMPTY_VALUE = '<empty>';
const DEFAULT_TRANSPORT = 'tcp';
/** A tpgt of -1 is printed through an unsigned format by some listings (`,4294967295`). */
const UINT32 = 2 ** 32;
const INT32_MAX = 2 ** 31 - 1;

function parseTpgt(text: string): number {
  const n = Number(text);
  return n > INT32_MAX ? n - UINT32 : n;
}

function orNull(value: string | undefined): string | null {
  return value === undefined || value === '' || value === EMPTY_VALUE ? null : value;
}

/**
 * Splits `# BEGIN RECORD` … `# END RECORD` blocks (several may be concatenated; a truncated last block
 * and a headerless file count as records too) into key → value maps, following open-iscsi's own
 * reader: blank and `#` lines skipped, name up to whitespace or `=`, value the rest of the line.
 * `<empty>` becomes "".
 */
export function parseRecords(text: string): Map<string, string>[] {
  const records: Map<string, string>[] = [];
  let current = new Map<string, string>();
  const flush = (): void => {
    if (current.size > 0) records.push(current);
    current = new Map();
  };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('# BEGIN RECORD') || line.startsWith('# END RECORD')) {
      flush();
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([^\s=]+)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    const value = m[2]!.trim();
    current.set(m[1]!, value === EMPTY_VALUE ? '' : value);
  }
  flush();
  return records;
}

export interface IfaceRecord {
  name: string;
  /** `<empty>` means tcp, as open-iscsi itself defaults it */
  transport: string;
  initiatorName: string | null;
  hwAddress: string | null;
  ipAddress: string | null;
  netIfaceName: string | null;
  /** every `iface.*` key with its value ("" for `<empty>`), in the printed order */
  settings: Record<string, string>;
}

function ifaceFromRecord(rec: Map<string, string>): IfaceRecord {
  const settings: Record<string, string> = {};
  for (const [k, v] of rec) if (k.startsWith('iface.')) settings[k] = v;
  return {
    name: rec.get('iface.iscsi_ifacename') || 'default',
    transport: rec.get('iface.transport_name') || DEFAULT_TRANSPORT,
    initiatorName: orNull(rec.get('iface.initiatorname')),
    hwAddress: orNull(rec.get('iface.hwaddress')),
    ipAddress: orNull(rec.get('iface.ipaddress')),
    netIfaceName: orNull(rec.get('iface.net_ifacename')),
    settings,
  };
}

/** `iscsiadm -m iface -I <name> -o show`; null when the output holds no iface record. */
export function parseIfaceRecord(text: string): IfaceRecord | null {
  const rec = parseRecords(text).find((r) => [...r.keys()].some((k) => k.startsWith('iface.')));
  return rec ? ifaceFromRecord(rec) : null;
}

export interface PortalTarget {
  /** address as printed, brackets removed */
  address: string;
  port: number;
  tpgt: number;
  iqn: string;
  /** canonical `addr:port` / `[v6]:port` */
  portal: string;
}

const PORTAL_TPGT_RE = /^(?:\[([^\]]*)\]|(.*)):(\d+),(-?\d+)$/;

function parsePortalTpgt(text: string): { address: string; port: number; tpgt: number; portal: string } | null {
  const m = PORTAL_TPGT_RE.exec(text);
  if (!m) return null;
  const address = m[1] ?? m[2]!;
  const port = Number(m[3]);
  return { address, port, tpgt: parseTpgt(m[4]!), portal: portalKeyOf(address, port) };
}

/** SendTargets discovery output and `iscsiadm -m node` listing: `<addr>:<port>,<tpgt> <iqn>` per line. */
export function parseDiscovery(text: string): PortalTarget[] {
  const out: PortalTarget[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\S+)\s+(\S+)$/.exec(line.trim());
    if (!m) continue;
    const p = parsePortalTpgt(m[1]!);
    if (p) out.push({ ...p, iqn: m[2]! });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Failure messages

/** Lines that restate the exit status or are environment noise; the specific cause is in the others. */
const GENERIC_LINE_RES = [
  /^Could not login to \[/,
  /^Could not log into all portals/,
  /^Could not logout of /,
  /^Could not logout of all requested sessions/,
  /^initiator reported error \(/,
  /^Could not perform SendTargets discovery/,
  /^Logging (in to|out of) /,
  /^System has not been booted with systemd/,
  /^Failed to connect to bus/,
];

/** The most specific line iscsiadm printed about a failure, without prefixes, or "". */
export function failureDetail(stderr: string, human: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim().replace(/^iscsiadm: /, '').replace(/^iSCSI ERROR:\s*/, '').replace(/\s+# \S+:\S+\(\):\d+$/, '').trim())
    .filter((l) => l.length > 0 && !GENERIC_LINE_RES.some((re) => re.test(l)) && (human === '' || !l.includes(human)));
  return lines[lines.length - 1] ?? '';
}

function scrub(text: string, args: Arg[]): string {
  let out = text;
  for (const a of args) {
    if (a instanceof Secret && a.reveal().length > 0) out = out.split(a.reveal()).join(String(a));
  }
  return out;
}

function failure(result: RunResult, args: Arg[], what: string): IscsiFailure {
  const human = iscsiExitMessage(result.exitCode);
  const detail = failureDetail(scrub(result.stderr, args), human);
  return {
    ok: false,
    code: iscsiExitName(result.exitCode),
    exit: result.exitCode,
    message: `${what} failed: ${human} (iscsiadm exit ${result.exitCode})${detail ? `: ${detail}` : ''}`,
  };
}

// ---------------------------------------------------------------------------------------------------
// The adapter

const SETTINGS_PREFIX_NODE_CHAP = 'node.session.auth';
const SETTINGS_PREFIX_DISCOVERY_CHAP = 'discovery.sendtargets.auth';
/** Keys never copied from a base iface when cloning: the clone's own name and initiator name. */
const IFACE_CLONE_SKIP = new Set(['iface.iscsi_ifacename', 'iface.initiatorname']);

function settingsArgs(settings: RecordSettings): Arg[] {
  // iscsiadm collects every -n/-v pair of one command line into a list and applies them together.
  return Object.entries(settings).flatMap(([k, v]) => ['-n', k, '-v', v]);
}

/**
 * CHAP keys of a record: authmethod, username, password, and the mutual pair — emptied when the CHAP
 * asked for is one-way, so a record left from an earlier mutual setup does not make the initiator
 * demand the target's credentials (and the login fail).
 */
function chapSettings(prefix: string, chap: ChapCredentials): RecordSettings {
  const mutual = chap.usernameIn !== undefined && chap.passwordIn !== undefined;
  return {
    [`${prefix}.authmethod`]: 'CHAP',
    [`${prefix}.username`]: chap.username,
    [`${prefix}.password`]: chap.password,
    [`${prefix}.username_in`]: mutual ? chap.usernameIn! : '',
    [`${prefix}.password_in`]: mutual ? chap.passwordIn! : '',
  };
}

/** Session CHAP keys of a node record: the credentials given, or `authmethod None` without any. */
export function sessionChapSettings(chap: ChapCredentials | undefined): RecordSettings {
  return chap ? chapSettings(SETTINGS_PREFIX_NODE_CHAP, chap) : { [`${SETTINGS_PREFIX_NODE_CHAP}.authmethod`]: 'None' };
}

export class Iscsiadm {
  constructor(
    private readonly runner: CommandRunner,
    private readonly logger?: Logger,
    /** clears open-iscsi's lock.write when a killed iscsiadm left it (see iscsi-db-lock.ts) */
    private readonly dbLock?: StaleLockSweeper,
  ) {}

  /**
   * Every iscsiadm call: a left-over record lock is cleared before it, and again right after the
   * runner killed it at its timeout (it may have died holding the lock, or waiting for a stale one).
   */
  private async run(args: Arg[]): Promise<RunResult> {
    await this.dbLock?.clearIfStale(this.logger, 'before iscsiadm');
    try {
      return await this.runner.run('iscsiadm', args, this.logger ? { logger: this.logger } : {});
    } catch (e) {
      if (e instanceof DeadlineExceeded) await this.dbLock?.clearIfStale(this.logger, 'after killing iscsiadm');
      throw e;
    }
  }

  /** Runs a mutating call; exit 0 → ok, an exit in `already` → ok with already=true. */
  private async act(args: Arg[], what: string, already: number[] = []): Promise<IscsiOutcome> {
    const r = await this.run(args);
    if (r.exitCode === 0) return { ok: true, already: false };
    if (already.includes(r.exitCode)) {
      this.logger?.debug({ exitCode: r.exitCode, what }, 'iscsiadm: already in the wanted state');
      return { ok: true, already: true };
    }
    return failure(r, args, what);
  }

  /** Runs a query; exit 21 (no objects) yields `empty` when one is given. */
  private async query<T>(args: Arg[], what: string, parse: (stdout: string) => T, empty: T | undefined): Promise<IscsiValue<T>> {
    const r = await this.run(args);
    if (r.exitCode === 0) return { ok: true, value: parse(r.stdout) };
    if (r.exitCode === ISCSI_EXIT.NO_OBJS_FOUND && empty !== undefined) return { ok: true, value: empty };
    return failure(r, args, what);
  }

  // --- ifaces ---------------------------------------------------------------------------------------

  /** The iface record, or null when no such iface exists (iscsiadm exit 6 "No such file", or 21). */
  async showIface(name: string): Promise<IscsiValue<IfaceRecord | null>> {
    const args = ['-m', 'iface', '-I', name, '-o', 'show'];
    const r = await this.run(args);
    if (r.exitCode === 0) {
      const rec = parseIfaceRecord(r.stdout);
      if (rec) return { ok: true, value: rec };
      return { ok: false, code: 'UNKNOWN', exit: 0, message: `reading iSCSI interface ${name} failed: iscsiadm printed no iface record` };
    }
    const missing = r.exitCode === ISCSI_EXIT.NO_OBJS_FOUND || (r.exitCode === ISCSI_EXIT.IDBM && /No such file or directory/.test(r.stderr));
    if (missing) return { ok: true, value: null };
    return failure(r, args, `reading iSCSI interface ${name}`);
  }

  /** `-o new`; exit 15 (exists) is tolerated. */
  async newIface(name: string): Promise<IscsiOutcome> {
    return this.act(['-m', 'iface', '-I', name, '-o', 'new'], `creating iSCSI interface ${name}`, [ISCSI_EXIT.SESS_EXISTS]);
  }

  /** One key per call: iscsiadm before 2.1 applies only the last -n/-v pair in iface mode. */
  async updateIface(name: string, key: string, value: string): Promise<IscsiOutcome> {
    return this.act(['-m', 'iface', '-I', name, '-o', 'update', '-n', key, '-v', value], `setting ${key} of iSCSI interface ${name}`);
  }

  /** `-o delete`; exit 21 (gone) is tolerated. */
  async deleteIface(name: string): Promise<IscsiOutcome> {
    return this.act(['-m', 'iface', '-I', name, '-o', 'delete'], `deleting iSCSI interface ${name}`, [ISCSI_EXIT.NO_OBJS_FOUND]);
  }

  /**
   * Creates iface `newName` as a copy of `base` with its own initiator name (the in-tree plugin's
   * cloneIface). A new iface starts with every string empty and every number 0, so only other values
   * are copied, one iscsiadm call each. On any failure the half-made iface is deleted.
   */
  async cloneIface(base: IfaceRecord, newName: string, initiatorName: string): Promise<IscsiOutcome> {
    const created = await this.newIface(newName);
    if (!created.ok) return created;
    const updates: [string, string][] = Object.entries(base.settings).filter(
      ([k, v]) => !IFACE_CLONE_SKIP.has(k) && v !== '' && v !== '0' && !(k === 'iface.transport_name' && v === DEFAULT_TRANSPORT),
    );
    if (base.transport !== DEFAULT_TRANSPORT && !updates.some(([k]) => k === 'iface.transport_name')) updates.push(['iface.transport_name', base.transport]);
    updates.push(['iface.initiatorname', initiatorName]);
    for (const [key, value] of updates) {
      const r = await this.updateIface(newName, key, value);
      if (!r.ok) {
        const cleanup = await this.deleteIface(newName);
        if (!cleanup.ok) this.logger?.warn({ iface: newName, error: cleanup.message }, 'could not delete half-made iSCSI interface');
        return r;
      }
    }
    return { ok: true, already: created.already };
  }

  // --- discovery ------------------------------------------------------------------------------------

  private discoveryArgs(ref: DiscoveryRef): string[] {
    return ['-m', 'discoverydb', '-t', 'sendtargets', '-p', portalArg(ref.portal), '-I', ref.iface];
  }

  async newDiscovery(ref: DiscoveryRef): Promise<IscsiOutcome> {
    return this.act([...this.discoveryArgs(ref), '-o', 'new'], `creating the discovery record for ${portalArg(ref.portal)}`, [ISCSI_EXIT.SESS_EXISTS]);
  }

  async updateDiscovery(ref: DiscoveryRef, settings: RecordSettings): Promise<IscsiOutcome> {
    return this.act([...this.discoveryArgs(ref), '-o', 'update', ...settingsArgs(settings)], `updating the discovery record for ${portalArg(ref.portal)}`);
  }

  /** Sets discovery CHAP (authmethod, username, password, and the mutual pair when given) in one call. */
  async setDiscoveryChap(ref: DiscoveryRef, chap: ChapCredentials): Promise<IscsiOutcome> {
    return this.updateDiscovery(ref, chapSettings(SETTINGS_PREFIX_DISCOVERY_CHAP, chap));
  }

  /**
   * SendTargets discovery; "No portals found" (21) is an empty list. With `persist: false`
   * (`-o nonpersistent`) it only reports: the default op creates a node record for every target the
   * portal lists and resets existing ones to iscsid.conf defaults (open-iscsi #58).
   */
  async discover(ref: DiscoveryRef, opts: { persist?: boolean } = {}): Promise<IscsiValue<PortalTarget[]>> {
    const op = opts.persist === false ? ['-o', 'nonpersistent'] : [];
    return this.query([...this.discoveryArgs(ref), '--discover', ...op], `iSCSI discovery at ${portalArg(ref.portal)}`, parseDiscovery, []);
  }

  async deleteDiscovery(ref: DiscoveryRef): Promise<IscsiOutcome> {
    return this.act([...this.discoveryArgs(ref), '-o', 'delete'], `deleting the discovery record for ${portalArg(ref.portal)}`, [ISCSI_EXIT.NO_OBJS_FOUND]);
  }

  // --- node records and sessions --------------------------------------------------------------------

  private nodeArgs(node: NodeRef): string[] {
    return ['-m', 'node', '-T', node.iqn, '-p', portalArg(node.portal), '-I', node.iface];
  }

  private nodeName(node: NodeRef): string {
    return `${portalArg(node.portal)} ${node.iqn}`;
  }

  /** `-o new`, with the portal group when known (`-p ip:port,tpgt`); an existing record (15) is fine. */
  async newNode(node: NodeRef, tpgt?: number): Promise<IscsiOutcome> {
    const args = ['-m', 'node', '-T', node.iqn, '-p', tpgt === undefined ? portalArg(node.portal) : `${portalArg(node.portal)},${tpgt}`, '-I', node.iface];
    return this.act([...args, '-o', 'new'], `creating the node record for ${this.nodeName(node)}`, [ISCSI_EXIT.SESS_EXISTS]);
  }

  /** Sets several keys in one call, e.g. `{ 'node.session.scan': 'manual' }`. */
  async updateNode(node: NodeRef, settings: RecordSettings): Promise<IscsiOutcome> {
    return this.act([...this.nodeArgs(node), '-o', 'update', ...settingsArgs(settings)], `updating the node record for ${this.nodeName(node)}`);
  }

  /** `--login`; exit 15 (a session exists, e.g. left from a crash) counts as logged in. */
  async login(node: NodeRef): Promise<IscsiOutcome> {
    return this.act([...this.nodeArgs(node), '--login'], `iSCSI login to ${this.nodeName(node)}`, [ISCSI_EXIT.SESS_EXISTS]);
  }

  /** `--logout`; 21 (no matching session) and 2 (session not found) count as logged out. */
  async logout(node: NodeRef): Promise<IscsiOutcome> {
    return this.act([...this.nodeArgs(node), '--logout'], `iSCSI logout from ${this.nodeName(node)}`, [ISCSI_EXIT.NO_OBJS_FOUND, ISCSI_EXIT.SESS_NOT_FOUND]);
  }

  /** `-o delete`; 21 (no records) counts as deleted. */
  async deleteNode(node: NodeRef): Promise<IscsiOutcome> {
    return this.act([...this.nodeArgs(node), '-o', 'delete'], `deleting the node record for ${this.nodeName(node)}`, [ISCSI_EXIT.NO_OBJS_FOUND]);
  }
}
