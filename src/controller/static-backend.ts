// The static backend: an inventory of LUNs an administrator created beforehand on any SAN. CreateVolume
// claims the smallest free LUN that fits the requested range, DeleteVolume releases it (optionally
// zeroing its first MiBs first). Claims are persisted atomically under <stateDir>/controller/static/.
// The driver does not manage the SAN: LUN masking and CHAP are configured there, so publish and
// unpublish only record which node uses a volume.
//
// Inventory file (YAML or JSON; re-read on every CreateVolume, so LUNs can be added while running):
//   luns:
//     - iqn: iqn.2001-05.com.example:array1
//       lun: 3
//       portals: ["10.0.0.5:3260", "10.0.0.6:3260"]   # or `portal: 10.0.0.5:3260`
//       sizeBytes: 10737418240
//       chapSecretRef: san-chap      # optional: the LUN needs session CHAP (see below)
//       wipePath: /dev/disk/by-path/ip-10.0.0.5:3260-iscsi-iqn.2001-05.com.example:array1-lun-3
//                                    # optional: where the controller host reaches the LUN to wipe it
//       wwid: naa.60014052e5a1c0de0000000000000003
//                                    # optional: the LUN's WWID as a node's kernel shows it
//                                    # (/sys/block/sdX/device/wwid); the node refuses any other device
//
// StorageClass parameters:
//   fsType:        passed to the node in volume_context
//   chapSecretRef: claim only LUNs with this chapSecretRef (without it: only LUNs without one). The
//                  StorageClass's node-stage secret must hold that CHAP account's credentials; the
//                  volume_context then carries sessionCHAPAuth: "true" (never the credentials).
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { Config } from '../config.js';
import type { StringMap, VolumeCondition } from '../csi/types.js';
import { FailedPrecondition, Internal, InvalidArgument, NotFound, OutOfRange, ResourceExhausted } from '../errors.js';
import { KeyedMutex } from '../common/keyed-mutex.js';
import { formatPortal, parseFsType, parseLun, parsePortal, parseTargetIqn } from '../common/validate.js';
import type { Logger } from '../log.js';
import {
  checkSameVolume, EXPANSION_BY_BACKEND, HEALTHY, unknownParameters,
  type CapacityInfo, type CreateSpec, type PublishSpec, type VolumeBackend, type VolumeRecord,
} from './backend.js';
import { checkPublish, type CapabilitySummary, type Publication } from './capabilities.js';
import { formatBytes } from './capacity.js';
import { volumeIdFor } from './names.js';
import { DurableJsonFile, RESTORE_HINT } from '../common/durable-json.js';
import { CONTEXT_KEYS, encodeVolumeContext, parseWwid } from '../contract/volume-context.js';

export const STATIC_PARAMS = {
  fsType: 'fsType',
  chapSecretRef: 'chapSecretRef',
} as const;

const STATE_VERSION = 1;
const MIB = 1024 * 1024;
/** Kubernetes object names (RFC 1123 subdomain). */
const SECRET_REF_RE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

export interface InventoryLun {
  /** `<iqn>/<lun>`: identifies the LUN across inventory edits */
  key: string;
  iqn: string;
  lun: number;
  portals: string[];
  sizeBytes: number;
  chapSecretRef?: string;
  wipePath?: string;
  wwid?: string;
}

interface Claim {
  id: string;
  name: string;
  seq: number;
  lunKey: string;
  capacityBytes: number;
  capabilities: CapabilitySummary[];
  parameters: StringMap;
  context: StringMap;
  published: Record<string, Publication>;
  createdAt: string;
}

interface ClaimsDoc {
  version: number;
  nextSeq: number;
  claims: Record<string, Claim>;
}

