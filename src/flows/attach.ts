// The in-tree attach algorithm (context.md, steps 1–7), as a sequence of one-line steps over the host:
// portals resolved → iface lookup / clone → per-IQN lock → portal→host map → per portal: scan one LUN if
// logged in, else discovery + CHAP + manual scan + login + manual startup → wait for the LUN's device
// as the kernel reports it (outside the lock) → multipath holder. Dead portals are tolerated while one path comes up.
import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { CsiError, DeadlineExceeded, FailedPrecondition, Internal, toCsiError } from '../errors.js';
import { orThrow, sessionChapSettings, type IscsiOutcome, type NodeRef } from '../node-host/iscsiadm.js';
import type { ChapCredentials } from '../contract/chap.js';
import type { WaitOptions } from '../node-host/devices.js';
import type { MultipathHolder } from '../node-host/sysfs.js';
import type { Logger } from '../log.js';
import { clonedIfaceName, formatPortal, parsePortal, type Portal } from '../common/validate.js';
import { metricsOf, type NodeHost } from './ports.js';
import { checkMapIdentity, checkPathIdentity } from './identity.js';
import type { StepTimes } from '../common/step-times.js';
import type { TargetSpec } from '../contract/volume-context.js';

/** What an attach will use, known before it changes anything on the host. */
export interface AttachPlan {
  /** the target with every portal given by host name resolved to an address */
  target: TargetSpec;
  /** the iface the node records and sessions are bound to */
  iface: string;
  /** the iface made for this volume (its own initiator name); deleted on detach */
  clonedIface?: string;
}

export interface AttachedPath {
  portal: string;      // canonical "addr:port"
  /** the path's stable name: its by-path link when udev has made it, else the kernel node (/dev/sdX) */
  stablePath: string;
  device: string;      // kernel name, e.g. "sdb"
}

export interface Attached {
  /** the device to format/mount or hand to publish: /dev/dm-N for multipath, else the first path's stable name */
  devicePath: string;
  paths: AttachedPath[];
  multipath?: { dm: string; name: string; wwid: string };
  /** the LUN's kernel WWID (`device/wwid`), checked on every path; absent when no path has one */
  wwid?: string;
  deadPortals: { portal: string; reason: string }[];
  /**
   * The name to record for the staged device, looked up when asked (at the end of a stage): the first
   * path's by-path link when udev has made it by then and it still points at that device, else
   * `devicePath`. A dm map keeps its /dev/dm-N.
   */
  stableDevicePath(): Promise<string>;
}

/** What the attach found per portal, under the target lock. */
interface PortalOutcome {
  portal: Portal;
  key: string;
  ok: boolean;
  /** the SCSI host of the portal's session, where the LUN was scanned */
  scsiHost?: number;
  error?: CsiError;
}

/** The wait's outcome before multipath: the paths that came up and why the others did not. */
interface FoundPaths {
  paths: AttachedPath[];
  deadPortals: { portal: string; reason: string }[];
}

/**
 * Attaches the target's LUN on every portal that answers. `beforeHostChanges` gets the plan once the
 * portals are resolved and the iface named, before the first iface clone or login: the caller records
 * the attach there, so the target counts as in use and a crash leaves enough to clean up. Each step's
 * time is added to `steps`.
 */
export async function attach(host: NodeHost, target: TargetSpec, volumeId: string, log: Logger, beforeHostChanges: (plan: AttachPlan) => Promise<void>, steps: StepTimes): Promise<Attached> {
  const plan = await steps.time('plan', () => planAttach(host, target, volumeId));
  await steps.time('record', () => beforeHostChanges(plan));
  const { iface, transport } = await steps.time('iface', () => prepareIface(host, plan.target, plan.clonedIface, log));
  const outcomes = await connectPortals(host, plan.target, iface, log, steps);
  const found = await steps.time('deviceWait', () => waitForPaths(host, plan.target, outcomes, transport, log));
  // before anything can write to them: every path is the volume's LUN, then the map over them
  const wwid = await steps.time('identity', () => checkPathIdentity(host, plan.target, found.paths));
  const multipath = await steps.time('multipath', () => findMultipath(host, found.paths, log));
  if (multipath) checkMapIdentity(plan.target, multipath, wwid);
  const devicePath = multipath ? host.devices.devicePath(multipath.dm) : found.paths[0]!.stablePath;
  const attached = { devicePath, ...found, ...(multipath ? { multipath } : {}), ...(wwid ? { wwid } : {}) };
  return { ...attached, stableDevicePath: () => steps.time('stableName', () => stableDevicePath(host, plan.target, attached, transport)) };
}

