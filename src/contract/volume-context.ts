// The controller↔node contract: the volume_context / publish_context keys (the in-tree plugin's and
// csi-driver-iscsi's names, so static PVs written for them work here), the controller's encoder and the
// node's parser. A static PV's volumeAttributes use the same keys.
import type { StringMap } from '../csi/types.js';
import { InvalidArgument } from '../errors.js';
import {
  formatPortal, parseIfaceName, parseInitiatorName, parseLun, parsePortal, parseTargetIqn, type Portal,
} from '../common/validate.js';
import { chapFromSecrets, DISCOVERY_CHAP_KEYS, SESSION_CHAP_KEYS, type ChapCredentials, type ChapKeys } from './chap.js';

export const CONTEXT_KEYS = {
  /** the primary portal, "host:port" */
  targetPortal: 'targetPortal',
  /** every portal: a JSON list or comma-separated; may repeat targetPortal */
  portals: 'portals',
  iqn: 'iqn',
  lun: 'lun',
  /** open-iscsi iface to log in through (default: the node's configured one) */
  iface: 'iscsiInterface',
  /** the volume's own initiator name: its sessions go through a cloned iface */
  initiatorName: 'initiatorName',
  /** "true" / "false": CHAP for discovery / the session, credentials in the node-stage secret */
  discoveryChap: 'discoveryCHAPAuth',
  sessionChap: 'sessionCHAPAuth',
  fsType: 'fsType',
  /** the LUN's identity as the node's kernel shows it (`/sys/block/sdX/device/wwid`, e.g. `naa.6…`) */
  wwid: 'wwid',
} as const;

/** Where a LUN is, as the controller hands it out. */
export interface LunLocation {
  /** canonical "addr:port", the first is the primary */
  portals: string[];
  iqn: string;
  lun: number;
  /** the kernel's WWID of the LUN (sysfs `device/wwid` form), when the backend knows it */
  wwid?: string | undefined;
}

export interface VolumeContextOptions {
  fsType?: string | undefined;
  /** the node must log in with session CHAP (credentials: its node-stage secret) */
  sessionChap?: boolean | undefined;
}

/** The location part of a context, which is also the whole publish_context. */
export function encodeLocation(loc: LunLocation): StringMap {
  return {
    [CONTEXT_KEYS.targetPortal]: loc.portals[0] ?? '',
    [CONTEXT_KEYS.portals]: JSON.stringify(loc.portals),
    [CONTEXT_KEYS.iqn]: loc.iqn,
    [CONTEXT_KEYS.lun]: String(loc.lun),
    ...(loc.wwid ? { [CONTEXT_KEYS.wwid]: loc.wwid } : {}),
  };
}

/** A created volume's volume_context: its location plus how the node stages it (never secrets). */
export function encodeVolumeContext(loc: LunLocation, opts: VolumeContextOptions): StringMap {
  return {
    ...encodeLocation(loc),
    ...(opts.fsType ? { [CONTEXT_KEYS.fsType]: opts.fsType } : {}),
    ...(opts.sessionChap ? { [CONTEXT_KEYS.sessionChap]: 'true' } : {}),
  };
}

/** Whether a context names a LUN (a pre-provisioned PV's volumeAttributes do). */
export function hasLocation(context: StringMap): boolean {
  return !!context[CONTEXT_KEYS.iqn] && !!context[CONTEXT_KEYS.lun] && !!(context[CONTEXT_KEYS.targetPortal] || context[CONTEXT_KEYS.portals]);
}

/** What the node needs to attach a LUN. */
export interface TargetSpec {
  /** portals in the order given, deduplicated; the first is the primary (`targetPortal`) */
  portals: Portal[];
  iqn: string;
  lun: number;
  iface: string;
  /** set when the volume asks for its own initiator name: the iface is cloned */
  initiatorName?: string;
  sessionChap?: ChapCredentials;
  discoveryChap?: ChapCredentials;
  /** the WWID every path device (and the multipath map) must have before anything is written */
  wwid?: string;
}

const MAX_PORTALS = 16;

/** Parses a context (volume_context with publish_context over it) and the node-stage secrets. */
export function parseTargetSpec(context: StringMap, secrets: StringMap, defaultIface: string): TargetSpec {
  const iqnValue = context[CONTEXT_KEYS.iqn];
  if (!iqnValue) throw new InvalidArgument(`volume context needs ${CONTEXT_KEYS.iqn}`);
  const lunValue = context[CONTEXT_KEYS.lun];
  if (lunValue === undefined || lunValue === '') throw new InvalidArgument(`volume context needs ${CONTEXT_KEYS.lun}`);
  const spec: TargetSpec = {
    portals: parsePortals(context[CONTEXT_KEYS.targetPortal], context[CONTEXT_KEYS.portals]),
    iqn: parseTargetIqn(iqnValue),
    lun: parseLun(lunValue),
    iface: context[CONTEXT_KEYS.iface] ? parseIfaceName(context[CONTEXT_KEYS.iface]) : defaultIface,
  };
  if (context[CONTEXT_KEYS.initiatorName]) spec.initiatorName = parseInitiatorName(context[CONTEXT_KEYS.initiatorName]);
  if (context[CONTEXT_KEYS.wwid]) spec.wwid = parseWwid(context[CONTEXT_KEYS.wwid]);
  const session = wantedChap(secrets, SESSION_CHAP_KEYS, flag(context[CONTEXT_KEYS.sessionChap], CONTEXT_KEYS.sessionChap), 'session');
  const discovery = wantedChap(secrets, DISCOVERY_CHAP_KEYS, flag(context[CONTEXT_KEYS.discoveryChap], CONTEXT_KEYS.discoveryChap), 'discovery');
  if (session) spec.sessionChap = session;
  if (discovery) spec.discoveryChap = discovery;
  return spec;
}

