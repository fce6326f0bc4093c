// The open-iscsi 2.1.8 `iscsiadm` CLI as the simulated kernel answers it: the modes and operations a
// CSI driver uses, with the real output formats (stdout for listings and progress, stderr lines
// prefixed `iscsiadm: ` for errors) and the real exit codes (open-iscsi.md §0–§2).
import type { SimKernel, Session } from './kernel.js';
import { BUILTIN_IFACES, nodeIdOf, type NodeEntry, type NodeId } from './iscsi-db.js';
import { sendTargets } from './libiscsi.js';
import type { HangOp } from './faults.js';
import {
  EMPTY, ISCSI_VERSION, formatShow, knownKey, parsePortal, portalText, tpgtListText, TPGT_UNKNOWN,
  type Portal, type Rec,
} from './records.js';

export interface Reply {
  stdout: string;
  stderr: string;
  code: number;
}

/** iscsi_err_msgs[] (usr/iscsi_err.c), used in "initiator reported error (N - text)". */
export const ISCSI_ERR_TEXT: Record<number, string> = {
  1: 'unknown error', 2: 'session not found', 3: 'no available memory', 4: 'encountered connection failure',
  5: 'encountered iSCSI login failure', 6: 'encountered iSCSI database failure', 7: 'invalid parameter',
  8: 'connection timed out', 9: 'internal error', 10: 'encountered iSCSI logout failure', 11: 'iSCSI PDU timed out',
  12: 'iSCSI driver not found. Please make sure it is loaded, and retry the operation', 13: 'daemon access denied',
  14: 'iSCSI driver does not support requested capability.', 15: 'session exists', 16: 'Unknown request',
  17: 'iSNS service not supported', 18: 'could not communicate to iscsid', 19: 'encountered non-retryable iSCSI login failure',
  20: 'could not connect to iscsid', 21: 'no objects found', 22: 'sysfs lookup failure', 23: 'host not found',
  24: 'iSCSI login failed due to authorization failure', 25: 'iSNS query failed', 26: 'iSNS registration failed',
  27: 'operation not supported', 28: 'device or resource in use', 29: 'operation failed but retry may succeed',
  30: 'unknown discovery type', 31: 'child process terminated', 32: 'target likely not connected', 33: 'iscsid request timed out',
};

const ERR = { INVAL: 7, IDBM: 6, SESS_EXISTS: 15, NO_OBJS: 21, SYSFS: 22, PDU_TIMEOUT: 11 } as const;

const SHORT_WITH_ARG = new Set('mtpTIonvPrdULkCHabci'.split(''));
const SHORT_FLAGS = new Set('luRsSDVh'.split(''));
const LONG: Record<string, string> = {
  mode: 'm', portal: 'p', targetname: 'T', interface: 'I', op: 'o', name: 'n', value: 'v', type: 't', print: 'P',
  sid: 'r', debug: 'd', login: 'l', logout: 'u', rescan: 'R', stats: 's', show: 'S', discover: 'D', version: 'V',
  help: 'h', loginall: 'L', logoutall: 'U', killiscsid: 'k', host: 'H', submode: 'C', ip: 'a', packetsize: 'b',
  count: 'c', interval: 'i',
};

type Op = 'new' | 'delete' | 'update' | 'show' | 'nonpersistent' | 'apply' | 'applyall';
const OPS: Op[] = ['new', 'delete', 'update', 'show', 'nonpersistent', 'apply', 'applyall'];

interface Args {
  mode?: string;
  type?: string;
  portal?: Portal;
  target?: string;
  ifaces: string[];
  ops: Set<Op>;
  params: { name: string; value: string }[];
  level?: number;
  sid?: string;
  login: boolean;
  logout: boolean;
  rescan: boolean;
  stats: boolean;
  show: boolean;
  discover: boolean;
  version: boolean;
  help: boolean;
  loginAll?: string;
  logoutAll?: string;
}

class UsageError extends Error {}