/** Host names become addresses (node records, sysfs and by-path use those); a volume's own initiator name gets its own iface. */
async function planAttach(host: NodeHost, target: TargetSpec, volumeId: string): Promise<AttachPlan> {
  const resolved = { ...target, portals: await host.resolver.resolvePortals(target.portals, host.cfg.timeouts.portalResolveMs) };
  const cloned = resolved.initiatorName ? clonedIfaceName(resolved.iface, volumeId) : undefined;
  return { target: resolved, iface: cloned ?? resolved.iface, ...(cloned ? { clonedIface: cloned } : {}) };
}

const BUILTIN_TCP_IFACE = 'default';

/** Steps 1–2: the iface to use, cloned with the volume's initiator name when one is given. */
async function prepareIface(host: NodeHost, target: TargetSpec, clonedName: string | undefined, log: Logger): Promise<{ iface: string; transport: string }> {
  // open-iscsi's built-in `default` iface is always tcp: no need to ask unless it is to be cloned
  if (target.iface === BUILTIN_TCP_IFACE && !clonedName) return { iface: target.iface, transport: 'tcp' };
  const base = orThrow(await host.iscsi.showIface(target.iface)).value;
  if (!base) throw new FailedPrecondition(`iSCSI interface ${target.iface} does not exist on this node (iscsiadm -m iface -I ${target.iface})`);
  if (!target.initiatorName || !clonedName) return { iface: target.iface, transport: base.transport };
  orThrow(await host.iscsi.cloneIface(base, clonedName, target.initiatorName));
  log.debug({ iface: clonedName, base: target.iface }, 'cloned iface with the volume initiator name');
  return { iface: clonedName, transport: base.transport };
}

/**
 * Step 3–5 under the target lock: make every portal's session exist and ask for this one LUN. Returns
 * per portal whether a session is there. The lock is held for login/scan only, never for a device wait.
 */
async function connectPortals(host: NodeHost, target: TargetSpec, iface: string, log: Logger, steps: StepTimes): Promise<PortalOutcome[]> {
  const asked = performance.now();
  return host.targetLocks.withLock(target.iqn, () => steps.time('connect', async () => {
    steps.add('lockWait', performance.now() - asked);
    const hosts = await host.sysfs.portalHostMap(target.iqn, iface);
    return Promise.all(target.portals.map(async (portal): Promise<PortalOutcome> => {
      const key = formatPortal(portal);
      try {
        let hostNumber = hosts.get(key);
        if (hostNumber === undefined) {
          await loginPortal(host, target, portal, iface, log);
          hostNumber = (await host.sysfs.portalHostMap(target.iqn, iface)).get(key);
          if (hostNumber === undefined) throw new Internal(`logged in to ${key} but the session does not appear in sysfs`);
        }
        await host.sysfs.scanLun(hostNumber, target.lun);
        return { portal, key, ok: true, scsiHost: hostNumber };
      } catch (e) {
        return { portal, key, ok: false, error: toCsiError(e) };
      }
    }));
  }));
}

/**
 * Step 5 for a portal without a session: discovery (report only), the node record of this one target,
 * CHAP, manual scan, login, manual startup. Discovery writes no records: its default op would create
 * one for every target the portal lists (left behind, `node.startup` from iscsid.conf, often automatic)
 * and reset the records of targets other volumes use (open-iscsi #58). It still proves the portal
 * answers and, with discovery CHAP, that the credentials work, and it tells the portal group.
 */
async function loginPortal(host: NodeHost, target: TargetSpec, portal: Portal, iface: string, log: Logger): Promise<void> {
  const discovery = { portal, iface };
  const key = formatPortal(portal);
  // The discovery record is the portal's (send_targets/<addr>,<port>), shared by every target and iface
  // there, and `-o new` resets it to defaults even when it exists: a stage of another target at this
  // portal (another IQN lock) must not reset it between this one's CHAP settings and its discovery.
  // Stages asking the same portal the same way at the same time share one discovery.
  const found = await host.discoveries.run(discoveryFlightKey(key, iface, target.discoveryChap), () =>
    host.targetLocks.withLock(discoveryLockKey(key), async () => {
      try {
        orThrow(await host.iscsi.newDiscovery(discovery));
        if (target.discoveryChap) orThrow(await host.iscsi.setDiscoveryChap(discovery, target.discoveryChap));
        return orThrow(await host.iscsi.discover(discovery, { persist: false })).value;
      } finally {
        // needed only for this discovery: it would keep a discovery CHAP password in open-iscsi's
        // database for good (no node record links to it: they are written apart, not by discovery)
        const removed = await host.iscsi.deleteDiscovery(discovery);
        if (!removed.ok) log.warn({ portal: key, err: removed.message }, 'could not delete the discovery record');
      }
    }));
  const node = { iqn: target.iqn, portal, iface };
  // A target that discovery does not list here (e.g. it reports another portal group) gets a record without one.
  const listed = found.find((t) => t.iqn === target.iqn && t.portal === key);
  // marked before the node record and the login: a session of this driver is never taken for an operator's
  await host.sessionMarks.mark({ iqn: target.iqn, portal: key, iface });
  host.forgottenNodes.recreated(target.iqn, key, iface);
  await createNodeRecord(host, node, listed?.tpgt, target.sessionChap);
  // A failed login keeps its record (manual startup: never logged in at boot): the node healer logs in
  // with it once the portal answers, CHAP settings included, which it could not rebuild (secrets are not
  // kept). A stage that fails as a whole deletes it with the rest (detach).
  orThrow(await countedLogin(host, node));
  log.info({ portal: formatPortal(portal), iqn: target.iqn }, 'logged in');
}

