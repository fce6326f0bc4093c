// tgtadm (Linux tgt) adapter: typed calls and a parser for `--op show --mode target`.
// Used by the tgt controller backend and by the simulated host (to find a LUN's backing file, to grow one).
import type { CommandRunner, Arg, RunResult } from '../../runner.js';
import { Secret, type Logger } from '../../log.js';
import { firstLine } from '../../runner.js';
import { DeadlineExceeded, FailedPrecondition, Internal, Unavailable } from '../../errors.js';
import type { ReachabilityObserver } from '../../common/reachability.js';

export interface TgtLun {
  lun: number;
  type: string;               // "controller" | "disk" | …
  scsiId: string;
  scsiSn: string;
  sizeMb: number;
  online: boolean;
  readonly: boolean;
  backingStoreType: string;   // "rdwr" | "null" | …
  backingStorePath: string | null;
}

export interface TgtNexus {
  nexus: number;
  initiator: string;
  alias?: string;
  addresses: string[];
}

export interface TgtTarget {
  tid: number;
  name: string;
  state: string;
  nexuses: TgtNexus[];
  luns: TgtLun[];
  accounts: string[];
  outgoingAccounts: string[];
  acls: string[];
}

/** tgtd's error strings (tgtadm exit 22), by meaning. */
export const TGT_ERR = {
  targetExists: 'this target already exists',
  noTarget: "can't find the target",
  noLun: "can't find the logical unit",
  lunExists: 'this logical unit number already exists',
  aclExists: 'this access control rule already exists',
  noAcl: 'this access control rule does not exist',
  accountExists: 'this account already exists',
  noAccount: "can't find the account",
  bindingExists: 'this binding already exists',
  noBinding: "can't find the binding",
  targetActive: 'this target is still active',
} as const;

const INDENT = 4;

function depth(line: string): number {
  return (line.length - line.trimStart().length) / INDENT;
}

/** Parses `tgtadm --lld iscsi --op show --mode target` (all targets). Key-based within each block. */
export function parseTgtTargets(text: string): TgtTarget[] {
  const targets: TgtTarget[] = [];
  let target: TgtTarget | undefined;
  let section = '';
  let lun: TgtLun | undefined;
  let nexus: TgtNexus | undefined;
  for (const raw of text.split('\n')) {
    if (!raw.trim()) continue;
    const d = depth(raw);
    const line = raw.trim();
    const header = /^Target (\d+): (.+)$/.exec(raw);
    if (header) {
      target = { tid: Number(header[1]), name: header[2]!.trim(), state: '', nexuses: [], luns: [], accounts: [], outgoingAccounts: [], acls: [] };
      targets.push(target);
      section = '';
      continue;
    }
    if (!target) continue;
    if (d === 1) {
      section = line.replace(/:$/, '');
      lun = undefined;
      nexus = undefined;
      continue;
    }
    const [key, ...rest] = line.split(':');
    const value = rest.join(':').trim();
    switch (section) {
      case 'System information':
        if (key === 'State') target.state = value;
        break;
      case 'I_T nexus information':
        if (d === 2 && key === 'I_T nexus') {
          nexus = { nexus: Number(value), initiator: '', addresses: [] };
          target.nexuses.push(nexus);
        } else if (nexus && key === 'Initiator') {
          const m = /^(\S+)(?:\s+alias:\s*(.*))?$/.exec(value);
          nexus.initiator = m?.[1] ?? value;
          if (m?.[2]) nexus.alias = m[2];
        } else if (nexus && key === 'IP Address') {
          nexus.addresses.push(value);
        }
        break;
      case 'LUN information':
        if (d === 2 && key === 'LUN') {
          lun = { lun: Number(value), type: '', scsiId: '', scsiSn: '', sizeMb: 0, online: false, readonly: false, backingStoreType: '', backingStorePath: null };
          target.luns.push(lun);
        } else if (lun) {
          applyLunField(lun, key ?? '', value);
        }
        break;
      case 'Account information':
        if (/ \(outgoing\)$/.test(line)) target.outgoingAccounts.push(line.replace(/ \(outgoing\)$/, ''));
        else target.accounts.push(line);
        break;
      case 'ACL information':
        target.acls.push(line);
        break;
    }
  }
  return targets;
}

function applyLunField(lun: TgtLun, key: string, value: string): void {
  switch (key) {
    case 'Type': lun.type = value; break;
    case 'SCSI ID': lun.scsiId = value; break;
    case 'SCSI SN': lun.scsiSn = value; break;
    case 'Size': lun.sizeMb = Number(/^(\d+)/.exec(value)?.[1] ?? 0); break;
    case 'Online': lun.online = value === 'Yes'; break;
    case 'Readonly': lun.readonly = value === 'Yes'; break;
    case 'Backing store type': lun.backingStoreType = value; break;
    case 'Backing store path': lun.backingStorePath = value === 'None' || value === '' ? null : value; break;
  }
}