function parseArgs(argv: string[]): Args {
  const a: Args = { ifaces: [], ops: new Set(), params: [], login: false, logout: false, rescan: false, stats: false, show: false, discover: false, version: false, help: false };
  let name: string | undefined;
  let value: string | undefined;
  const take = (opt: string, val: string): void => {
    switch (opt) {
      case 'm': a.mode = val; break;
      case 't': a.type = val; break;
      case 'p': a.portal = parsePortal(val); break;
      case 'T': a.target = val; break;
      case 'I': a.ifaces.push(val); break;
      case 'o': {
        if (!OPS.includes(val as Op)) throw new UsageError(`can not recognize operation: '${val}'`);
        a.ops.add(val as Op);
        break;
      }
      case 'n': name = val; break;
      case 'v': value = val; break;
      case 'P': a.level = Number.parseInt(val, 10); break;
      case 'r': a.sid = val; break;
      case 'L': a.loginAll = val; break;
      case 'U': a.logoutAll = val; break;
      default: break; // -d, -k, -H, -C, … accepted and ignored
    }
    if (name !== undefined && value !== undefined) {
      a.params.push({ name, value });
      name = undefined;
      value = undefined;
    }
  };
  const flag = (opt: string): void => {
    switch (opt) {
      case 'l': a.login = true; break;
      case 'u': a.logout = true; break;
      case 'R': a.rescan = true; break;
      case 's': a.stats = true; break;
      case 'S': a.show = true; break;
      case 'D': a.discover = true; break;
      case 'V': a.version = true; break;
      case 'h': a.help = true; break;
    }
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg.startsWith('--')) {
      const [long, inline] = arg.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
      const opt = LONG[long];
      if (!opt) throw new UsageError(`unrecognized option '--${long}'`);
      if (SHORT_WITH_ARG.has(opt)) {
        const val = inline ?? argv[++i];
        if (val === undefined) throw new UsageError(`option '--${long}' requires an argument`);
        take(opt, val);
      } else flag(opt);
    } else if (arg.startsWith('-') && arg.length > 1) {
      for (let j = 1; j < arg.length; j++) {
        const opt = arg[j]!;
        if (SHORT_WITH_ARG.has(opt)) {
          const val = j + 1 < arg.length ? arg.slice(j + 1) : argv[++i];
          if (val === undefined) throw new UsageError(`option requires an argument -- '${opt}'`);
          take(opt, val);
          break;
        } else if (SHORT_FLAGS.has(opt)) flag(opt);
        else throw new UsageError(`unrecognized character '${opt}'`);
      }
    }
  }
  return a;
}

/** Which fault-switch name covers this invocation (for `hang`). */
export function hangOpsOf(argv: string[]): HangOp[] {
  let a: Args;
  try {
    a = parseArgs(argv);
  } catch {
    return ['iscsiadm'];
  }
  const ops: HangOp[] = ['iscsiadm'];
  if (a.mode === 'node') ops.push(a.login || a.loginAll ? 'login' : a.logout || a.logoutAll ? 'logout' : a.rescan ? 'rescan' : 'node');
  else if (a.mode === 'session') ops.push(a.logout ? 'logout' : a.rescan ? 'rescan' : 'session');
  else if (a.mode === 'discovery' || a.mode === 'discoverydb') ops.push('discovery');
  else if (a.mode === 'iface') ops.push('iface');
  return ops;
}

class Out {
  readonly out: string[] = [];
  readonly err: string[] = [];
  info(line: string): void { this.out.push(line); }
  error(msg: string): void { this.err.push(`iscsiadm: ${msg}`); }
  raw(line: string): void { this.err.push(line); }
  reply(code: number): Reply {
    return { stdout: this.out.map((l) => `${l}\n`).join(''), stderr: this.err.map((l) => `${l}\n`).join(''), code };
  }
}

const v = (x: string | undefined): string => (x ? x : EMPTY);

function loginPortalText(iface: string, target: string, address: string, port: number): string {
  return `[iface: ${iface}, target: ${target}, portal: ${address},${port}]`;
}

function sessionText(s: Session): string {
  return `[sid: ${s.sid}, target: ${s.target}, portal: ${s.persistentAddress},${s.persistentPort}]`;
}

/** Sessions in 2.1.x order: scandir(/sys/class/iscsi_session, alphasort) → lexical "sessionN". */
function sortedSessions(kernel: SimKernel): Session[] {
  return [...kernel.sessions.values()].sort((x, y) => (`session${x.sid}` < `session${y.sid}` ? -1 : 1));
}

export async function iscsiadm(kernel: SimKernel, argv: string[]): Promise<Reply> {
  const o = new Out();
  let a: Args;
  try {
    a = parseArgs(argv);
  } catch (e) {
    o.error((e as Error).message);
    return o.reply(ERR.INVAL);
  }
  if (a.version) {
    o.info(`iscsiadm version ${ISCSI_VERSION}`);
    return o.reply(0);
  }
  if (a.help || !a.mode) {
    o.raw('Usage: iscsiadm [OPTION]');
    o.raw("Try `iscsiadm --help' for more information.");
    return o.reply(a.help ? 0 : ERR.INVAL);
  }
  await kernel.applySessionFaults();
  switch (a.mode) {
    case 'iface': return o.reply(await ifaceMode(kernel, a, o));
    case 'discovery': return o.reply(await discoveryMode(kernel, a, o, false));
    case 'discoverydb': return o.reply(await discoveryMode(kernel, a, o, true));
    case 'node': return o.reply(await nodeMode(kernel, a, o));
    case 'session': return o.reply(await sessionMode(kernel, a, o));
    default:
      o.raw("Try `iscsiadm --help' for more information.");
      return o.reply(ERR.INVAL);
  }
}

