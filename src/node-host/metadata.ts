// Per-volume attach metadata (`iscsi.json`): everything detach needs after a restart or crash, without
// the original request. Kept in the driver's protected state directory (never inside the staging or
// target path), written atomically (temp file, fsync, rename, fsync dir), mode 0600 in 0700
// directories, schema-versioned, and never holding a secret.
import { promises as fs, readdirSync, statSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { errnoCode, Internal, ResourceExhausted } from '../errors.js';
import { Secret, type Logger } from '../log.js';
import type { AccessModeMode } from '../csi/types.js';
import {
  formatPortal, FS_TYPES, MAX_LUN, parseFsType, parseIfaceName, parseInitiatorName, parsePortal, parseTargetIqn, parseVolumeId, volumeKey,
} from '../common/validate.js';
import { fsyncDirectory, readJson, RESTORE_HINT, writeJsonDurably } from '../common/durable-json.js';

export const METADATA_SCHEMA_VERSION = 1;
const FILE_NAME = 'iscsi.json';
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
/** A key that could hold a secret never goes to disk here; CHAP credentials come from the request each time. */
const SECRET_KEY_RE = /password|secret/i;

export interface VolumeRecord {
  /** stamped by save(); checked by load() */
  schemaVersion?: typeof METADATA_SCHEMA_VERSION;
  volumeId: string;
  /**
   * `attaching` is saved before the first login, so a crash mid-attach leaves enough to clean up and
   * a concurrent detach of another LUN counts this volume as a user of the target; `staged` when done;
   * `detaching` once its devices are gone: it no longer holds the session, and an unstage that failed
   * after that point (a logout that timed out) is finished by the next unstage or staged again.
   */
  phase: 'attaching' | 'staged' | 'detaching';
  /** iscsiadm `-p` form, `ip:port` / `[v6]:port` */
  portals: string[];
  iqn: string;
  lun: number;
  /** iface the node records are bound to */
  iface: string;
  /** iface created for this volume (custom initiator name); deleted on detach */
  clonedIface?: string;
  initiatorName?: string;
  /** iface transport (`tcp` when absent) */
  transport?: string;
  /**
   * whether the sessions authenticate with CHAP. The credentials are never kept here: a path whose
   * node record is gone cannot be rebuilt by the healer without them (the next stage brings them).
   */
  sessionChap?: boolean;
  /** SCSI path devices (`sdb`), one per portal; informational: sdX names change across reboots */
  devices: string[];
  multipath?: { dm: string; wwid: string; name?: string };
  /** the LUN's kernel WWID (`device/wwid`) as checked at stage: a later publish checks the device against it */
  wwid?: string;
  /** the device staged: the by-path link, or `/dev/dm-N` for multipath */
  devicePath?: string;
  stagingPath: string;
  accessType: 'block' | 'mount';
  /** CSI access mode name (e.g. SINGLE_NODE_WRITER) */
  accessMode?: string;
  fsType?: string;
  mountFlags?: string[];
  readonly: boolean;
  /** target paths this volume is published at */
  publishedAt: string[];
  /** ISO 8601, set when phase becomes `staged` */
  stagedAt?: string;
}

/** Paths of keys whose names look like they hold secrets, and of Secret values, anywhere in `value`. */
export function secretPaths(value: unknown, path = '$'): string[] {
  if (value instanceof Secret) return [path];
  if (Array.isArray(value)) return value.flatMap((v, i) => secretPaths(v, `${path}[${i}]`));
  if (value && typeof value === 'object') {
    return Object.entries(value).flatMap(([k, v]) => [...(SECRET_KEY_RE.test(k) ? [`${path}.${k}`] : []), ...secretPaths(v, `${path}.${k}`)]);
  }
  return [];
}

/** Why a field of a record read back cannot be trusted; the message names the field, never its value. */
class FieldProblem extends Error {
  constructor(readonly field: string, readonly problem: string) {
    super(`field ${field} ${problem}`);
  }
}

type FieldCheck = (value: unknown, field: string) => void;

const ACCESS_MODES: ReadonlySet<string> = new Set<AccessModeMode>([
  'SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY', 'MULTI_NODE_SINGLE_WRITER',
  'MULTI_NODE_MULTI_WRITER', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER',
]);
/** a kernel block device name (`sdb`, `dm-3`): one path segment under /dev */
const DEVICE_NAME_RE = /^[a-z][a-z0-9-]{0,31}$/;
const DM_NAME_RE = /^dm-\d{1,6}$/;
/** sysfs `wwid` (`naa.6…`, `t10.…` with spaces) and multipath's WWIDs: printable ASCII */
const WWID_RE = /^[\x20-\x7e]{1,256}$/;
const TRANSPORT_RE = /^[a-z][a-z0-9_]{0,31}$/;
/** what `new Date().toISOString()` writes */
const ISO_TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;
const MAX_PATH_BYTES = 4096;
const MAX_LIST_ENTRIES = 1024;
const MAX_STRING_BYTES = 4096;

/** Runs a parser from common/validate.ts, whose messages quote the value: only the field is kept. */
function parsedBy(parse: (v: unknown) => unknown, expected: string): FieldCheck {
  return (value, field) => {
    try {
      parse(value);
    } catch {
      throw new FieldProblem(field, `is not ${expected}`);
    }
  };
}
function string(value: unknown, field: string): asserts value is string {
  if (typeof value !== 'string') throw new FieldProblem(field, `must be a string, found ${kindOf(value)}`);
  if (Buffer.byteLength(value) > MAX_STRING_BYTES) throw new FieldProblem(field, `is longer than ${MAX_STRING_BYTES} bytes`);
}
function matching(re: RegExp, expected: string): FieldCheck {
  return (value, field) => {
    string(value, field);
    if (!re.test(value)) throw new FieldProblem(field, `is not ${expected}`);
  };
}
function oneOf(values: ReadonlySet<string>): FieldCheck {
  return (value, field) => {
    string(value, field);
    if (!values.has(value)) throw new FieldProblem(field, `is not one of ${[...values].join(', ')}`);
  };
}
const absolutePath: FieldCheck = (value, field) => {
  string(value, field);
  if (!value.startsWith('/') || value.includes('\0') || value.split('/').includes('..') || Buffer.byteLength(value) > MAX_PATH_BYTES) {
    throw new FieldProblem(field, 'is not an absolute path without ".." components');
  }
};
/** The portal as save() writes it: canonical `ip:port` / `[v6]:port`, what iscsiadm `-p` is given. */
const canonicalPortal: FieldCheck = (value, field) => {
  string(value, field);
  let canonical: string | undefined;
  try {
    canonical = formatPortal(parsePortal(value));
  } catch {
    // not a portal at all
  }
  if (canonical !== value) throw new FieldProblem(field, 'is not a portal in canonical form (ip:port or [ipv6]:port)');
};
function listOf(check: FieldCheck, opts: { nonEmpty?: boolean } = {}): FieldCheck {
  return (value, field) => {
    if (!Array.isArray(value)) throw new FieldProblem(field, `must be a list, found ${kindOf(value)}`);
    if (opts.nonEmpty && value.length === 0) throw new FieldProblem(field, 'must not be empty');
    if (value.length > MAX_LIST_ENTRIES) throw new FieldProblem(field, `has more than ${MAX_LIST_ENTRIES} entries`);
    value.forEach((v, i) => check(v, `${field}[${i}]`));
  };
}
const boolean: FieldCheck = (value, field) => {
  if (typeof value !== 'boolean') throw new FieldProblem(field, `must be true or false, found ${kindOf(value)}`);
};
const lun: FieldCheck = (value, field) => {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_LUN) throw new FieldProblem(field, `must be an integer 0..${MAX_LUN}`);
};
const isoTime: FieldCheck = (value, field) => {
  matching(ISO_TIME_RE, 'an ISO 8601 UTC time')(value, field);
  if (Number.isNaN(Date.parse(value as string))) throw new FieldProblem(field, 'is not an ISO 8601 UTC time');
};
/** An object with exactly these fields (optional ones may be absent); an unknown field is refused too. */
function objectOf(fields: Record<string, { check: FieldCheck; optional?: boolean }>): FieldCheck {
  return (value, path) => {
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new FieldProblem(path || 'record', `must be an object, found ${kindOf(value)}`);
    const at = (k: string): string => (path ? `${path}.${k}` : k);
    const doc = value as Record<string, unknown>;
    for (const [k, { check, optional }] of Object.entries(fields)) {
      if (doc[k] === undefined) {
        if (!optional) throw new FieldProblem(at(k), 'is missing');
        continue;
      }
      check(doc[k], at(k));
    }
    // a field this driver does not write could be anything, a secret among them: refused, not quoted
    for (const k of Object.keys(doc)) if (!(k in fields)) throw new FieldProblem(at(k.slice(0, 64)), 'is not a field of this schema');
  };
}
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return `a ${typeof value}`;
}