/** Parses `--op show --mode portal`: "Portal: 127.0.0.1:3260,1". */
export function parseTgtPortals(text: string): string[] {
  return text.split('\n').map((l) => /^Portal: (.+),\d+$/.exec(l.trim())?.[1]).filter((p): p is string => !!p);
}

/** `--op show --mode system`: tgtd's own state and each driver's (`iscsi: ready`). */
export interface TgtSystem {
  state: string;
  llds: Record<string, string>;
}

/** Parses `tgtadm --op show --mode sys` (System: State, LLDs: name: state). */
export function parseTgtSystem(text: string): TgtSystem {
  const out: TgtSystem = { state: '', llds: {} };
  let section = '';
  for (const raw of text.split('\n')) {
    if (!raw.trim()) continue;
    if (depth(raw) === 0) {
      section = raw.trim().replace(/:$/, '');
      continue;
    }
    const m = /^([^:]+):\s*(.*)$/.exec(raw.trim());
    if (!m) continue;
    if (section === 'System' && m[1] === 'State') out.state = m[2]!;
    else if (section === 'LLDs') out.llds[m[1]!] = m[2]!;
  }
  return out;
}

/**
 * What tgtadm prints when it cannot talk to tgtd at all (usr/tgtadm.c ipc_mgmt_req/ipc_mgmt_rsp): no
 * daemon on that control port, or one that died mid-request. Any other failure is tgtd's own answer.
 */
const TGTD_UNREACHABLE_RE = /can't connect to (?:the )?tgt daemon|failed to send request (?:hdr|buf) to tgt daemon|failed to read from tgtd/;

export function tgtdUnreachable(r: RunResult): boolean {
  return r.exitCode !== 0 && TGTD_UNREACHABLE_RE.test(`${r.stderr}\n${r.stdout}`);
}

interface TgtResult {
  ok: boolean;
  exitCode: number;
  message: string;
}

/**
 * Typed tgtadm calls against one tgtd (its control port). A call that cannot reach tgtd (no daemon on
 * the port, no answer within the command's timeout) throws UNAVAILABLE naming tgtd and its port, and
 * every call's outcome is reported to the observer (the backend's view of whether tgtd is reachable).
 */
export class Tgtadm {
  constructor(
    private readonly runner: CommandRunner,
    private readonly controlPort: number,
    private readonly logger?: Logger,
    private readonly observer?: ReachabilityObserver,
  ) {}

  /** Runs tgtadm -C <port> …args; returns tgtd's answer (any exit status) or throws when tgtd gave none. */
  private async exec(args: Arg[]): Promise<RunResult> {
    let r: RunResult;
    try {
      r = await this.runner.run('tgtadm', ['-C', String(this.controlPort), ...args], this.logger ? { logger: this.logger } : {});
    } catch (e) {
      // killed at its timeout: tgtd accepted the connection but never answered (stopped, or hung)
      if (e instanceof DeadlineExceeded) throw this.#unreachable(e.message);
      // tgtadm itself cannot run (not installed, wrong commands.tgtadm): an operator must fix the config
      if (e instanceof FailedPrecondition) this.observer?.unreachable(e.message);
      throw e;
    }
    if (tgtdUnreachable(r)) throw this.#unreachable(firstLine(r).replace(/^tgtadm: /, ''));
    this.observer?.reachable();
    return r;
  }