/** `portals`: a JSON list or a comma-separated list; `targetPortal` comes first. */
export function parsePortals(targetPortal: string | undefined, portals: string | undefined): Portal[] {
  const raw: string[] = [];
  if (targetPortal) raw.push(targetPortal);
  if (portals && portals.trim() !== '') {
    const text = portals.trim();
    if (text.startsWith('[')) {
      let list: unknown;
      try {
        list = JSON.parse(text);
      } catch {
        throw new InvalidArgument(`portals ${JSON.stringify(portals)} is not a valid JSON list`);
      }
      if (!Array.isArray(list) || !list.every((p) => typeof p === 'string')) throw new InvalidArgument('portals must be a list of "host:port" strings');
      raw.push(...(list as string[]));
    } else {
      raw.push(...text.split(',').map((p) => p.trim()).filter(Boolean));
    }
  }
  if (raw.length === 0) throw new InvalidArgument(`volume context needs ${CONTEXT_KEYS.targetPortal} (or ${CONTEXT_KEYS.portals})`);
  const seen = new Map<string, Portal>();
  for (const text of raw) {
    const p = parsePortal(text, `portal ${JSON.stringify(text)}`);
    seen.set(formatPortal(p), p);
  }
  if (seen.size > MAX_PORTALS) throw new InvalidArgument(`at most ${MAX_PORTALS} portals are supported`);
  return [...seen.values()];
}

/** The kernel's designator forms (scsi_lib.c scsi_vpd_lun_id): NAA 8/16 bytes, EUI-64 8/12/16 bytes in lowercase hex. */
const WWID_HEX_RE = /^(naa\.([0-9a-f]{16}|[0-9a-f]{32})|eui\.([0-9a-f]{16}|[0-9a-f]{24}|[0-9a-f]{32}))$/;
/** A SCSI name string, copied raw by the kernel: `iqn.…`, or `naa.` / `eui.` and hex digits. */
const WWID_NAME_RE = /^(iqn\.[\x21-\x7e]+|(naa|eui)\.[0-9A-Fa-f]{1,64})$/;
/** A T10 vendor id designator: `t10.` and the escaped string (spaces kept). */
const WWID_T10_RE = /^t10\.[\x20-\x7e]+$/;
/** the SCSI name string designator holds at most 255 bytes */
const WWID_MAX_LENGTH = 256;

/**
 * A LUN's WWID as the kernel shows it in `/sys/block/sdX/device/wwid` (e.g. `naa.6000…`, tgt's LUNs;
 * `naa.6001405…`, LIO's). NAA and EUI-64 designators are lowercased, as the kernel prints them.
 */
export function parseWwid(value: string): string {
  const hex = value.toLowerCase();
  if (WWID_HEX_RE.test(hex)) return hex;
  if (value.length <= WWID_MAX_LENGTH && (WWID_NAME_RE.test(value) || WWID_T10_RE.test(value))) return value;
  throw new InvalidArgument(`${CONTEXT_KEYS.wwid} ${JSON.stringify(value.slice(0, 80))} is not a WWID as the kernel shows it in /sys/block/sdX/device/wwid (naa.<16 or 32 hex digits>, eui.<16, 24 or 32 hex digits>, t10.<vendor id>, or a SCSI name string)`);
}

function flag(value: string | undefined, key: string): boolean | undefined {
  if (value === undefined || value === '') return undefined;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new InvalidArgument(`${key} must be "true" or "false", got ${JSON.stringify(value)}`);
}

/**
 * Secrets present means CHAP is wanted unless the volume explicitly says otherwise (csi-driver-iscsi
 * silently ignored session CHAP, csi-driver-iscsi#289); asked for CHAP without secrets is an error.
 */
function wantedChap(secrets: StringMap, keys: ChapKeys, enabled: boolean | undefined, what: string): ChapCredentials | undefined {
  if (enabled === false) return undefined;
  const cred = chapFromSecrets(secrets, keys, 'node-stage secret');
  if (!cred && enabled) throw new InvalidArgument(`${what} CHAP is enabled but the node-stage secret has no ${keys.username} / ${keys.password}`);
  return cred;
}