// ------------------------------------------------------------------------------------------ iface

function sessionsOnIface(kernel: SimKernel, iface: string): Session[] {
  return [...kernel.sessions.values()].filter((s) => s.iface === iface);
}

async function ifaceMode(kernel: SimKernel, a: Args, o: Out): Promise<number> {
  const db = kernel.db;
  const name = a.ifaces[0];
  if (a.ifaces.length > 1) o.error(`iface mode only accepts one interface. Using the first one ${name}.`);
  const op = a.ops.has('new') ? 'new' : a.ops.has('delete') ? 'delete' : a.ops.has('update') ? 'update' : 'show';
  if (op === 'show') {
    if (!name || (a.level ?? -1) > 0) {
      const ifaces = db.listIfaces();
      if ((a.level ?? -1) > 0) {
        const nodes = db.listNodes();
        for (const { name: n } of ifaces) {
          if (name && n !== name) continue;
          o.info(`Iface: ${n}`);
          let last = '';
          for (const e of nodes.filter((x) => nodeIdOf(x.rec).iface === n)) {
            const id = nodeIdOf(e.rec);
            if (id.target !== last) o.info(`\tTarget: ${id.target}`);
            last = id.target;
            o.info(`\t\tPortal: ${portalText(id.address, id.port)},${tpgtListText(id.tpgt)}`);
          }
        }
        return 0;
      }
      for (const { name: n, rec } of ifaces) {
        o.info(`${n} ${v(rec['iface.transport_name'])},${v(rec['iface.hwaddress'])},${v(rec['iface.ipaddress'])},${v(rec['iface.net_ifacename'])},${v(rec['iface.initiatorname'])}`);
      }
      return 0;
    }
    const rec = db.readIface(name);
    if (!rec) {
      o.raw(`iSCSI ERROR: Failed to open ${db.ifaceFile(name)} using read mode: 2 No such file or directory # idbm.c:_idbm_recs_read():834`);
      return ERR.IDBM;
    }
    o.out.push(...formatShow('iface', rec).trimEnd().split('\n'));
    return 0;
  }
  if (!name) {
    o.error(op === 'new' ? 'Could not add interface. No interface passed in.' : op === 'delete' ? 'Could not delete interface. No interface passed in.' : 'Update requires name, value, and iface.');
    return ERR.INVAL;
  }
  if (op === 'new') {
    if (sessionsOnIface(kernel, name).length) {
      o.error(`Could not create new interface ${name}.`);
      return ERR.SESS_EXISTS;
    }
    const rec: Rec = { 'iface.iscsi_ifacename': name, 'iface.transport_name': BUILTIN_IFACES[name]?.['iface.transport_name'] ?? 'tcp' };
    for (const p of a.params) rec[p.name] = p.value;
    db.writeIface(name, rec);
    if (a.params.length) o.info(`${name} updated.`);
    o.info(`New interface ${name} added`);
    return 0;
  }
  const existing = db.readIface(name);
  if (op === 'delete') {
    if (!existing || name in BUILTIN_IFACES) {
      o.error(`Could not delete iface ${name}: ${ISCSI_ERR_TEXT[ERR.INVAL]}`);
      return ERR.INVAL;
    }
    let rc = 0;
    for (const e of db.listNodes().filter((x) => nodeIdOf(x.rec).iface === name)) {
      if (kernel.findSession(nodeIdOf(e.rec))) rc = ERR.SESS_EXISTS;
      else db.deleteNode(e);
    }
    if (rc) {
      o.error(`Could not delete iface ${name}: ${ISCSI_ERR_TEXT[rc]}`);
      return rc;
    }
    db.deleteIface(name);
    o.info(`${name} unbound and deleted.`);
    return 0;
  }
  // update
  if (!a.params.length) {
    o.error('Update requires name, value, and iface.');
    return ERR.INVAL;
  }
  if (!existing) {
    o.error(`Could not update iface ${name}: ${ISCSI_ERR_TEXT[ERR.INVAL]}`);
    return ERR.INVAL;
  }
  if (sessionsOnIface(kernel, name).length) {
    o.error('Updating iface while iscsi sessions are using it. You must logout the running sessions then log back in for the new settings to take affect.');
  }
  for (const p of a.params) {
    if (p.name === 'iface.iscsi_ifacename') {
      o.error('Can not update iface.iscsi_ifacename. Delete it, and then create a new one.');
      return ERR.INVAL;
    }
    if (!knownKey('iface', p.name)) {
      o.error(`Could not update iface ${name}: ${ISCSI_ERR_TEXT[ERR.INVAL]}`);
      return ERR.INVAL;
    }
  }
  const rec = { ...existing };
  for (const p of a.params) rec[p.name] = p.value;
  db.writeIface(name, rec);
  // records bound to the iface carry its settings too
  for (const e of db.listNodes().filter((x) => nodeIdOf(x.rec).iface === name)) {
    const nrec = { ...e.rec };
    for (const p of a.params) nrec[p.name] = p.value;
    db.writeNode(nrec);
  }
  o.info(`${name} updated.`);
  return 0;
}