  #unreachable(reason: string): Unavailable {
    this.observer?.unreachable(reason);
    return new Unavailable(`tgtd is not reachable through tgtadm -C ${this.controlPort}: ${reason}; start tgtd with control port ${this.controlPort} (controller.tgt.controlPort), the controller restores its targets when tgtd answers again`);
  }

  private async call(args: Arg[]): Promise<TgtResult> {
    const r = await this.exec(['--lld', 'iscsi', ...args]);
    return { ok: r.exitCode === 0, exitCode: r.exitCode, message: r.exitCode === 0 ? '' : firstLine(r).replace(/^tgtadm: /, '') };
  }

  /** Like call, but tolerates the given tgtd error strings (idempotent create/delete). */
  private async must(args: Arg[], what: string, tolerate: string[] = []): Promise<void> {
    const r = await this.call(args);
    if (r.ok || tolerate.includes(r.message)) return;
    throw new Internal(`tgtadm ${what} failed: ${r.message} (exit ${r.exitCode})`);
  }

  async showTargets(): Promise<TgtTarget[]> {
    const r = await this.exec(['--lld', 'iscsi', '--op', 'show', '--mode', 'target']);
    if (r.exitCode !== 0) throw new Internal(`tgtadm show targets failed: ${firstLine(r)} (exit ${r.exitCode})`);
    return parseTgtTargets(r.stdout);
  }

  /** tgtd's system state (the cheapest question tgtd answers; the doctor's reachability check). */
  async showSystem(): Promise<TgtSystem> {
    const r = await this.exec(['--op', 'show', '--mode', 'sys']);
    if (r.exitCode !== 0) throw new Internal(`tgtadm show system failed: ${firstLine(r)} (exit ${r.exitCode})`);
    return parseTgtSystem(r.stdout);
  }

  newTarget(tid: number, iqn: string): Promise<void> {
    return this.must(['--op', 'new', '--mode', 'target', '--tid', String(tid), '-T', iqn], `new target ${iqn}`);
  }

  deleteTarget(tid: number): Promise<void> {
    return this.must(['--op', 'delete', '--force', '--mode', 'target', '--tid', String(tid)], `delete target ${tid}`, [TGT_ERR.noTarget]);
  }

  newLun(tid: number, lun: number, backingFile: string): Promise<void> {
    return this.must(['--op', 'new', '--mode', 'logicalunit', '--tid', String(tid), '--lun', String(lun), '-b', backingFile], `new lun ${tid}/${lun}`);
  }

  deleteLun(tid: number, lun: number): Promise<void> {
    return this.must(['--op', 'delete', '--mode', 'logicalunit', '--tid', String(tid), '--lun', String(lun)], `delete lun ${tid}/${lun}`, [TGT_ERR.noLun]);
  }

  /**
   * Makes tgtd re-open a LUN's backing file and re-read its size, without removing the LUN: one
   * management request `online=0,path=FILE,online=1`. tgtd (1.0.85) applies the three in order in one
   * pass of its single event loop (lu_config), and its path update refuses an online LUN, then closes
   * the file, opens FILE and reads its size; SCSI ids, ACLs and sessions stay. The rdwr backing store's
   * worker threads keep running meanwhile: a command they are executing at that moment fails (EBADF,
   * a MEDIUM ERROR for the initiator). Call it only when no initiator is logged in to the target.
   */
  async reopenLun(tid: number, lun: number, backingFile: string): Promise<void> {
    // tgtd splits --params at commas
    if (backingFile.includes(',')) throw new Internal(`backing file ${backingFile} has a comma, which tgtadm --params cannot carry`);
    return this.must(['--op', 'update', '--mode', 'logicalunit', '--tid', String(tid), '--lun', String(lun), '--params', `online=0,path=${backingFile},online=1`], `re-open the backing file of lun ${tid}/${lun}`);
  }

  /**
   * A target's state: "offline" makes tgtd refuse logins to it (and hold back the commands of sessions
   * already logged in: use it only on a target without sessions), "ready" is the normal state.
   */
  setTargetState(tid: number, state: 'offline' | 'ready'): Promise<void> {
    return this.must(['--op', 'update', '--mode', 'target', '--tid', String(tid), '--name', 'state', '--value', state], `set target ${tid} ${state}`);
  }

  /**
   * Sets a LUN's SCSI device identification. tgtd derives default ids from tid and LUN number; ids
   * derived from the volume instead keep the WWID a node sees stable when a target gets another tid.
   * (`--op new` does not take `--params`, hence a separate update.)
   */
  setLunIds(tid: number, lun: number, scsiId: string, scsiSn: string): Promise<void> {
    return this.must(['--op', 'update', '--mode', 'logicalunit', '--tid', String(tid), '--lun', String(lun), '--params', `scsi_id=${scsiId},scsi_sn=${scsiSn}`], `set ids of lun ${tid}/${lun}`);
  }

  bindInitiator(tid: number, initiatorName: string): Promise<void> {
    return this.must(['--op', 'bind', '--mode', 'target', '--tid', String(tid), '--initiator-name', initiatorName], `bind ${initiatorName} to target ${tid}`, [TGT_ERR.aclExists]);
  }

  unbindInitiator(tid: number, initiatorName: string): Promise<void> {
    return this.must(['--op', 'unbind', '--mode', 'target', '--tid', String(tid), '--initiator-name', initiatorName], `unbind ${initiatorName} from target ${tid}`, [TGT_ERR.noAcl]);
  }

  unbindAddress(tid: number, address: string): Promise<void> {
    return this.must(['--op', 'unbind', '--mode', 'target', '--tid', String(tid), '-I', address], `unbind ${address} from target ${tid}`, [TGT_ERR.noAcl]);
  }

  newAccount(user: string, password: Secret): Promise<void> {
    return this.must(['--op', 'new', '--mode', 'account', '--user', user, '--password', password], `new account ${user}`, [TGT_ERR.accountExists]);
  }

  deleteAccount(user: string): Promise<void> {
    return this.must(['--op', 'delete', '--mode', 'account', '--user', user], `delete account ${user}`, [TGT_ERR.noAccount]);
  }

  bindAccount(tid: number, user: string, outgoing = false): Promise<void> {
    return this.must(['--op', 'bind', '--mode', 'account', '--tid', String(tid), '--user', user, ...(outgoing ? ['--outgoing'] : [])], `bind account ${user} to target ${tid}`, [TGT_ERR.bindingExists]);
  }

  unbindAccount(tid: number, user: string, outgoing = false): Promise<void> {
    return this.must(['--op', 'unbind', '--mode', 'account', '--tid', String(tid), '--user', user, ...(outgoing ? ['--outgoing'] : [])], `unbind account ${user} from target ${tid}`, [TGT_ERR.noBinding, TGT_ERR.noAccount]);
  }
}
