// Pure validators for everything that reaches a host command or a host path from a request or a
// volume's attributes. Each returns the parsed (and, where the protocol defines one, canonical) value or
// throws InvalidArgument with a message that says what is wrong and what is expected.
import { createHash } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { InvalidArgument } from '../errors.js';
import { BoundedMemo } from './bounded-memo.js';

// ---------------------------------------------------------------------------------------------------
// iSCSI names (RFC 3720 §3.2.6, RFC 3721, RFC 3722 stringprep profile, RFC 3980 for naa.)

/** RFC 3720 §3.2.6.1: an iSCSI name is at most 223 bytes (UTF-8). */
export const MAX_ISCSI_NAME_BYTES = 223;

export type IscsiNameType = 'iqn' | 'eui' | 'naa';

const IQN_HEAD_RE = /^iqn\.(\d{4})-(\d{2})\.([^:]*)(?::(.*))?$/s;
const DOMAIN_LABEL_RE = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const EUI_RE = /^eui\.[0-9a-fA-F]{16}$/;
const NAA_RE = /^naa\.(?:[0-9a-fA-F]{16}|[0-9a-fA-F]{32})$/;
/**
 * Characters left after the RFC 3722 profile: ASCII is reduced to `a-z 0-9 - . :` (upper case is mapped
 * away by case folding, every other ASCII symbol, space and control character is prohibited); beyond
 * ASCII, lower-case/caseless letters, marks and digits survive.
 */
const ISCSI_NAME_CHAR_RE = /^[a-z0-9.:\-\p{Ll}\p{Lo}\p{Lm}\p{M}\p{Nd}]$/u;
/**
 * The common case, checked first: an ASCII name is in NFKC already and its suffix needs no Unicode
 * classes (compiling those and loading ICU's normalization data cost a first call ~7 ms).
 */
const ASCII_RE = /^[\x00-\x7f]*$/;
const ASCII_SUFFIX_RE = /^[a-z0-9.:-]*$/;

