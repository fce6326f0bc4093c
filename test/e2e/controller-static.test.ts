// The Controller service with the static backend: a real tgtd on 127.0.0.1 plays an existing SAN with
// pre-created LUNs of several sizes; the inventory file lists them. Claims, releases, wipes, persistence
// and the volume_context a node would use are checked against that target.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { codeOf } from '../helpers/client.js';
import { defaultConfig, type Config } from '../../src/config.js';
import { createControllerService, type ControllerService } from '../../src/controller/service.js';
import { parseInventory } from '../../src/controller/static-backend.js';
import type { VolumeCapability } from '../../src/csi/types.js';
import { createLogger } from '../../src/log.js';
import { ProcessRunner } from '../../src/runner.js';
import { startTgtd, type TgtDaemon } from '../sim/tgtd.js';

const MiB = 1024 * 1024;
const SAN_IQN = 'iqn.2001-05.com.example:array1';
const NODE_A = 'iqn.2026-11.dev.test:node-a';
const NODE_B = 'iqn.2026-11.dev.test:node-b';
const logger = createLogger('silent');
const tmp = mkdtempSync(join(tmpdir(), 'ctrl-static-'));
const inventoryFile = join(tmp, 'inventory.yaml');
/** lun → size; LUN 4 needs CHAP (chapSecretRef), LUN 5 has no wipePath */
const LUNS: Record<number, number> = { 1: 16 * MiB, 2: 8 * MiB, 3: 32 * MiB, 4: 8 * MiB, 5: 12 * MiB };
const lunFile = (lun: number) => join(tmp, `san-lun${lun}.img`);
let tgtd: TgtDaemon;

function inventory(sizes: Record<number, number> = LUNS): string {
  return `luns:\n${Object.entries(sizes).map(([lun, size]) => [
    `  - iqn: ${SAN_IQN}`,
    `    lun: ${lun}`,
    `    portals: ["${tgtd.portal}"]`,
    `    sizeBytes: ${size}`,
    ...(lun === '4' ? ['    chapSecretRef: san-chap'] : []),
    ...(lun !== '5' ? [`    wipePath: ${lunFile(Number(lun))}`] : []),
  ].join('\n')).join('\n')}\n`;
}

function config(wipeMiB = 1): Config {
  const cfg = defaultConfig();
  cfg.stateDir = join(tmp, 'state');
  cfg.controller.backend = 'static';
  cfg.controller.static = { inventoryFile, wipeOnDeleteMiB: wipeMiB };
  return cfg;
}

async function newService(cfg = config()): Promise<ControllerService> {
  const s = createControllerService({ cfg, runner: new ProcessRunner(cfg.commands, [], logger), logger });
  await s.start();
  return s;
}

const mountCap: VolumeCapability = { access_mode: { mode: 'SINGLE_NODE_WRITER' }, access_type: 'mount', mount: { fs_type: '', mount_flags: [], volume_mount_group: '' } };
type Obj = Record<string, unknown>;
interface Vol { volume_id: string; capacity_bytes: number; volume_context: Record<string, string> }
function call<T = Obj>(s: ControllerService, method: string, req: Obj): Promise<T> {
  return s[method]!(req, { logger, requestId: 't', method }) as Promise<T>;
}
async function create(s: ControllerService, name: string, required: number, limit = 0, parameters: Record<string, string> = {}): Promise<Vol> {
  const r = await call<{ volume: Vol }>(s, 'CreateVolume', { name, capacity_range: { required_bytes: required, limit_bytes: limit }, volume_capabilities: [mountCap], parameters, secrets: {}, volume_content_source: null });
  return r.volume;
}
const publish = (s: ControllerService, id: string, node: string) => call<{ publish_context: Record<string, string> }>(s, 'ControllerPublishVolume', { volume_id: id, node_id: node, volume_capability: mountCap, readonly: false, secrets: {}, volume_context: {} });
const unpublish = (s: ControllerService, id: string, node: string) => call(s, 'ControllerUnpublishVolume', { volume_id: id, node_id: node, secrets: {} });
const del = (s: ControllerService, id: string) => call(s, 'DeleteVolume', { volume_id: id, secrets: {} });

function inq(vol: Vol, initiator: string): Promise<number> {
  const url = `iscsi://${vol.volume_context.targetPortal}/${vol.volume_context.iqn}/${vol.volume_context.lun}`;
  return new Promise((resolve) => execFile('iscsi-inq', ['-i', initiator, url], { timeout: 20_000 }, (err) => resolve(err ? 1 : 0)));
}