/**
 * Every field of a VolumeRecord with its check: the type, and the value as save() writes it (the
 * parsers of common/validate.ts). The mapped type makes a field added to VolumeRecord fail to compile
 * until it has a check here.
 */
const RECORD_FIELDS: { [K in keyof Required<VolumeRecord>]: { check: FieldCheck; optional?: boolean } } = {
  schemaVersion: { check: (v, f) => { if (v !== METADATA_SCHEMA_VERSION) throw new FieldProblem(f, `is not ${METADATA_SCHEMA_VERSION}`); } },
  volumeId: { check: parsedBy(parseVolumeId, 'a volume id') },
  phase: { check: oneOf(new Set(['attaching', 'staged', 'detaching'])) },
  portals: { check: listOf(canonicalPortal, { nonEmpty: true }) },
  iqn: { check: parsedBy(parseTargetIqn, 'an iSCSI target name') },
  lun: { check: lun },
  iface: { check: parsedBy(parseIfaceName, 'an iSCSI interface name') },
  clonedIface: { check: parsedBy(parseIfaceName, 'an iSCSI interface name'), optional: true },
  initiatorName: { check: parsedBy(parseInitiatorName, 'an iSCSI initiator name'), optional: true },
  transport: { check: matching(TRANSPORT_RE, 'an iSCSI transport name'), optional: true },
  sessionChap: { check: boolean, optional: true },
  devices: { check: listOf(matching(DEVICE_NAME_RE, 'a kernel block device name')) },
  multipath: {
    check: objectOf({
      dm: { check: matching(DM_NAME_RE, 'a device-mapper name (dm-N)') },
      wwid: { check: matching(WWID_RE, 'a WWID') },
      name: { check: matching(/^[\x21-\x7e]{1,256}$/, 'a multipath map name'), optional: true },
    }),
    optional: true,
  },
  wwid: { check: matching(WWID_RE, 'a WWID'), optional: true },
  devicePath: { check: absolutePath, optional: true },
  stagingPath: { check: absolutePath },
  accessType: { check: oneOf(new Set(['block', 'mount'])) },
  accessMode: { check: oneOf(ACCESS_MODES), optional: true },
  fsType: { check: parsedBy((v) => parseFsType(v), `one of ${FS_TYPES.join(', ')}`), optional: true },
  mountFlags: { check: listOf((v, f) => string(v, f)), optional: true },
  readonly: { check: boolean },
  publishedAt: { check: listOf(absolutePath) },
  stagedAt: { check: isoTime, optional: true },
};
const checkRecord = objectOf(RECORD_FIELDS);