/** Parses and checks an inventory document; messages name the entry and field. */
export function parseInventory(doc: unknown, source: string): InventoryLun[] {
  const bad = (msg: string): never => {
    throw new InvalidArgument(`inventory ${source}: ${msg}`);
  };
  if (doc === null || doc === undefined) return [];
  if (typeof doc !== 'object' || Array.isArray(doc)) bad('must be a map with a "luns" list');
  const list = (doc as { luns?: unknown }).luns ?? [];
  if (!Array.isArray(list)) bad('"luns" must be a list');
  const out: InventoryLun[] = [];
  const seen = new Set<string>();
  (list as unknown[]).forEach((raw, i) => {
    const where = `luns[${i}]`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) bad(`${where} must be a map`);
    const e = raw as Record<string, unknown>;
    const known = ['iqn', 'lun', 'portals', 'portal', 'sizeBytes', 'chapSecretRef', 'wipePath', 'wwid'];
    for (const k of Object.keys(e)) if (!known.includes(k)) bad(`${where}: unknown key ${k} (known: ${known.join(', ')})`);
    const iqn = parseTargetIqn(e.iqn);
    const lun = parseLun(e.lun, `${where}.lun`);
    const portalList = e.portals ?? (e.portal !== undefined ? [e.portal] : undefined);
    if (!Array.isArray(portalList) || portalList.length === 0) bad(`${where}: portals (a list) or portal is required`);
    const portals = (portalList as unknown[]).map((p, j) => formatPortal(parsePortal(p, `${where}.portals[${j}]`)));
    const sizeBytes = e.sizeBytes;
    if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) bad(`${where}.sizeBytes must be a positive integer`);
    const entry: InventoryLun = { key: `${iqn}/${lun}`, iqn, lun, portals, sizeBytes: sizeBytes as number };
    if (e.chapSecretRef !== undefined) {
      if (typeof e.chapSecretRef !== 'string' || !SECRET_REF_RE.test(e.chapSecretRef)) bad(`${where}.chapSecretRef must be a Kubernetes Secret name`);
      entry.chapSecretRef = e.chapSecretRef as string;
    }
    if (e.wipePath !== undefined) {
      if (typeof e.wipePath !== 'string' || !e.wipePath.startsWith('/')) bad(`${where}.wipePath must be an absolute path`);
      entry.wipePath = e.wipePath as string;
    }
    if (e.wwid !== undefined) {
      if (typeof e.wwid !== 'string') bad(`${where}.wwid must be a string`);
      try {
        entry.wwid = parseWwid(e.wwid as string);
      } catch (err) {
        bad(`${where}: ${(err as Error).message}`);
      }
    }
    if (seen.has(entry.key)) bad(`${where}: LUN ${lun} of ${iqn} is listed twice`);
    seen.add(entry.key);
    out.push(entry);
  });
  return out;
}

export interface StaticBackendDeps {
  cfg: Config;
  logger: Logger;
}

export class StaticBackend implements VolumeBackend {
  readonly expansion = EXPANSION_BY_BACKEND.static;
  readonly kind = 'static' as const;
  readonly #cfg: Config;
  readonly #logger: Logger;
  readonly #locks = new KeyedMutex();
  readonly #file: DurableJsonFile<ClaimsDoc>;
  #doc: ClaimsDoc = { version: STATE_VERSION, nextSeq: 1, claims: {} };
  #loaded = false;
  #inventory: InventoryLun[] = [];

  constructor(deps: StaticBackendDeps) {
    this.#cfg = deps.cfg;
    this.#logger = deps.logger.child({ backend: 'static' });
    const path = join(deps.cfg.stateDir, 'controller', 'static', 'claims.json');
    this.#file = new DurableJsonFile(path, { what: 'controller state', version: STATE_VERSION, hint: RESTORE_HINT }, () => this.#doc);
  }