// -------------------------------------------------------------------------------------- discovery

async function discoveryMode(kernel: SimKernel, a: Args, o: Out, dbMode: boolean): Promise<number> {
  const db = kernel.db;
  const type = a.type === 'st' ? 'sendtargets' : a.type;
  if (type !== undefined && type !== 'sendtargets') {
    o.error(type === 'isns' || type === 'fw' || type === 'slp' ? 'operation not supported.' : 'Invalid discovery type.');
    return ERR.INVAL;
  }
  if (!type) {
    if (!a.portal) {
      if (a.ops.size && !a.ops.has('show')) {
        o.error('Invalid operation. Operation not supported.');
        return ERR.INVAL;
      }
      const recs = db.listDiscovery();
      for (const r of recs) o.info(`${r['discovery.sendtargets.address']}:${r['discovery.sendtargets.port']} via sendtargets`);
      return recs.length ? 0 : ERR.NO_OBJS;
    }
    const drec = db.readDiscovery(a.portal.address, a.portal.port);
    if (!drec) {
      o.error(`Discovery record [${a.portal.address},${a.portal.port}] not found${dbMode ? '.' : '!'}`);
      return ERR.INVAL;
    }
    if (a.discover || a.login) return doSendTargets(kernel, drec, a, o);
    return discoveryDbOp(kernel, drec, a, o);
  }
  if (!a.portal) {
    o.error('Please specify portal as <ipaddr>[:<ipport>]');
    return ERR.INVAL;
  }
  const { address, port } = a.portal;
  const fresh = (): Rec => ({ ...db.discoveryDefaults(), 'discovery.sendtargets.address': address, 'discovery.sendtargets.port': String(port) });
  if (!dbMode) {
    // legacy discovery mode: default settings, record (re)written, then discovery
    const drec = fresh();
    db.writeDiscovery(drec);
    return doSendTargets(kernel, drec, a, o);
  }
  if (a.ops.has('new') && !a.discover) {
    db.writeDiscovery(fresh());
    o.info(`New discovery record for [${address},${port}] added.`);
    return 0;
  }
  let drec = db.readDiscovery(address, port);
  if (!drec) {
    if (!a.discover) {
      o.error(`Discovery record [${address},${port}] not found.`);
      return ERR.IDBM;
    }
    drec = fresh();
    if (!a.ops.has('nonpersistent')) db.writeDiscovery(drec);
  } else if (!a.discover) {
    return discoveryDbOp(kernel, drec, a, o);
  }
  return doSendTargets(kernel, drec, a, o);
}

function discoveryDbOp(kernel: SimKernel, drec: Rec, a: Args, o: Out): number {
  const db = kernel.db;
  const address = drec['discovery.sendtargets.address']!;
  const port = Number(drec['discovery.sendtargets.port']);
  if (!a.ops.size || a.ops.has('show')) {
    o.out.push(...formatShow('discovery', drec, a.show).trimEnd().split('\n'));
    return 0;
  }
  if (a.ops.has('delete')) {
    for (const id of db.discoveredNodes(address, port)) {
      if (kernel.findSession(id)) continue;
      const entry = db.listNodes().find((e) => sameNode(nodeIdOf(e.rec), id));
      if (entry) db.deleteNode(entry);
    }
    db.deleteDiscovery(address, port);
    return 0;
  }
  if (a.ops.has('update')) {
    if (!a.params.length) {
      o.error('Update requires name and value.');
      return ERR.INVAL;
    }
    const rec = { ...drec };
    for (const p of a.params) {
      if (!knownKey('discovery', p.name)) {
        o.error(`Could not set param ${p.name} to ${p.value}. Invalid param name.`);
        return ERR.INVAL;
      }
      rec[p.name] = p.value;
    }
    db.writeDiscovery(rec);
    return 0;
  }
  o.error('Operation is not supported.');
  return ERR.INVAL;
}

function sameNode(x: NodeId, y: NodeId): boolean {
  return x.target === y.target && x.address === y.address && x.port === y.port && x.tpgt === y.tpgt && x.iface === y.iface;
}