/** The record read back, every field checked; anything off is INTERNAL naming the file and the field. */
export function validateRecord(doc: unknown, file: string): VolumeRecord {
  try {
    checkRecord(doc, '');
  } catch (e) {
    if (!(e instanceof FieldProblem)) throw e;
    throw new Internal(`volume metadata ${file} does not match schema version ${METADATA_SCHEMA_VERSION}: ${e.message}; nothing was changed on the host; ${RESTORE_HINT}`);
  }
  return doc as VolumeRecord;
}

/** The records on disk, and the record files that could not be read (a healer acting on "no record" must know). */
export interface RecordSurvey {
  records: VolumeRecord[];
  unreadable: string[];
}

/** A record as last read, and the file it was read from (inode, size, mtime): unchanged while these are. */
interface CachedRecord {
  stamp: string;
  record: VolumeRecord;
}

export class MetadataStore {
  #rootReady = false;
  /**
   * Records already read and checked, by file. Every read still stats the file (a save renames a new
   * inode in, by this process or another), so a changed record is read again; an unchanged one is not
   * parsed and checked again: stats, unstage and the healer read every record of a target or of the node.
   */
  readonly #cache = new Map<string, CachedRecord>();
  /** volume directories this process made or checked (private, existing); forgotten on remove() */
  readonly #knownDirs = new Set<string>();

  constructor(
    readonly stateDir: string,
    private readonly logger?: Logger,
  ) {}

  private volumesDir(): string {
    return join(this.stateDir, 'volumes');
  }