  async start(): Promise<void> {
    await this.#load();
    await this.reconcile().catch((e: Error) => this.#logger.error({ err: e.message }, 'cannot read the LUN inventory'));
  }

  async stop(): Promise<void> {}

  async #load(): Promise<void> {
    if (this.#loaded) return;
    const doc = await this.#file.load();
    if (doc) this.#doc = doc;
    this.#loaded = true;
  }

  async #readInventory(): Promise<InventoryLun[]> {
    const path = this.#cfg.controller.static.inventoryFile;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      throw new FailedPrecondition(`cannot read the LUN inventory ${path}: ${(e as Error).message}; set controller.static.inventoryFile`);
    }
    let doc: unknown;
    try {
      doc = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
    } catch (e) {
      throw new FailedPrecondition(`LUN inventory ${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`);
    }
    try {
      this.#inventory = parseInventory(doc, path);
    } catch (e) {
      throw new FailedPrecondition((e as Error).message);
    }
    return this.#inventory;
  }

  /** Checks that every claimed LUN is still in the inventory (the SAN itself is not the driver's to change). */
  async reconcile(): Promise<void> {
    await this.#load();
    await this.#readInventory();
  }

  async probe(): Promise<string | null> {
    try {
      await this.#readInventory();
      return null;
    } catch (e) {
      return (e as Error).message;
    }
  }

  #parseParams(parameters: StringMap): { fsType?: string; chapSecretRef?: string } {
    const unknown = unknownParameters(parameters, Object.values(STATIC_PARAMS));
    if (unknown.length > 0) throw new InvalidArgument(`unknown StorageClass parameter(s) ${unknown.join(', ')} for the static backend; known: ${Object.values(STATIC_PARAMS).join(', ')}`);
    const fsType = parameters[STATIC_PARAMS.fsType];
    if (fsType !== undefined) parseFsType(fsType);
    const ref = parameters[STATIC_PARAMS.chapSecretRef];
    if (ref !== undefined && !SECRET_REF_RE.test(ref)) throw new InvalidArgument(`parameter ${STATIC_PARAMS.chapSecretRef} must be a Kubernetes Secret name`);
    return { ...(fsType !== undefined ? { fsType } : {}), ...(ref !== undefined ? { chapSecretRef: ref } : {}) };
  }

  checkParameters(parameters: StringMap): void {
    this.#parseParams(parameters);
  }

  get(id: string): VolumeRecord | undefined {
    const c = this.#doc.claims[id];
    return c ? this.#record(c) : undefined;
  }

  list(): VolumeRecord[] {
    return Object.values(this.#doc.claims).sort((a, b) => a.seq - b.seq).map((c) => this.#record(c));
  }

  #record(c: Claim): VolumeRecord {
    return {
      id: c.id, name: c.name, seq: c.seq, capacityBytes: c.capacityBytes, capabilities: c.capabilities,
      parameters: c.parameters, context: c.context, published: c.published, condition: this.#conditionOf(c),
    };
  }

  #conditionOf(c: Claim): VolumeCondition {
    if (this.#inventory.some((l) => l.key === c.lunKey)) return HEALTHY;
    return { abnormal: true, message: `LUN ${c.lunKey} is no longer listed in the inventory ${this.#cfg.controller.static.inventoryFile}` };
  }

  async condition(id: string): Promise<VolumeCondition> {
    const c = this.#doc.claims[id];
    if (!c) throw new NotFound(`volume ${id} does not exist`);
    await this.#readInventory();
    return this.#conditionOf(c);
  }

  #free(inventory: InventoryLun[], chapSecretRef: string | undefined): InventoryLun[] {
    const claimed = new Set(Object.values(this.#doc.claims).map((c) => c.lunKey));
    return inventory.filter((l) => !claimed.has(l.key) && l.chapSecretRef === chapSecretRef);
  }

  async capacity(parameters: StringMap): Promise<CapacityInfo> {
    await this.#load();
    const params = this.#parseParams(parameters);
    const free = this.#free(await this.#readInventory(), params.chapSecretRef);
    return {
      availableBytes: free.reduce((sum, l) => sum + l.sizeBytes, 0),
      maximumVolumeBytes: free.reduce((max, l) => Math.max(max, l.sizeBytes), 0),
    };
  }

  async create(spec: CreateSpec): Promise<VolumeRecord> {
    await this.#load();
    const id = volumeIdFor('static', spec.name);
    // one lock for all claims: choosing a free LUN and recording the claim must not interleave
    return this.#locks.withLock('claims', async () => {
      const existing = this.#doc.claims[id];
      if (existing) {
        checkSameVolume(this.#record(existing), spec);
        return this.#record(existing);
      }
      const params = this.#parseParams(spec.parameters);
      const free = this.#free(await this.#readInventory(), params.chapSecretRef);
      const which = params.chapSecretRef ? `with chapSecretRef ${params.chapSecretRef}` : 'without chapSecretRef';
      if (free.length === 0) throw new ResourceExhausted(`no free LUN ${which} is left in the inventory ${this.#cfg.controller.static.inventoryFile}`);
      const fits = free
        .filter((l) => l.sizeBytes >= spec.range.required && (spec.range.limit === 0 || l.sizeBytes <= spec.range.limit))
        .sort((a, b) => a.sizeBytes - b.sizeBytes);
      const lun = fits[0];
      if (!lun) {
        const sizes = [...new Set(free.map((l) => l.sizeBytes))].sort((a, b) => a - b).map(formatBytes);
        throw new OutOfRange(`no free LUN ${which} fits the requested range (required ${spec.range.required}, limit ${spec.range.limit || 'none'}); free sizes: ${sizes.join(', ')}`);
      }
      const claim: Claim = {
        id,
        name: spec.name,
        seq: this.#doc.nextSeq,
        lunKey: lun.key,
        capacityBytes: lun.sizeBytes,
        capabilities: spec.capabilities,
        parameters: spec.parameters,
        context: {
          ...encodeVolumeContext({ portals: lun.portals, iqn: lun.iqn, lun: lun.lun, wwid: lun.wwid }, { fsType: params.fsType, sessionChap: !!lun.chapSecretRef }),
        },
        published: {},
        createdAt: new Date().toISOString(),
      };
      this.#doc.claims[id] = claim;
      this.#doc.nextSeq += 1;
      try {
        await this.#file.save();
      } catch (e) {
        delete this.#doc.claims[id];
        throw e;
      }
      this.#logger.info({ volumeId: id, lun: lun.key, bytes: lun.sizeBytes }, 'LUN claimed');
      return this.#record(claim);
    });
  }

  async delete(id: string): Promise<void> {
    await this.#load();
    await this.#locks.withLock(`vol:${id}`, async () => {
      const claim = this.#doc.claims[id];
      if (!claim) return;
      const nodes = Object.keys(claim.published);
      if (nodes.length > 0) throw new FailedPrecondition(`volume ${id} is still published to node(s) ${nodes.join(', ')}; ControllerUnpublishVolume it first`);
      await this.#wipe(claim);
      await this.#locks.withLock('claims', async () => {
        delete this.#doc.claims[id];
        await this.#file.save();
      });
      this.#logger.info({ volumeId: id, lun: claim.lunKey }, 'LUN released');
    });
  }

  /** Zeroes the first controller.static.wipeOnDeleteMiB MiB of a released LUN, when the inventory says where it is reachable. */
  async #wipe(claim: Claim): Promise<void> {
    const mib = this.#cfg.controller.static.wipeOnDeleteMiB;
    if (mib <= 0) return;
    const lun = (await this.#readInventory().catch(() => this.#inventory)).find((l) => l.key === claim.lunKey);
    if (!lun?.wipePath) {
      this.#logger.info({ volumeId: claim.id, lun: claim.lunKey }, 'not wiping the released LUN: the inventory gives no wipePath for it');
      return;
    }
    const bytes = Math.min(mib * MIB, lun.sizeBytes);
    const zeros = Buffer.alloc(Math.min(MIB, bytes));
    let fh;
    try {
      fh = await open(lun.wipePath, 'r+');
    } catch (e) {
      throw new Internal(`cannot open ${lun.wipePath} to wipe LUN ${claim.lunKey}: ${(e as Error).message}; fix wipePath or set controller.static.wipeOnDeleteMiB to 0`);
    }
    try {
      for (let off = 0; off < bytes; off += zeros.length) {
        await fh.write(zeros, 0, Math.min(zeros.length, bytes - off), off);
      }
      await fh.sync();
    } catch (e) {
      throw new Internal(`wiping LUN ${claim.lunKey} through ${lun.wipePath} failed: ${(e as Error).message}`);
    } finally {
      await fh.close();
    }
    this.#logger.info({ volumeId: claim.id, lun: claim.lunKey, path: lun.wipePath, bytes }, 'released LUN wiped');
  }

  async publish(id: string, spec: PublishSpec): Promise<StringMap> {
    await this.#load();
    return this.#locks.withLock(`vol:${id}`, async () => {
      const claim = this.#doc.claims[id];
      if (!claim) throw new NotFound(`volume ${id} does not exist`);
      if (checkPublish(id, claim.published, spec.nodeId, spec) === 'new') {
        claim.published[spec.nodeId] = { readonly: spec.readonly, mode: spec.mode };
        await this.#locks.withLock('claims', () => this.#file.save());
      }
      const { [CONTEXT_KEYS.fsType]: _fs, [CONTEXT_KEYS.sessionChap]: _chap, ...location } = claim.context;
      return location;
    });
  }

  async unpublish(id: string, nodeId: string | undefined): Promise<void> {
    await this.#load();
    await this.#locks.withLock(`vol:${id}`, async () => {
      const claim = this.#doc.claims[id];
      if (!claim) return;
      const nodes = nodeId === undefined ? Object.keys(claim.published) : [nodeId].filter((n) => claim.published[n]);
      if (nodes.length === 0) return;
      for (const n of nodes) delete claim.published[n];
      await this.#locks.withLock('claims', () => this.#file.save());
    });
  }

  async expand(id: string, capacityBytes: number): Promise<VolumeRecord> {
    await this.#load();
    return this.#locks.withLock(`vol:${id}`, async () => {
      const claim = this.#doc.claims[id];
      if (!claim) throw new NotFound(`volume ${id} does not exist`);
      if (capacityBytes <= claim.capacityBytes) return this.#record(claim);
      // a LUN grown on the SAN (and its inventory entry updated) can be handed out larger
      const lun = (await this.#readInventory()).find((l) => l.key === claim.lunKey);
      if (!lun || lun.sizeBytes < capacityBytes) {
        throw new OutOfRange(`volume ${id} is the pre-created LUN ${claim.lunKey} of ${formatBytes(lun?.sizeBytes ?? claim.capacityBytes)}; the static backend cannot grow it: grow it on the SAN and raise its sizeBytes in the inventory`);
      }
      claim.capacityBytes = capacityBytes;
      await this.#locks.withLock('claims', () => this.#file.save());
      return this.#record(claim);
    });
  }
}
