// Per-volume attach metadata (`iscsi.json`): everything detach needs after a restart or crash, without
// the original request. Kept in the driver's protected state directory (never inside the staging or
// target path), written atomically (temp file, fsync, rename, fsync dir), mode 0600 in 0700
// directories, schema-versioned, and never holding a secret.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { errnoCode, Internal } from '../errors.js';
import { Secret, type Logger } from '../log.js';
import { volumeKey } from '../common/validate.js';
import { fsyncDirectory, readJson, writeJsonDurably } from '../common/durable-json.js';

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
  /** SCSI path devices (`sdb`), one per portal; informational: sdX names change across reboots */
  devices: string[];
  multipath?: { dm: string; wwid: string; name?: string };
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

function isVolumeRecord(v: unknown): v is VolumeRecord {
  if (!v || typeof v !== 'object') return false;
  const r = v as Record<string, unknown>;
  return (
    r.schemaVersion === METADATA_SCHEMA_VERSION &&
    typeof r.volumeId === 'string' &&
    (r.phase === 'attaching' || r.phase === 'staged' || r.phase === 'detaching') &&
    Array.isArray(r.publishedAt) &&
    Array.isArray(r.portals) &&
    typeof r.iqn === 'string' &&
    typeof r.lun === 'number' &&
    typeof r.iface === 'string' &&
    Array.isArray(r.devices) &&
    typeof r.stagingPath === 'string' &&
    (r.accessType === 'block' || r.accessType === 'mount')
  );
}

export class MetadataStore {
  #rootReady = false;
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

  /** Writes the record atomically; refuses (INTERNAL) a record carrying anything that looks like a secret. */
  async save(record: VolumeRecord): Promise<void> {
    const leaks = secretPaths(record);
    if (leaks.length > 0) throw new Internal(`refusing to write volume metadata with secret fields (${leaks.join(', ')})`);
    if (record.schemaVersion !== undefined && record.schemaVersion !== METADATA_SCHEMA_VERSION) {
      throw new Internal(`volume metadata schema ${String(record.schemaVersion)} is not ${METADATA_SCHEMA_VERSION}`);
    }
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
        return;
      } catch (e) {
        if (errnoCode(e) !== 'ENOENT') throw e;
        this.#knownDirs.delete(dir);
      }
    }
    const created = await ensurePrivateDir(dir);
    this.#knownDirs.add(dir);
    // a new directory's entry in volumes/ is made durable alongside the file's own fsync, not after it
    await writeDurably(dir, doc, created ? this.volumesDir() : null);
  }

  /** The record, or null when the volume has none. A corrupt file is an INTERNAL error naming the file. */
  async load(volumeId: string): Promise<VolumeRecord | null> {
    const file = this.filePath(volumeId);
    const record = await readRecord(file);
    if (record && record.volumeId !== volumeId) {
      throw new Internal(`volume metadata ${file} belongs to volume ${JSON.stringify(record.volumeId)}, not ${JSON.stringify(volumeId)}`);
    }
    return record;
  }

  /** Deletes the record and its directory; nothing there is success. */
  async remove(volumeId: string): Promise<void> {
    this.#knownDirs.delete(this.volumeDir(volumeId));
    await fs.rm(this.volumeDir(volumeId), { recursive: true, force: true });
    await fsyncDirectory(this.volumesDir()).catch(() => undefined);
  }

  /** Every staged volume's record (corrupt ones are logged and skipped). */
  async list(): Promise<VolumeRecord[]> {
    let keys: string[];
    try {
      keys = await fs.readdir(this.volumesDir());
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return [];
      throw e;
    }
    const records = await Promise.all(
      keys.map(async (key) => {
        const file = join(this.volumesDir(), key, FILE_NAME);
        try {
          return await readRecord(file);
        } catch (e) {
          this.logger?.warn({ file, err: (e as Error).message }, 'skipping unreadable volume metadata');
          return null;
        }
      }),
    );
    return records.filter((r): r is VolumeRecord => r !== null).sort((a, b) => a.volumeId.localeCompare(b.volumeId));
  }

  /** Staged volumes on target `iqn`, optionally without one volume (the one being detached). */
  async listByTarget(iqn: string, exceptVolumeId?: string): Promise<VolumeRecord[]> {
    return (await this.list()).filter((r) => r.iqn === iqn && r.volumeId !== exceptVolumeId);
  }
}

async function readRecord(file: string): Promise<VolumeRecord | null> {
  const parsed = await readJson(file, { what: 'volume metadata' });
  if (parsed === undefined) return null;
  if (!isVolumeRecord(parsed)) throw new Internal(`volume metadata ${file} does not match schema version ${METADATA_SCHEMA_VERSION}`);
  return parsed;
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