  /** `<stateDir>/volumes/<volumeKey>` */
  volumeDir(volumeId: string): string {
    return join(this.volumesDir(), volumeKey(volumeId));
  }

  /** `<stateDir>/volumes/<volumeKey>/iscsi.json` */
  filePath(volumeId: string): string {
    return join(this.volumeDir(volumeId), FILE_NAME);
  }

  /**
   * Writes the record atomically; refuses (INTERNAL) a record carrying anything that looks like a secret.
   * A full state filesystem is RESOURCE_EXHAUSTED, and a volume's first record that could not be
   * written leaves no directory behind.
   */
  async save(record: VolumeRecord): Promise<void> {
    const leaks = secretPaths(record);
    if (leaks.length > 0) throw new Internal(`refusing to write volume metadata with secret fields (${leaks.join(', ')})`);
    if (record.schemaVersion !== undefined && record.schemaVersion !== METADATA_SCHEMA_VERSION) {
      throw new Internal(`volume metadata schema ${String(record.schemaVersion)} is not ${METADATA_SCHEMA_VERSION}`);
    }
    try {
      await this.#write(record);
    } catch (e) {
      throw this.#noSpace(e, record.volumeId) ?? e;
    }
  }

  async #write(record: VolumeRecord): Promise<void> {
    const dir = this.volumeDir(record.volumeId);
    if (!this.#rootReady) {
      // the state directory may be shared with other driver state: create it private, leave an existing one alone
      await fs.mkdir(this.stateDir, { recursive: true, mode: DIR_MODE });
      await ensurePrivateDir(this.volumesDir());
      this.#rootReady = true; // once per process: a stage saves twice, a storm 64 times
    }
    const doc: VolumeRecord = { ...record, schemaVersion: METADATA_SCHEMA_VERSION };
    // A stage saves twice: the second save finds the directory this process made (or checked) for the
    // first, and skips mkdir + stat. Should it have gone since (removed by hand), the write says so
    // with ENOENT and the directory is made again.
    if (this.#knownDirs.has(dir)) {
      try {
        await writeDurably(dir, doc, null);
        this.#remember(dir, doc);
        return;
      } catch (e) {
        if (errnoCode(e) !== 'ENOENT') throw e;
        this.#knownDirs.delete(dir);
      }
    }
    const created = await ensurePrivateDir(dir);
    try {
      // a new directory's entry in volumes/ is made durable alongside the file's own fsync, not after it
      await writeDurably(dir, doc, created ? this.volumesDir() : null);
    } catch (e) {
      // the first record of a volume could not be written (a full disk): no empty directory stays
      if (created) await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw e;
    }
    this.#knownDirs.add(dir);
    this.#remember(dir, doc);
  }

  /** The record just written is the file's content: the next read need not parse and check it again. */
  #remember(dir: string, record: VolumeRecord): void {
    const file = join(dir, FILE_NAME);
    const st = statSync(file, { bigint: true, throwIfNoEntry: false });
    if (st) this.#cache.set(file, { stamp: stampOf(st), record });
    else this.#cache.delete(file);
  }

  /** A write that failed for want of space or quota, as RESOURCE_EXHAUSTED naming the state directory. */
  #noSpace(e: unknown, volumeId: string): ResourceExhausted | undefined {
    const code = errnoCode(e);
    if (code !== 'ENOSPC' && code !== 'EDQUOT') return undefined;
    return new ResourceExhausted(`the state directory ${this.stateDir} is full: cannot write the volume record ${this.filePath(volumeId)} (${(e as Error).message}); free space on that filesystem and retry`);
  }

  /** The record, or null when the volume has none. A corrupt file is an INTERNAL error naming the file. */
  async load(volumeId: string): Promise<VolumeRecord | null> {
    const file = this.filePath(volumeId);
    const record = await this.#read(file);
    if (record && record.volumeId !== volumeId) {
      throw new Internal(`volume metadata ${file} belongs to volume ${JSON.stringify(record.volumeId)}, not ${JSON.stringify(volumeId)}`);
    }
    return record;
  }

  /** Deletes the record and its directory; nothing there is success. */
  async remove(volumeId: string): Promise<void> {
    this.#cache.delete(this.filePath(volumeId));
    this.#knownDirs.delete(this.volumeDir(volumeId));
    await fs.rm(this.volumeDir(volumeId), { recursive: true, force: true });
    await fsyncDirectory(this.volumesDir()).catch(() => undefined);
  }

  /**
   * Every volume's record, and the files that cannot be read (logged and skipped). An unstage asks it
   * of every record of the node: records unchanged since they were last read cost one stat each, with
   * no promise of their own, and only the others are read.
   */
  async survey(): Promise<RecordSurvey> {
    let keys: string[];
    try {
      // synchronous: a listing of a local directory (see #read)
      keys = readdirSync(this.volumesDir());
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return { records: [], unreadable: [] };
      throw e;
    }
    const unreadable: string[] = [];
    const records: (VolumeRecord | null)[] = [];
    const changed: Promise<void>[] = [];
    for (const key of keys) {
      const file = join(this.volumesDir(), key, FILE_NAME);
      const found = this.#cached(file);
      if (found.record) {
        records.push(found.record);
        continue;
      }
      changed.push(this.#readInto(file, found.stamp).then((r) => void records.push(r), (e: unknown) => {
        this.logger?.warn({ file, err: (e as Error).message }, 'skipping unreadable volume metadata');
        unreadable.push(file);
      }));
    }
    await Promise.all(changed);
    return { records: records.filter((r): r is VolumeRecord => r !== null).sort((a, b) => a.volumeId.localeCompare(b.volumeId)), unreadable: unreadable.sort() };
  }

  /** The record in `file` (null when none), from the cache while the file is the one read last. */
  async #read(file: string): Promise<VolumeRecord | null> {
    const found = this.#cached(file);
    return found.record ?? this.#readInto(file, found.stamp);
  }

  /**
   * The cached record when `file` is still the one it was read from; else the file's stamp now (null
   * when it cannot be stat'ed: gone, or an error the read will name). Synchronous: a stat of a local
   * file answers from the inode cache, a thread-pool round trip costs more.
   */
  #cached(file: string): { record?: VolumeRecord; stamp: string | null } {
    let stamp: string;
    try {
      stamp = stampOf(statSync(file, { bigint: true }));
    } catch {
      this.#cache.delete(file);
      return { stamp: null };
    }
    const cached = this.#cache.get(file);
    return cached?.stamp === stamp ? { record: cached.record, stamp } : { stamp };
  }

  /** Reads and checks `file`, caching it under `stamp` (the stat before the read). */
  async #readInto(file: string, stamp: string | null): Promise<VolumeRecord | null> {
    const record = await readRecord(file); // gone (null), or an error readRecord names
    if (record && stamp !== null) this.#cache.set(file, { stamp, record });
    else this.#cache.delete(file);
    return record;
  }

  /** Staged volumes on target `iqn`, optionally without one volume (the one being detached). */
  async listByTarget(iqn: string, exceptVolumeId?: string): Promise<VolumeRecord[]> {
    return (await this.survey()).records.filter((r) => r.iqn === iqn && r.volumeId !== exceptVolumeId);
  }
}