async function doSendTargets(kernel: SimKernel, drec: Rec, a: Args, o: Out): Promise<number> {
  const db = kernel.db;
  const address = drec['discovery.sendtargets.address']!;
  const port = Number(drec['discovery.sendtargets.port']);
  const ifaceNames: string[] = [];
  const ifaceRecs: Rec[] = [];
  for (const name of a.ifaces.length ? a.ifaces : ['default']) {
    const rec = db.readIface(name);
    if (!rec) {
      o.error(`Could not read iface info for ${name}. Make sure a iface config with the file name and iface.iscsi_ifacename ${name} is in ${kernel.paths.ifaces}.`);
      continue;
    }
    ifaceNames.push(name);
    ifaceRecs.push(rec);
  }
  if (!ifaceRecs.length) {
    o.error('No portals found');
    return ERR.NO_OBJS;
  }
  const initiator = ifaceRecs[0]!['iface.initiatorname'] || kernel.initiatorName();
  const down = (kernel.faults().portalDown ?? []).includes(`${address}:${port}`);
  const result = down
    ? ({ ok: false, failure: 'connect', message: 'fault: portal down' } as const)
    : await sendTargets(address, port, initiator, {
      username: drec['discovery.sendtargets.auth.username'] ?? '', password: drec['discovery.sendtargets.auth.password'] ?? '',
      usernameIn: drec['discovery.sendtargets.auth.username_in'] ?? '', passwordIn: drec['discovery.sendtargets.auth.password_in'] ?? '',
    });
  if (!result.ok) {
    let rc: number;
    if (result.failure === 'connect') {
      const reopenMax = Number(drec['discovery.sendtargets.reopen_max'] ?? 5);
      for (let i = 0; i <= reopenMax; i++) o.error(`cannot make connection to ${address}: Connection refused`);
      o.error(`connection login retries (reopen_max) ${reopenMax} exceeded`);
      rc = ERR.PDU_TIMEOUT;
    } else if (result.failure === 'auth') {
      o.error(`discovery login to ${address} rejected: initiator failed authorization`);
      rc = 24;
    } else {
      o.error(`discovery login to ${address} rejected: initiator error (02/03), non-retryable, giving up`);
      rc = 19;
    }
    o.error(`Could not perform SendTargets discovery: ${ISCSI_ERR_TEXT[rc]}`);
    return rc;
  }
  if (!result.value.length) {
    o.error('No portals found');
    return ERR.NO_OBJS;
  }
  const found: NodeId[] = [];
  const existing = db.listNodes();
  const update = !a.ops.size || a.ops.has('update') || a.ops.has('new');
  for (const t of result.value) {
    for (let i = 0; i < ifaceNames.length; i++) {
      const id: NodeId = { target: t.iqn, address: t.address, port: t.port, tpgt: t.tpgt, iface: ifaceNames[i]! };
      found.push(id);
      const old = existing.find((e) => sameNode(nodeIdOf(e.rec), id));
      if (!old || update) {
        const rec: Rec = {
          ...db.nodeDefaults(), ...ifaceRecs[i]!, 'node.name': t.iqn, 'node.tpgt': String(t.tpgt),
          'node.discovery_address': address, 'node.discovery_port': String(port), 'node.discovery_type': 'send_targets',
          'node.conn[0].address': t.address, 'node.conn[0].port': String(t.port),
        };
        if (!a.ops.has('nonpersistent')) {
          db.writeNode(rec);
          db.linkDiscovery(address, port, id);
        }
      }
      o.info(`${portalText(t.address, t.port)},${t.tpgt} ${t.iqn}`);
    }
  }
  if (!a.ops.size || a.ops.has('delete')) {
    // records this discovery source made earlier that the target no longer reports
    for (const id of db.discoveredNodes(address, port)) {
      if (!ifaceNames.includes(id.iface) || found.some((f) => sameNode(f, id)) || kernel.findSession(id)) continue;
      const entry = db.listNodes().find((e) => sameNode(nodeIdOf(e.rec), id));
      if (entry) db.deleteNode(entry);
    }
  }
  if (a.login) return loginRecords(kernel, db.listNodes().filter((e) => found.some((f) => sameNode(nodeIdOf(e.rec), f))), o);
  return 0;
}

// ------------------------------------------------------------------------------------------- node

function matchRecords(kernel: SimKernel, a: Args): NodeEntry[] {
  const iface = a.ifaces[0];
  return kernel.db.listNodes().filter((e) => {
    const id = nodeIdOf(e.rec);
    if (a.target !== undefined && id.target !== a.target) return false;
    if (a.portal) {
      if (id.address !== a.portal.address || id.port !== a.portal.port) return false;
      if (a.portal.tpgt !== TPGT_UNKNOWN && id.tpgt !== a.portal.tpgt) return false;
    }
    if (iface !== undefined && id.iface !== iface) return false;
    return true;
  });
}

function matchSessions(kernel: SimKernel, a: Args): Session[] {
  const iface = a.ifaces[0];
  return sortedSessions(kernel).filter((s) => {
    if (a.target !== undefined && s.target !== a.target) return false;
    if (a.portal && (s.persistentAddress !== a.portal.address || s.persistentPort !== a.portal.port)) return false;
    if (iface !== undefined && s.iface !== iface) return false;
    return true;
  });
}

