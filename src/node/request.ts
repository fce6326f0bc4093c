// Validation of node requests: everything a NodeStage/NodePublish call carries is parsed into typed
// values here, so a bad id, path, IQN, portal, LUN or parameter is INVALID_ARGUMENT before any command
// runs. CHAP values leave this module only as Secret.
import { isAbsolute, normalize } from 'node:path';
import { InvalidArgument } from '../errors.js';
import { Secret } from '../log.js';
import type { AccessModeMode, VolumeCapability } from '../csi/types.js';
import type { ChapCredentials } from '../host/iscsiadm.js';

export type { ChapCredentials };
import {
  parseFsType, parseIfaceName, parseInitiatorName, parseLun, parsePortal, parseTargetIqn, parseVolumeId,
  formatPortal, type FsType, type Portal,
} from '../host/validate.js';

/** volume_context / publish_context keys, as the in-tree plugin and csi-driver-iscsi name them. */
export const CONTEXT_KEYS = {
  targetPortal: 'targetPortal',
  portals: 'portals',
  iqn: 'iqn',
  lun: 'lun',
  iface: 'iscsiInterface',
  initiatorName: 'initiatorName',
  discoveryChap: 'discoveryCHAPAuth',
  sessionChap: 'sessionCHAPAuth',
  fsType: 'fsType',
} as const;

/** CHAP secret keys, as the in-tree plugin names them (`nodeStageSecretRef`). */
export const SESSION_CHAP_KEYS = {
  username: 'node.session.auth.username',
  password: 'node.session.auth.password',
  usernameIn: 'node.session.auth.username_in',
  passwordIn: 'node.session.auth.password_in',
} as const;
export const DISCOVERY_CHAP_KEYS = {
  username: 'discovery.sendtargets.auth.username',
  password: 'discovery.sendtargets.auth.password',
  usernameIn: 'discovery.sendtargets.auth.username_in',
  passwordIn: 'discovery.sendtargets.auth.password_in',
} as const;

export type VolumeAccess =
  | { kind: 'mount'; fsType: FsType; mountFlags: string[] }
  | { kind: 'block' };

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
}

export interface StageSpec {
  volumeId: string;
  stagingPath: string;
  target: TargetSpec;
  access: VolumeAccess;
  accessMode: AccessModeMode;
  readonly: boolean;
}

export const SUPPORTED_ACCESS_MODES: readonly AccessModeMode[] = [
  'SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER',
  'MULTI_NODE_READER_ONLY', 'MULTI_NODE_SINGLE_WRITER', 'MULTI_NODE_MULTI_WRITER',
];

const READ_ONLY_MODES: readonly AccessModeMode[] = ['SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY'];
const MAX_PATH_BYTES = 4096;
const MAX_MOUNT_FLAG_BYTES = 256;
const MAX_PORTALS = 16;

export function parseVolumeIdField(value: unknown): string {
  if (value === undefined || value === null || value === '') throw new InvalidArgument('volume_id is required');
  return parseVolumeId(value);
}

/** An absolute, normalised path without NUL or `..` components. */
export function parsePath(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new InvalidArgument(`${field} is required`);
  if (value.includes('\0')) throw new InvalidArgument(`${field} must not contain NUL characters`);
  if (Buffer.byteLength(value) > MAX_PATH_BYTES) throw new InvalidArgument(`${field} is longer than ${MAX_PATH_BYTES} bytes`);
  if (!isAbsolute(value)) throw new InvalidArgument(`${field} ${JSON.stringify(value)} must be an absolute path`);
  if (value.split('/').includes('..')) throw new InvalidArgument(`${field} ${JSON.stringify(value)} must not contain ".." components`);
  const norm = normalize(value);
  return norm.length > 1 && norm.endsWith('/') ? norm.slice(0, -1) : norm;
}