function stampOf(st: BigIntStats): string {
  return `${st.ino}:${st.size}:${st.mtimeNs}`;
}

async function readRecord(file: string): Promise<VolumeRecord | null> {
  const parsed = await readJson(file, { what: 'volume metadata' });
  if (parsed === undefined) return null;
  return validateRecord(parsed, file);
}

/**
 * Writes `dir/iscsi.json` crash-safely. With `parentToSync` (the directory was just created), the
 * parent is fsynced too, concurrently with the file's write: both must be on disk before the record
 * counts, neither has to wait for the other.
 */
async function writeDurably(dir: string, record: VolumeRecord, parentToSync: string | null): Promise<void> {
  await writeJsonDurably(join(dir, FILE_NAME), record, { mode: FILE_MODE, syncAlongside: parentToSync });
}

/** mkdir with mode 0700 (enforced also on an existing directory); true when it was created. */
async function ensurePrivateDir(dir: string): Promise<boolean> {
  try {
    await fs.mkdir(dir, { mode: DIR_MODE });
    await fs.chmod(dir, DIR_MODE); // mkdir's mode is filtered by the umask
    return true;
  } catch (e) {
    if (errnoCode(e) !== 'EEXIST') throw e;
    const st = await fs.stat(dir);
    if ((st.mode & 0o777) !== DIR_MODE) await fs.chmod(dir, DIR_MODE);
    return false;
  }
}