async function nodeMode(kernel: SimKernel, a: Args, o: Out): Promise<number> {
  const db = kernel.db;
  if (a.ifaces.length > 1) o.error(`NODE mode only accepts one interface. Using the first one driver tcp hwaddress ${EMPTY} ipaddress ${EMPTY}.`);
  if (a.loginAll !== undefined) {
    const wanted = a.loginAll;
    const recs = db.listNodes().filter((e) => {
      const startup = e.rec['node.startup'] ?? 'manual';
      return wanted === 'all' ? startup !== 'onboot' : startup === wanted;
    });
    if (!recs.length) {
      o.error('No records found');
      return ERR.NO_OBJS;
    }
    return loginRecords(kernel, recs, o);
  }
  if (a.logoutAll !== undefined) {
    const sessions = sortedSessions(kernel);
    if (!sessions.length) {
      o.error('No matching sessions found');
      return ERR.NO_OBJS;
    }
    return logoutSessions(kernel, sessions, o);
  }
  const op: Op | undefined = a.ops.has('new') ? 'new' : a.ops.has('delete') ? 'delete' : a.ops.has('update') ? 'update' : a.ops.has('show') ? 'show' : undefined;
  if (op === 'new') return nodeNew(kernel, a, o);
  if (a.rescan || a.stats) return rescanOrStats(kernel, a, matchSessions(kernel, a), o);
  if (a.login && a.logout) {
    o.error('Invalid parameters. Both login and logout passed in');
    return ERR.INVAL;
  }
  if ((a.login || a.logout) && op && op !== 'show') {
    o.error('Invalid parameters. Login/logout and op passed in');
    return ERR.INVAL;
  }
  if (!a.login && !a.logout && !op && a.target === undefined && !a.portal && !a.ifaces.length) return printNodes(kernel, a, o);
  if (a.login) {
    const recs = matchRecords(kernel, a);
    if (!recs.length) {
      o.error('No records found');
      return ERR.NO_OBJS;
    }
    return loginRecords(kernel, recs, o);
  }
  if (a.logout) {
    const sessions = matchSessions(kernel, a);
    if (!sessions.length || Date.now() < (kernel.faults().iscsidResyncUntil ?? 0)) {
      o.error('No matching sessions found');
      return ERR.NO_OBJS;
    }
    return logoutSessions(kernel, sessions, o);
  }
  const recs = matchRecords(kernel, a);
  if (!op || op === 'show') {
    if (!recs.length) {
      o.error('No records found');
      return ERR.NO_OBJS;
    }
    for (const e of recs) o.out.push(...formatShow('node', e.rec, a.show).trimEnd().split('\n'));
    return 0;
  }
  if (op === 'update') {
    if (!a.params.length) {
      o.error('update requires name and value');
      return ERR.INVAL;
    }
    for (const p of a.params) {
      if (p.name.startsWith('iface.') && p.name !== 'iface.transport_name') {
        o.error(`Cannot modify ${p.name}. Use iface mode to update this value.`);
        return ERR.INVAL;
      }
      if (!knownKey('node', p.name === 'node.transport_name' ? 'iface.transport_name' : p.name)) {
        o.error(`Cannot modify ${p.name}. Invalid param name.`);
        return ERR.INVAL;
      }
    }
    if (!recs.length) {
      o.error('No records found');
      return ERR.NO_OBJS;
    }
    for (const e of recs) {
      const rec = { ...e.rec };
      for (const p of a.params) rec[p.name === 'node.transport_name' ? 'iface.transport_name' : p.name] = p.value;
      db.writeNode(rec);
    }
    return 0;
  }
  // delete
  if (!recs.length) {
    o.error('No records found');
    return ERR.NO_OBJS;
  }
  let rc = 0;
  for (const e of recs) {
    const id = nodeIdOf(e.rec);
    if (kernel.findSession(id)) {
      o.error(`This command will remove the record ${loginPortalText(id.iface, id.target, id.address, id.port)}, but a session is using it. Logout session then rerun command to remove record.`);
      rc = ERR.SESS_EXISTS;
      continue;
    }
    db.deleteNode(e);
  }
  if (rc) o.error(`Could not execute operation on all records: ${ISCSI_ERR_TEXT[rc]}`);
  return rc;
}