beforeAll(async () => {
  tgtd = await startTgtd();
  await tgtd.tgtadm(['--op', 'new', '--mode', 'target', '--tid', '1', '-T', SAN_IQN]);
  for (const [lun, size] of Object.entries(LUNS)) {
    writeFileSync(lunFile(Number(lun)), '');
    truncateSync(lunFile(Number(lun)), size);
    await tgtd.tgtadm(['--op', 'new', '--mode', 'logicalunit', '--tid', '1', '--lun', lun, '-b', lunFile(Number(lun))]);
  }
  // the "SAN" admin opened the target to every initiator; the static backend does not manage masking
  await tgtd.tgtadm(['--op', 'bind', '--mode', 'target', '--tid', '1', '-I', 'ALL']);
  writeFileSync(inventoryFile, inventory());
});

afterAll(async () => {
  await tgtd?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe('static controller', () => {
  it('advertises no snapshots or clones: CreateSnapshot is UNIMPLEMENTED, a content source INVALID_ARGUMENT', async () => {
    const svc = await newService();
    const caps = await call<{ capabilities: { rpc: { type: string } }[] }>(svc, 'ControllerGetCapabilities', {});
    expect(caps.capabilities.map((c) => c.rpc.type)).not.toEqual(expect.arrayContaining(['CREATE_DELETE_SNAPSHOT']));
    expect(caps.capabilities.map((c) => c.rpc.type).filter((t) => /SNAPSHOT|CLONE/.test(t))).toEqual([]);
    expect(await codeOf(call(svc, 'CreateSnapshot', { name: 's', source_volume_id: 'static:0123456789abcdef0123456789abcdef' }))).toBe(status.UNIMPLEMENTED);
    expect(await codeOf(call(svc, 'ListSnapshots', {}))).toBe(status.UNIMPLEMENTED);
    expect(await codeOf(call(svc, 'CreateVolume', { name: 'pvc-clone', capacity_range: null, volume_capabilities: [mountCap], parameters: {}, secrets: {}, volume_content_source: { type: 'volume', volume: { volume_id: 'static:0123456789abcdef0123456789abcdef' } } }))).toBe(status.INVALID_ARGUMENT);
    await svc.stop();
  });

  it('claims the smallest free LUN that fits, releases it, and persists claims', async () => {
    const svc = await newService();
    expect(await svc.checkBackend()).toBeNull();
    const a = await create(svc, 'pvc-a', 10 * MiB);
    expect(a.volume_context).toMatchObject({ iqn: SAN_IQN, lun: '5', targetPortal: tgtd.portal, portals: JSON.stringify([tgtd.portal]) });
    expect(a.capacity_bytes).toBe(12 * MiB);
    expect((await create(svc, 'pvc-a', 10 * MiB)).volume_id).toBe(a.volume_id);
    const exact = await create(svc, 'pvc-exact', 8 * MiB, 8 * MiB);
    expect(exact.volume_context.lun).toBe('2'); // LUN 4 is also 8 MiB but needs CHAP
    expect(await codeOf(create(svc, 'pvc-too-big', 64 * MiB))).toBe(status.OUT_OF_RANGE);

    const cap = await call<{ available_capacity: number; maximum_volume_size: { value: number } }>(svc, 'GetCapacity', { volume_capabilities: [], parameters: {} });
    expect(cap).toMatchObject({ available_capacity: 48 * MiB, maximum_volume_size: { value: 32 * MiB } });

    const pub = await publish(svc, a.volume_id, NODE_A);
    expect(pub.publish_context).toMatchObject({ iqn: SAN_IQN, lun: '5' });
    expect(await inq(a, NODE_A)).toBe(0);
    expect(await codeOf(publish(svc, a.volume_id, NODE_B))).toBe(status.FAILED_PRECONDITION);
    expect(await codeOf(del(svc, a.volume_id))).toBe(status.FAILED_PRECONDITION);

    // a restarted controller knows the claims
    const again = await newService();
    const list = await call<{ entries: { volume: Vol; status: { published_node_ids: string[] } }[] }>(again, 'ListVolumes', { max_entries: 0, starting_token: '' });
    expect(list.entries.map((e) => [e.volume.volume_id, e.status.published_node_ids])).toEqual([[a.volume_id, [NODE_A]], [exact.volume_id, []]]);

    await unpublish(again, a.volume_id, NODE_A);
    await del(again, a.volume_id);
    await del(again, exact.volume_id);
    // released: the same LUN is handed out again
    const b = await create(again, 'pvc-b', 10 * MiB);
    expect(b.volume_context.lun).toBe('5');
    await del(again, b.volume_id);
  });

  it('runs out with RESOURCE_EXHAUSTED and serves CHAP LUNs only to StorageClasses naming their secret', async () => {
    const svc = await newService();
    const chap = await create(svc, 'pvc-chap', 1, 0, { chapSecretRef: 'san-chap' });
    expect(chap.volume_context).toMatchObject({ lun: '4', sessionCHAPAuth: 'true' });
    expect(await codeOf(create(svc, 'pvc-chap-2', 1, 0, { chapSecretRef: 'san-chap' }))).toBe(status.RESOURCE_EXHAUSTED);
    const plain = await Promise.all(['p1', 'p2', 'p3', 'p4'].map((n) => create(svc, n, 1)));
    expect(new Set(plain.map((v) => v.volume_context.lun))).toEqual(new Set(['1', '2', '3', '5']));
    expect(plain.every((v) => v.volume_context.sessionCHAPAuth === undefined)).toBe(true);
    expect(await codeOf(create(svc, 'p5', 1))).toBe(status.RESOURCE_EXHAUSTED);
    for (const v of [chap, ...plain]) await del(svc, v.volume_id);
  });

  it('wipes the first MiBs of a released LUN where the inventory says it is reachable', async () => {
    const svc = await newService(config(1));
    const vol = await create(svc, 'pvc-wipe', 16 * MiB, 16 * MiB);
    expect(vol.volume_context.lun).toBe('1');
    const pattern = Buffer.alloc(2 * MiB, 0xab);
    writeFileSync(lunFile(1), pattern, { flag: 'r+' });
    await del(svc, vol.volume_id);
    const after = readFileSync(lunFile(1)).subarray(0, 2 * MiB);
    expect(after.subarray(0, MiB).every((b) => b === 0)).toBe(true);
    expect(after.subarray(MiB).every((b) => b === 0xab)).toBe(true);

    // LUN 5 has no wipePath: released without touching it
    const noWipe = await create(svc, 'pvc-nowipe', 12 * MiB, 12 * MiB);
    writeFileSync(lunFile(5), pattern.subarray(0, MiB), { flag: 'r+' });
    await del(svc, noWipe.volume_id);
    expect(readFileSync(lunFile(5)).subarray(0, MiB).every((b) => b === 0xab)).toBe(true);
  });

  it('expands only within the LUN the inventory lists', async () => {
    const svc = await newService();
    const vol = await create(svc, 'pvc-grow', 16 * MiB, 16 * MiB);
    const expand = (bytes: number) => call<{ capacity_bytes: number; node_expansion_required: boolean }>(svc, 'ControllerExpandVolume', { volume_id: vol.volume_id, capacity_range: { required_bytes: bytes, limit_bytes: 0 }, secrets: {}, volume_capability: null });
    expect(await codeOf(expand(24 * MiB))).toBe(status.OUT_OF_RANGE);
    // the admin grew the LUN on the SAN and raised its size in the inventory
    writeFileSync(inventoryFile, inventory({ ...LUNS, 1: 32 * MiB }));
    expect(await expand(24 * MiB)).toEqual({ capacity_bytes: 24 * MiB, node_expansion_required: true });
    writeFileSync(inventoryFile, inventory());
    await del(svc, vol.volume_id);
  });

  it('reports a broken inventory through the backend check and CreateVolume, never through Probe', async () => {
    writeFileSync(inventoryFile, 'luns:\n  - iqn: not-an-iqn\n    lun: 1\n    portal: 127.0.0.1\n    sizeBytes: 1\n');
    const svc = await newService();
    expect(await svc.checkBackend()).toMatch(/target IQN "not-an-iqn" is not valid/);
    expect(svc.backendReachable()).toBe(false);
    // a restart cannot mend the file: Probe stays ready, so kubelet does not restart the controller in a loop
    expect(await svc.probe()).toBeNull();
    expect(await codeOf(create(svc, 'pvc-broken', 1))).toBe(status.FAILED_PRECONDITION);
    // the check Probe started may still be reading the broken file: the next one must read the mended one
    expect(await svc.checkBackend()).toMatch(/not-an-iqn/);
    writeFileSync(inventoryFile, inventory());
    expect(await svc.checkBackend()).toBeNull();
    expect(svc.backendReachable()).toBe(true);
  });
});

describe('inventory parsing', () => {
  it('accepts portal or portals and rejects duplicates, unknown keys and bad sizes', () => {
    const ok = parseInventory({ luns: [{ iqn: SAN_IQN, lun: 0, portal: '10.0.0.5', sizeBytes: 5 }] }, 'x');
    expect(ok[0]).toMatchObject({ key: `${SAN_IQN}/0`, portals: ['10.0.0.5:3260'] });
    expect(parseInventory(null, 'x')).toEqual([]);
    const entry = { iqn: SAN_IQN, lun: 1, portals: ['10.0.0.5:3260'], sizeBytes: 5 };
    expect(() => parseInventory({ luns: [entry, entry] }, 'x')).toThrow(/listed twice/);
    expect(() => parseInventory({ luns: [{ ...entry, size: 1 }] }, 'x')).toThrow(/unknown key size/);
    expect(() => parseInventory({ luns: [{ ...entry, sizeBytes: '5Gi' }] }, 'x')).toThrow(/sizeBytes/);
    expect(() => parseInventory({ luns: [{ ...entry, portals: [] }] }, 'x')).toThrow(/portals/);
    expect(() => parseInventory({ luns: [{ ...entry, wipePath: 'relative' }] }, 'x')).toThrow(/wipePath/);
  });
});