function describe(value: unknown): string {
  const s = typeof value === 'string' ? value : String(value);
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}…` : s);
}

/**
 * Validates an iSCSI name (target or initiator) and tells its type. Names are returned unchanged:
 * targets compare names byte-wise, so the driver must use exactly what the storage admin configured.
 */
export function parseIscsiName(value: unknown, what = 'iSCSI name'): { type: IscsiNameType; name: string } {
  if (typeof value !== 'string' || value.length === 0) throw new InvalidArgument(`${what} is required`);
  const name = value;
  if (Buffer.byteLength(name, 'utf8') > MAX_ISCSI_NAME_BYTES) {
    throw new InvalidArgument(`${what} ${describe(name)} is longer than ${MAX_ISCSI_NAME_BYTES} bytes (RFC 3720)`);
  }
  if (EUI_RE.test(name)) return { type: 'eui', name };
  if (NAA_RE.test(name)) return { type: 'naa', name };
  if (/^(eui|naa)\./i.test(name)) {
    throw new InvalidArgument(`${what} ${describe(name)} is not valid: expected eui. followed by 16 hex digits or naa. followed by 16 or 32 hex digits`);
  }
  const m = IQN_HEAD_RE.exec(name);
  if (!m) {
    const hint = /^iqn\./i.test(name) ? ' (the "iqn." prefix and the whole name must be lower case)' : '';
    throw new InvalidArgument(`${what} ${describe(name)} is not valid: expected iqn.yyyy-mm.reversed.domain[:identifier], eui.<16 hex> or naa.<16|32 hex>${hint}`);
  }
  const [, , month, authority, suffix] = m;
  const monthNumber = Number(month);
  if (monthNumber < 1 || monthNumber > 12) {
    throw new InvalidArgument(`${what} ${describe(name)} is not valid: the date after "iqn." must be yyyy-mm with a month 01..12`);
  }
  const labels = (authority ?? '').split('.');
  if (!authority || !labels.every((l) => DOMAIN_LABEL_RE.test(l))) {
    throw new InvalidArgument(`${what} ${describe(name)} is not valid: after the date comes a reversed domain name in lower case (e.g. com.example)`);
  }
  if (suffix !== undefined && suffix.length === 0) {
    throw new InvalidArgument(`${what} ${describe(name)} is not valid: nothing follows the ":"`);
  }
  if (ASCII_RE.test(name) && ASCII_SUFFIX_RE.test(suffix ?? '')) return { type: 'iqn', name };
  if (name.normalize('NFKC') !== name) {
    throw new InvalidArgument(`${what} ${describe(name)} is not valid: it is not in Unicode normalization form KC (RFC 3722)`);
  }
  for (const ch of suffix ?? '') {
    if (!ISCSI_NAME_CHAR_RE.test(ch)) {
      const reason = /[A-Z]/.test(ch)
        ? `upper-case letters are not allowed (RFC 3722 folds case; use ${describe(name.toLowerCase())} if the target is configured that way)`
        : `character ${JSON.stringify(ch)} is not allowed (only a-z, 0-9, "-", ".", ":" and non-ASCII letters/digits)`;
      throw new InvalidArgument(`${what} ${describe(name)} is not valid: ${reason}`);
    }
  }
  return { type: 'iqn', name };
}

/** A target name (iqn./eui./naa.), returned unchanged. */
export function parseTargetIqn(value: unknown): string {
  return parseIscsiName(value, 'target IQN').name;
}

/** An initiator name (iqn./eui./naa.), returned unchanged. */
export function parseInitiatorName(value: unknown): string {
  return parseIscsiName(value, 'initiator name').name;
}

// ---------------------------------------------------------------------------------------------------
// Portals

export const DEFAULT_ISCSI_PORT = 3260;
const MAX_HOSTNAME_LENGTH = 253;
const HOST_LABEL_RE = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

export type PortalFamily = 'ipv4' | 'ipv6' | 'hostname';

export interface Portal {
  /** IPv4 as given, IPv6 canonical (RFC 5952, no brackets), hostname lower case */
  host: string;
  port: number;
  family: PortalFamily;
}

/** RFC 5952 text form of an IPv6 address (compressed, lower case), so sysfs and request forms compare equal. */
export function canonicalIPv6(address: string): string {
  // The WHATWG URL parser serialises IPv6 hosts in exactly the RFC 5952 form.
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

/**
 * The key two portals compare by, and the form iscsiadm's `-p` takes: `addr:port`, `[v6]:port`.
 * Accepts addresses as sysfs prints them (IPv6 uncompressed) and returns them canonical.
 */
export function portalKeyOf(address: string, port: number | string): string {
  const bare = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  if (isIPv6(bare) && !bare.includes('%')) return `[${canonicalIPv6(bare)}]:${port}`;
  return `${bare.toLowerCase()}:${port}`;
}

/** `ip:port` / `[v6]:port` / `host:port` */
export function formatPortal(p: Portal): string {
  return portalKeyOf(p.host, p.port);
}

export function parsePort(value: unknown, what = 'port'): number {
  const text = typeof value === 'number' ? String(value) : value;
  if (typeof text !== 'string' || !/^\d{1,5}$/.test(text)) throw new InvalidArgument(`${what} ${describe(value)} must be an integer 1..65535`);
  const port = Number(text);
  if (port < 1 || port > 65535) throw new InvalidArgument(`${what} ${describe(value)} must be an integer 1..65535`);
  return port;
}

export function parseHostname(value: unknown, what = 'host name'): string {
  if (typeof value !== 'string' || value.length === 0) throw new InvalidArgument(`${what} is required`);
  const bad = (why: string): never => {
    throw new InvalidArgument(`${what} ${describe(value)} is not valid: ${why}`);
  };
  if (value.length > MAX_HOSTNAME_LENGTH) bad(`longer than ${MAX_HOSTNAME_LENGTH} characters`);
  if (/^[0-9.]+$/.test(value)) bad('it looks like an IPv4 address but is not one (four numbers 0..255)');
  for (const label of value.split('.')) {
    if (!HOST_LABEL_RE.test(label)) bad('each dot-separated label must be 1..63 letters, digits or "-", not starting or ending with "-"');
  }
  return value.toLowerCase();
}

/**
 * Parses a target portal as users write it: `host:port`, `host` (port 3260), `[v6]:port`, `[v6]`,
 * bare IPv4, or a bare IPv6 address (two or more colons: no port, like iscsiadm's own parser).
 */
export function parsePortal(value: unknown, what = 'portal'): Portal {
  if (typeof value !== 'string' || value.trim().length === 0) throw new InvalidArgument(`${what} is required`);
  const text = value.trim();
  const expected = 'expected host:port, host, [ipv6]:port, [ipv6] or an IP address';
  const bracketed = /^\[([^\]]*)\](?::([^:]*))?$/.exec(text);
  if (text.startsWith('[')) {
    if (!bracketed) throw new InvalidArgument(`${what} ${describe(value)} is not valid: ${expected}`);
    return { host: parseIPv6(bracketed[1] ?? '', value, what), port: bracketed[2] === undefined ? DEFAULT_ISCSI_PORT : parsePort(bracketed[2], `${what} port`), family: 'ipv6' };
  }
  const colons = text.split(':').length - 1;
  if (colons >= 2) return { host: parseIPv6(text, value, what), port: DEFAULT_ISCSI_PORT, family: 'ipv6' };
  const [host = '', portText] = text.split(':');
  if (host.length === 0) throw new InvalidArgument(`${what} ${describe(value)} is not valid: the host is empty; ${expected}`);
  const port = portText === undefined ? DEFAULT_ISCSI_PORT : parsePort(portText, `${what} port`);
  if (isIPv4(host)) return { host, port, family: 'ipv4' };
  return { host: parseHostname(host, `${what} host`), port, family: 'hostname' };
}

function parseIPv6(address: string, original: unknown, what: string): string {
  if (address.includes('%')) throw new InvalidArgument(`${what} ${describe(original)} is not valid: IPv6 zone ids (%…) are not supported`);
  if (!isIPv6(address)) throw new InvalidArgument(`${what} ${describe(original)} is not valid: ${JSON.stringify(address)} is not an IPv6 address`);
  return canonicalIPv6(address);
}

// ---------------------------------------------------------------------------------------------------
// LUN, filesystem, iface

/** SAM flat-space LUN addressing: 14 bits. */
export const MAX_LUN = 16383;

export function parseLun(value: unknown, what = 'lun'): number {
  const text = typeof value === 'number' ? String(value) : value;
  if (typeof text !== 'string' || !/^\d{1,5}$/.test(text) || Number(text) > MAX_LUN) {
    throw new InvalidArgument(`${what} ${describe(value)} must be an integer 0..${MAX_LUN}`);
  }
  return Number(text);
}

export const FS_TYPES = ['ext4', 'ext3', 'xfs', 'btrfs'] as const;
export type FsType = (typeof FS_TYPES)[number];

export function isFsType(value: unknown): value is FsType {
  return typeof value === 'string' && (FS_TYPES as readonly string[]).includes(value);
}

/** An allowed filesystem type; an empty or missing value yields `fallback` when one is given. */
export function parseFsType(value: unknown, fallback?: FsType): FsType {
  if ((value === undefined || value === null || value === '') && fallback !== undefined) return fallback;
  if (isFsType(value)) return value;
  throw new InvalidArgument(`fsType ${describe(value ?? '')} is not supported; use one of ${FS_TYPES.join(', ')}`);
}

const IFACE_NAME_RE = /^[A-Za-z0-9._:-]{1,64}$/;

/** An open-iscsi iface name; it becomes a file name under the iscsi db's `ifaces/`. */
export function parseIfaceName(value: unknown, what = 'iSCSI interface'): string {
  if (typeof value !== 'string' || !IFACE_NAME_RE.test(value) || value === '.' || value === '..' || value.startsWith('-')) {
    throw new InvalidArgument(`${what} ${describe(value ?? '')} is not valid: 1..64 characters of A-Z a-z 0-9 . _ : -, not "." or "..", not starting with "-"`);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------
// Volume ids and file-system-safe keys

export const MAX_VOLUME_ID_BYTES = 1024;

/** A CSI volume id: any non-empty string up to 1024 bytes without NUL. Never used raw in a path. */
export function parseVolumeId(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw new InvalidArgument('volume id is required');
  if (Buffer.byteLength(value, 'utf8') > MAX_VOLUME_ID_BYTES) throw new InvalidArgument(`volume id is longer than ${MAX_VOLUME_ID_BYTES} bytes`);
  if (value.includes('\0')) throw new InvalidArgument('volume id must not contain NUL characters');
  return value;
}

const READABLE_KEY_CHARS = 48;
const KEY_HASH_HEX = 32;
/** Keys of the volumes and targets a node has seen lately: every step of a stage names its volume's directory or its target's lock. */
const FILE_KEY_MEMO_ENTRIES = 1024;
const fileKeys = new BoundedMemo<string, string>(FILE_KEY_MEMO_ENTRIES);

/**
 * A stable file name for an arbitrary string: a sanitised readable prefix (for people looking at the
 * state directory) plus a SHA-256 prefix of the whole string (for uniqueness). Never "." or "..", never
 * contains "/", at most 81 characters.
 */
export function safeFileKey(value: string): string {
  const known = fileKeys.get(value);
  if (known !== undefined) return known;
  const hash = createHash('sha256').update(value, 'utf8').digest('hex').slice(0, KEY_HASH_HEX);
  const readable = value.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\./, '_').slice(0, READABLE_KEY_CHARS);
  const key = readable.length > 0 ? `${readable}-${hash}` : hash;
  fileKeys.set(value, key);
  return key;
}

/** Directory name for a volume's state: see safeFileKey. */
export function volumeKey(volumeId: string): string {
  return safeFileKey(volumeId);
}

const CLONED_IFACE_HASH_HEX = 16;

/**
 * Name of the iface cloned for a volume that asks for its own initiator name. Stable per (base iface,
 * volume), a valid iface name, and free of "ipv6" (open-iscsi switches an iface to its IPv6 key set
 * when the name contains it).
 */
export function clonedIfaceName(baseIface: string, volumeId: string): string {
  const hash = createHash('sha256').update(`${baseIface}\0${volumeId}`, 'utf8').digest('hex').slice(0, CLONED_IFACE_HASH_HEX);
  return `csi-${hash}`;
}