function nodeNew(kernel: SimKernel, a: Args, o: Out): number {
  const db = kernel.db;
  if (a.target === undefined || !a.portal) {
    o.error('Invalid parameters. Must include target name and portal for a new record.');
    return ERR.INVAL;
  }
  const ifaceName = a.ifaces[0] ?? 'default';
  const iface = db.readIface(ifaceName);
  if (!iface) {
    o.error(`Could not read iface ${ifaceName} (${ERR.IDBM}).`);
    o.error(`Error while adding record: ${ISCSI_ERR_TEXT[ERR.IDBM]}`);
    return ERR.IDBM;
  }
  const { address, port, tpgt } = a.portal;
  const rec: Rec = {
    ...db.nodeDefaults(), ...iface, 'node.name': a.target, 'node.tpgt': String(tpgt), 'node.discovery_type': 'static',
    'node.conn[0].address': address, 'node.conn[0].port': String(port),
  };
  db.writeNode(rec);
  o.info(`New iSCSI node [${iface['iface.transport_name'] || 'tcp'}:[hw=${iface['iface.hwaddress'] ?? ''},ip=${iface['iface.ipaddress'] ?? ''},net_if=${iface['iface.net_ifacename'] ?? ''},iscsi_if=${ifaceName}] ${address},${port},${tpgt} ${a.target}] added`);
  return 0;
}

function printNodes(kernel: SimKernel, a: Args, o: Out): number {
  const level = a.level ?? 0;
  if (level !== 0 && level !== 1 && a.level !== undefined && a.level !== -1) {
    o.error(`Invalid info level ${level}. Try 0 or 1.`);
    return ERR.INVAL;
  }
  const recs = kernel.db.listNodes();
  if (!recs.length) {
    o.error('No records found');
    return ERR.NO_OBJS;
  }
  let lastTarget = '';
  for (const e of recs) {
    const id = nodeIdOf(e.rec);
    if (level === 1) {
      if (id.target !== lastTarget) o.info(`Target: ${id.target}`);
      lastTarget = id.target;
      o.info(`\tPortal: ${portalText(id.address, id.port)},${tpgtListText(id.tpgt)}`);
      o.info(`\t\tIface Name: ${id.iface}`);
    } else {
      o.info(`${portalText(id.address, id.port)},${tpgtListText(id.tpgt)} ${id.target}`);
    }
  }
  return 0;
}

async function loginRecords(kernel: SimKernel, recs: NodeEntry[], o: Out): Promise<number> {
  let rc = 0;
  const queued: NodeEntry[] = [];
  for (const e of recs) {
    const id = nodeIdOf(e.rec);
    if (kernel.findSession(id)) {
      o.error(`${id.iface}: 1 session requested, but 1 already present.`);
      rc ||= ERR.SESS_EXISTS;
      continue;
    }
    o.info(`Logging in to ${loginPortalText(id.iface, id.target, id.address, id.port)}`);
    queued.push(e);
  }
  for (const e of queued) {
    const id = nodeIdOf(e.rec);
    const portal = loginPortalText(id.iface, id.target, id.address, id.port);
    const r = await kernel.login(e.rec);
    if (r.ok) {
      o.info(`Login to ${portal} successful.`);
    } else {
      o.error(`Could not login to ${portal}.`);
      o.error(`initiator reported error (${r.code} - ${ISCSI_ERR_TEXT[r.code]})`);
      rc ||= r.code;
    }
  }
  if (rc) o.error('Could not log into all portals');
  return rc;
}

async function logoutSessions(kernel: SimKernel, sessions: Session[], o: Out): Promise<number> {
  for (const s of sessions) o.info(`Logging out of session ${sessionText(s)}`);
  for (const s of sessions) {
    await kernel.logout(s);
    o.info(`Logout of ${sessionText(s)} successful.`);
  }
  return 0;
}

/** Rescan each device (size changes), then scan for new LUNs only when the record says scan=auto. */
async function rescanSession(kernel: SimKernel, s: Session, o: Out): Promise<void> {
  o.info(`Rescanning session ${sessionText(s)}`);
  for (const d of [...s.devices.values()]) await kernel.rescanDevice(d);
  const rec = kernel.db.listNodes().find((e) => sameNode(nodeIdOf(e.rec), s.node));
  if ((rec?.rec['node.session.scan'] ?? 'auto') !== 'manual') await kernel.scan(s, { channel: '-', id: '-', lun: '-' });
}

// ---------------------------------------------------------------------------------------- session