/**
 * The node record of one (target, portal, iface) with this driver's settings: manual scan (only the
 * LUNs asked for appear, kubernetes #90982), manual startup (no silent login at boot), login attempts
 * that end before iscsiadm's timeout, and the session's CHAP. A record whose settings could not be
 * written is deleted again: with iscsid.conf's startup it could be logged in at every boot.
 */
export async function createNodeRecord(host: NodeHost, node: NodeRef, tpgt: number | undefined, chap: ChapCredentials | undefined): Promise<void> {
  orThrow(await host.iscsi.newNode(node, tpgt));
  const limits = loginLimits(host.cfg.commands.iscsiadm.timeoutMs);
  try {
    orThrow(await host.iscsi.updateNode(node, {
      'node.session.scan': 'manual',
      'node.startup': 'manual',
      'node.session.initial_login_retry_max': String(limits.retries),
      'node.conn[0].timeo.login_timeout': String(limits.loginTimeoutS),
      ...sessionChapSettings(chap),
    }));
  } catch (e) {
    await host.iscsi.deleteNode(node);
    throw e;
  }
}

/** `iscsiadm --login`, counted by how it ended (a thrown error, e.g. iscsiadm's timeout, is a failure). */
export async function countedLogin(host: NodeHost, node: NodeRef): Promise<IscsiOutcome> {
  let outcome: IscsiOutcome | undefined;
  try {
    outcome = await host.iscsi.login(node);
    return outcome;
  } finally {
    metricsOf(host).login(!outcome?.ok ? 'failed' : outcome.already ? 'already' : 'ok');
  }
}

/** The lock of a portal's discovery record (taken inside a target lock, never the other way round). */
function discoveryLockKey(portal: string): string {
  return `discovery ${portal}`;
}

/**
 * What makes two discoveries the same question: the portal, the iface (the initiator name: a target's
 * ACL decides what it lists) and the discovery CHAP credentials (compared by digest, in memory only).
 */
function discoveryFlightKey(portal: string, iface: string, chap: ChapCredentials | undefined): string {
  const digest = chap
    ? createHash('sha256').update([chap.username, chap.password.reveal(), chap.usernameIn ?? '', chap.passwordIn?.reveal() ?? ''].join('\0')).digest('hex')
    : 'none';
  return `${portal} ${iface} ${digest}`;
}

/** iscsid.conf's `node.conn[0].timeo.login_timeout`: one login attempt is never given longer. */
const LOGIN_TIMEOUT_MAX_S = 15;
/** iscsid's attempts end this long before iscsiadm's timeout, at the latest. */
const LOGIN_MARGIN_MS = 5_000;

/**
 * How long one login attempt may take and how many attempts iscsid may make for one `--login`, so
 * that all of them end before iscsiadm's timeout. With iscsid.conf's 8 attempts of 15 s (or
 * open-iscsi's built-in 30 s), iscsid would go on after the driver killed iscsiadm, and a late
 * success would leave a session no record accounts for. An attempt that starts just before the
 * retry window closes still runs its full timeout: (attempts + 1) × timeout must fit.
 */
export function loginLimits(iscsiadmTimeoutMs: number): { loginTimeoutS: number; retries: number } {
  const budgetS = Math.max(2, Math.floor((iscsiadmTimeoutMs - LOGIN_MARGIN_MS) / 1000));
  const loginTimeoutS = Math.max(1, Math.min(LOGIN_TIMEOUT_MAX_S, Math.floor(budgetS / 2)));
  return { loginTimeoutS, retries: Math.max(1, Math.floor(budgetS / loginTimeoutS) - 1) };
}