export function parseCapability(cap: VolumeCapability | null | undefined, defaultFsType: FsType): { access: VolumeAccess; accessMode: AccessModeMode } {
  if (!cap) throw new InvalidArgument('volume_capability is required');
  const mode = cap.access_mode?.mode;
  if (!mode || mode === 'UNKNOWN') throw new InvalidArgument('volume_capability.access_mode is required');
  if (!SUPPORTED_ACCESS_MODES.includes(mode)) throw new InvalidArgument(`access mode ${mode} is not supported`);
  if (cap.access_type === 'block') return { access: { kind: 'block' }, accessMode: mode };
  if (cap.access_type !== 'mount') throw new InvalidArgument('volume_capability must be block or mount');
  if (mode === 'MULTI_NODE_MULTI_WRITER') {
    throw new InvalidArgument('MULTI_NODE_MULTI_WRITER is supported for block volumes only: ext4, xfs and btrfs are not cluster filesystems');
  }
  const fsType = parseFsType(cap.mount.fs_type, defaultFsType);
  return { access: { kind: 'mount', fsType, mountFlags: parseMountFlags(cap.mount.mount_flags) }, accessMode: mode };
}

export function parseMountFlags(flags: readonly string[] | undefined): string[] {
  const out: string[] = [];
  for (const flag of flags ?? []) {
    if (typeof flag !== 'string' || flag === '' || Buffer.byteLength(flag) > MAX_MOUNT_FLAG_BYTES || /[\s\0]/.test(flag)) {
      throw new InvalidArgument(`mount flag ${JSON.stringify(flag)} is not valid: no spaces, at most ${MAX_MOUNT_FLAG_BYTES} bytes`);
    }
    out.push(...flag.split(',').filter(Boolean));
  }
  return out;
}

export function isReadOnlyMode(mode: AccessModeMode): boolean {
  return READ_ONLY_MODES.includes(mode);
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

function flag(value: string | undefined, key: string): boolean | undefined {
  if (value === undefined || value === '') return undefined;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new InvalidArgument(`${key} must be "true" or "false", got ${JSON.stringify(value)}`);
}

function parseChap(secrets: Record<string, string>, keys: typeof SESSION_CHAP_KEYS | typeof DISCOVERY_CHAP_KEYS, enabled: boolean | undefined, what: string): ChapCredentials | undefined {
  const username = secrets[keys.username];
  const password = secrets[keys.password];
  // Secrets present means CHAP is wanted unless the volume explicitly says otherwise (csi-driver-iscsi
  // silently ignored session CHAP, csi-driver-iscsi#289); asked for CHAP without secrets is an error.
  if (enabled === false) return undefined;
  if (!username && !password) {
    if (enabled) throw new InvalidArgument(`${what} CHAP is enabled but the node-stage secret has no ${keys.username} / ${keys.password}`);
    return undefined;
  }
  if (!username || !password) throw new InvalidArgument(`${what} CHAP needs both ${keys.username} and ${keys.password} in the node-stage secret`);
  const cred: ChapCredentials = { username: checkChapValue(username, keys.username), password: new Secret(checkChapValue(password, keys.password)) };
  const usernameIn = secrets[keys.usernameIn];
  const passwordIn = secrets[keys.passwordIn];
  if (usernameIn || passwordIn) {
    if (!usernameIn || !passwordIn) throw new InvalidArgument(`mutual ${what} CHAP needs both ${keys.usernameIn} and ${keys.passwordIn}`);
    cred.usernameIn = checkChapValue(usernameIn, keys.usernameIn);
    cred.passwordIn = new Secret(checkChapValue(passwordIn, keys.passwordIn));
  }
  return cred;
}

/**
 * A CHAP name or password as open-iscsi can store it: one `key = value` line of a record file, so no
 * line break (it would add lines of its own, e.g. `node.startup = automatic`) and no NUL. The message
 * names the key, never the value.
 */
function checkChapValue(value: string, key: string): string {
  if (value.length > 256 || /[\0\n\r]/.test(value)) throw new InvalidArgument(`${key} must be at most 256 characters without line breaks`);
  return value;
}

export function parseTargetSpec(context: Record<string, string>, secrets: Record<string, string>, defaultIface: string): TargetSpec {
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
  const session = parseChap(secrets, SESSION_CHAP_KEYS, flag(context[CONTEXT_KEYS.sessionChap], CONTEXT_KEYS.sessionChap), 'session');
  const discovery = parseChap(secrets, DISCOVERY_CHAP_KEYS, flag(context[CONTEXT_KEYS.discoveryChap], CONTEXT_KEYS.discoveryChap), 'discovery');
  if (session) spec.sessionChap = session;
  if (discovery) spec.discoveryChap = discovery;
  return spec;
}