async function sessionMode(kernel: SimKernel, a: Args, o: Out): Promise<number> {
  let sessions = sortedSessions(kernel);
  if (a.sid !== undefined) {
    const m = /^(\d+)$/.exec(a.sid) ?? /session(\d+)/.exec(a.sid);
    if (!m) {
      o.error(`invalid sid '${a.sid}'`);
      return ERR.INVAL;
    }
    const sid = Number(m[1]);
    sessions = sessions.filter((s) => s.sid === sid);
    if (!sessions.length && !a.logout && !a.rescan) {
      o.error('could not read session targetname: 5');
      o.error(`Could not get session info for sid ${sid}`);
      return ERR.SYSFS;
    }
  }
  if (a.logout) {
    if (!sessions.length) {
      o.error('No matching sessions found');
      return ERR.NO_OBJS;
    }
    return logoutSessions(kernel, sessions, o);
  }
  if (a.rescan || a.stats) return rescanOrStats(kernel, a, sessions, o);
  const level = a.level ?? -1;
  if (level < -1 || level > 3) {
    o.error(`Invalid info level ${level}. Try 0 - 3.`);
    return ERR.INVAL;
  }
  if (!sessions.length) {
    o.error('No active sessions.');
    return ERR.NO_OBJS;
  }
  if (level <= 0) {
    for (const s of sessions) {
      o.info(`${s.transport}: [${s.sid}] ${portalText(s.persistentAddress, s.persistentPort)},${s.tpgt} ${s.target} (non-flash)`);
    }
    return 0;
  }
  printSessionTree(sessions, level, o);
  return 0;
}

function printSessionTree(sessions: Session[], level: number, o: Out): void {
  if (level >= 3) {
    o.info('iSCSI Transport Class version 2.0-870');
    o.info(`version ${ISCSI_VERSION}`);
  }
  let prev: Session | undefined;
  for (const s of sessions) {
    const failed = s.state === 'FAILED';
    if (!prev || prev.target !== s.target) o.info(`Target: ${s.target} (non-flash)`);
    if (prev && prev.target === s.target && prev.persistentAddress === s.persistentAddress && prev.persistentPort === s.persistentPort) {
      o.info('');
    } else {
      o.info(`\tCurrent Portal: ${portalText(s.address, s.port)},${s.tpgt}`);
      o.info(`\tPersistent Portal: ${portalText(s.persistentAddress, s.persistentPort)},${s.tpgt}`);
    }
    prev = s;
    const t = (line: string): void => o.info(`\t\t${line}`);
    t('**********');
    t('Interface:');
    t('**********');
    t(`Iface Name: ${s.iface}`);
    t(`Iface Transport: ${s.transport}`);
    t(`Iface Initiatorname: ${s.initiatorName}`);
    t(`Iface IPaddress: ${s.address.includes(':') ? '[::1]' : '127.0.0.1'}`);
    t('Iface HWaddress: default');
    t('Iface Netdev: default');
    t(`SID: ${s.sid}`);
    t(`iSCSI Connection State: ${failed ? 'TRANSPORT WAIT' : 'LOGGED IN'}`);
    t(`iSCSI Session State: ${s.state}`);
    t(`Internal iscsid Session State: ${failed ? 'REOPEN' : 'NO CHANGE'}`);
    if (level >= 2) {
      t('*********');
      t('Timeouts:');
      t('*********');
      t(`Recovery Timeout: ${s.recoveryTmo}`);
      t(`Target Reset Timeout: ${s.tgtResetTmo}`);
      t(`LUN Reset Timeout: ${s.luResetTmo}`);
      t(`Abort Timeout: ${s.abortTmo}`);
      t('*****');
      t('CHAP:');
      t('*****');
      t(`username: ${v(s.chapUsername)}`);
      t('password: ********');
      t(`username_in: ${v(s.chapUsernameIn)}`);
      t('password_in: ********');
      t('************************');
      t('Negotiated iSCSI params:');
      t('************************');
      // what open-iscsi's defaults negotiate with tgtd's defaults
      t('HeaderDigest: None');
      t('DataDigest: None');
      t('MaxRecvDataSegmentLength: 262144');
      t('MaxXmitDataSegmentLength: 8192');
      t('FirstBurstLength: 65536');
      t('MaxBurstLength: 262144');
      t('ImmediateData: Yes');
      t('InitialR2T: Yes');
      t('MaxOutstandingR2T: 1');
    }
    if (level >= 3) {
      t('************************');
      t('Attached SCSI devices:');
      t('************************');
      t(`Host Number: ${s.host}\tState: running`);
      for (const d of [...s.devices.values()].sort((x, y) => x.lun - y.lun)) {
        t(`scsi${s.host} Channel 00 Id 0 Lun: ${d.lun}`);
        if (d.disk) o.info(`\t\t\tAttached scsi disk ${d.disk.name}\t\tState: ${d.state}`);
      }
    }
  }
}

/** `--rescan` (every LUN of the matched sessions) and `--stats` (not simulated), as node and session mode share them. */
async function rescanOrStats(kernel: SimKernel, a: Args, sessions: Session[], o: Out): Promise<number> {
  if (!a.rescan) {
    o.error('operation is not supported.');
    return ERR.INVAL;
  }
  if (!sessions.length) {
    o.error('No session found.');
    return ERR.NO_OBJS;
  }
  for (const s of sessions) await rescanSession(kernel, s, o);
  return 0;
}