/**
 * Step 6: wait (event-driven) for each connected portal's LUN device, as the kernel reports it (sysfs
 * and the /dev node), never waiting on udev. No path at all fails the attach.
 */
async function waitForPaths(host: NodeHost, target: TargetSpec, outcomes: PortalOutcome[], transport: string, log: Logger): Promise<FoundPaths> {
  const failures = outcomes.filter((o) => !o.ok).map((o) => ({ portal: o.key, error: o.error ?? new Internal('unknown failure') }));
  const waits = outcomes.filter((o) => o.ok).map(async (o): Promise<AttachedPath | { portal: string; error: CsiError }> => {
    const found = await host.devices.waitForLunDevice(o.scsiHost!, target.lun, { portal: o.portal, iqn: target.iqn, transport }, waitOptions(host));
    metricsOf(host).deviceWait(found.ok ? 'found' : found.reason, found.waitedMs / 1000);
    if (!found.ok) {
      const byPath = host.devices.byPathLink(o.portal, target.iqn, target.lun);
      return { portal: o.key, error: new DeadlineExceeded(`LUN ${target.lun} of ${target.iqn} on ${o.key} (SCSI host ${o.scsiHost}, ${byPath}) got no block device within ${host.cfg.timeouts.deviceWaitMs} ms`) };
    }
    return { portal: o.key, stablePath: found.link, device: basename(found.device) };
  });
  const paths: AttachedPath[] = [];
  for (const r of await Promise.all(waits)) {
    if ('error' in r) failures.push(r);
    else paths.push(r);
  }
  const deadPortals = failures.map((f) => ({ portal: f.portal, reason: f.error.message }));
  if (deadPortals.length > 0) log.warn({ deadPortals }, paths.length > 0 ? 'some portals are down; continuing with the paths that came up' : 'no portal came up');
  if (paths.length === 0) {
    // one portal: its own error; several: the first one's code (e.g. all down → UNAVAILABLE), every reason
    const first = failures[0]!.error;
    if (failures.length === 1) throw first;
    const reasons = failures.map((f) => `${f.portal}: ${f.error.message}`).join('; ');
    throw new CsiError(first.code, `could not attach LUN ${target.lun} of ${target.iqn} on any portal: ${reasons}`);
  }
  return { paths, deadPortals };
}

/**
 * The by-path link of the first path when udev has made it by now (after format and mount it usually
 * has) and it still points at that device, else what the attach found. A dm map keeps its /dev/dm-N.
 */
async function stableDevicePath(host: NodeHost, target: TargetSpec, attached: Omit<Attached, 'stableDevicePath'>, transport: string): Promise<string> {
  const first = attached.paths[0];
  if (attached.multipath || !first || first.stablePath !== host.devices.devicePath(first.device)) return attached.devicePath;
  const link = await host.devices.findByPath(parsePortal(first.portal), target.iqn, target.lun, transport);
  return link?.device === host.devices.devicePath(first.device) ? link.link : attached.devicePath;
}

/**
 * Step 7: multipath is detected per device from sysfs, never assumed from configuration: a node running
 * multipathd turns even a single path into a dm device. With several paths, or one that multipath's
 * udev rules say multipathd takes (it builds the map only after the path's links exist), wait (bounded)
 * for the map: mounting the path device first would keep multipathd from ever taking it.
 */
async function findMultipath(host: NodeHost, paths: AttachedPath[], log: Logger): Promise<Attached['multipath']> {
  for (const p of paths) {
    const holder = await host.sysfs.multipathHolder(p.device);
    if (holder) return toMultipath(holder);
  }
  if (paths.length < 2) {
    const claim = await host.udev.multipathClaim(paths[0]!.device);
    if (claim !== 'claimed' && claim !== 'maybe') return undefined;
    log.debug({ device: paths[0]!.device, claim }, 'multipath claims the single path: waiting for its map');
  }
  const r = await host.devices.waitForMultipathHolder(paths[0]!.device, { deadlineMs: host.cfg.timeouts.multipathWaitMs, pollMs: host.cfg.timeouts.devicePollMs });
  if (!r.ok) {
    log.warn({ paths: paths.map((p) => p.device) }, paths.length > 1 ? 'several paths but no multipath device appeared; using the first path' : 'multipath claims the path but no map appeared; using the path');
    return undefined;
  }
  return toMultipath(r.holder);
}

function toMultipath(h: MultipathHolder): NonNullable<Attached['multipath']> {
  return { dm: h.dm, name: h.name ?? h.dm, wwid: h.wwid };
}

function waitOptions(host: NodeHost): WaitOptions {
  return { deadlineMs: host.cfg.timeouts.deviceWaitMs, pollMs: host.cfg.timeouts.devicePollMs };
}
