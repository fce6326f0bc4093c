// The Controller service with the tgt backend against a real tgtd on 127.0.0.1, checked the way an
// operator would: which initiator can log in (libiscsi's iscsi-inq), what size the LUN has
// (iscsi-readcapacity16), what tgtd shows, and that restarts of tgtd and of the controller lose nothing.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import { codeOf, CsiClient } from '../helpers/client.js';
import { DEFAULT_COPY_TIMEOUT_MS, defaultConfig, type Config } from '../../src/config.js';
import { startDriver } from '../../src/driver.js';
import type { VolumeBackend } from '../../src/controller/backend.js';
import { createBackend, createControllerService, type ControllerService } from '../../src/controller/service.js';
import type { AccessModeMode, VolumeCapability } from '../../src/csi/types.js';
import { parseTgtTargets } from '../../src/controller/tgt/tgtadm.js';
import { tgtLunWwid } from '../../src/controller/tgt/wwid.js';
import { createLogger } from '../../src/log.js';
import { ProcessRunner, type CommandRunner } from '../../src/runner.js';
import type { CallContext } from '../../src/server/service.js';
import { startTgtd, type TgtDaemon } from '../sim/tgtd.js';

const MiB = 1024 * 1024;
const PREFIX = 'iqn.2026-11.dev.tsdriver.test';
const NODE_A = 'iqn.2026-11.dev.test:node-a';
const NODE_B = 'iqn.2026-11.dev.test:node-b';
const CHAP = { 'node.session.auth.username': 'volchap', 'node.session.auth.password': 'chap-secret-123' };
const logger = createLogger('silent');
const ctx: CallContext = { logger, requestId: 'test', method: 'test' };

const tmp = mkdtempSync(join(tmpdir(), 'ctrl-tgt-'));
let tgtd: TgtDaemon;
let svc: ControllerService;

function config(daemon: TgtDaemon, stateDir = join(tmp, 'state')): Config {
  const cfg = defaultConfig();
  cfg.stateDir = stateDir;
  cfg.controller.defaultVolumeSizeBytes = 32 * MiB;
  cfg.controller.tgt = { controlPort: daemon.controlPort, portals: [daemon.portal], poolDir: join(tmp, 'pool'), iqnPrefix: PREFIX, sharedTargetName: 'shared', copyTimeoutMs: DEFAULT_COPY_TIMEOUT_MS };
  return cfg;
}

/** The running service's backend: the tests call its reconcile() as the periodic timer does. */
let backend: VolumeBackend;

/** Every tgtadm argv the driver ran (secrets as placeholders), to check what it never does. */
const tgtadmCalls: string[][] = [];
const lunDeletes = (): string[][] => tgtadmCalls.filter((a) => a.includes('delete') && a.includes('logicalunit'));

function recording(inner: CommandRunner): CommandRunner {
  return {
    stats: inner.stats,
    run: (name, args, opts) => {
      if (name === 'tgtadm') tgtadmCalls.push(args.map(String));
      return inner.run(name, args, opts);
    },
  };
}

async function newService(cfg: Config): Promise<ControllerService> {
  const runner = recording(new ProcessRunner(cfg.commands, [], logger));
  backend = createBackend({ cfg, runner, logger, reconcileIntervalMs: 0 });
  const s = createControllerService({ cfg, runner, logger, backend });
  await s.start();
  return s;
}

const mountCap = (mode: AccessModeMode = 'SINGLE_NODE_WRITER'): VolumeCapability => ({ access_mode: { mode }, access_type: 'mount', mount: { fs_type: '', mount_flags: [], volume_mount_group: '' } });
const blockCap = (mode: AccessModeMode = 'SINGLE_NODE_WRITER'): VolumeCapability => ({ access_mode: { mode }, access_type: 'block', block: {} });

type Obj = Record<string, unknown>;
function call<T = Obj>(method: string, req: Obj, s: ControllerService = svc): Promise<T> {
  const h = s[method];
  if (!h) throw new Error(`no handler ${method}`);
  return h(req, { ...ctx, method }) as Promise<T>;
}


interface Vol { volume_id: string; capacity_bytes: number; volume_context: Record<string, string> }

async function create(name: string, opts: { bytes?: number; limit?: number; caps?: VolumeCapability[]; parameters?: Record<string, string>; secrets?: Record<string, string> } = {}): Promise<Vol> {
  const res = await call<{ volume: Vol }>('CreateVolume', {
    name,
    capacity_range: opts.bytes === undefined && opts.limit === undefined ? null : { required_bytes: opts.bytes ?? 0, limit_bytes: opts.limit ?? 0 },
    volume_capabilities: opts.caps ?? [mountCap()],
    parameters: opts.parameters ?? {},
    secrets: opts.secrets ?? {},
    volume_content_source: null,
    accessibility_requirements: null,
    mutable_parameters: {},
  });
  return res.volume;
}

function publish(id: string, node: string, opts: { readonly?: boolean; cap?: VolumeCapability; secrets?: Record<string, string> } = {}, s = svc): Promise<{ publish_context: Record<string, string> }> {
  return call('ControllerPublishVolume', { volume_id: id, node_id: node, volume_capability: opts.cap ?? mountCap(), readonly: opts.readonly ?? false, secrets: opts.secrets ?? {}, volume_context: {} }, s);
}
const unpublish = (id: string, node: string, s = svc) => call('ControllerUnpublishVolume', { volume_id: id, node_id: node, secrets: {} }, s);
const del = (id: string, s = svc) => call('DeleteVolume', { volume_id: id, secrets: {} }, s);

/** Runs a libiscsi tool as the given initiator; CHAP password through libiscsi's environment variable. */
function libiscsi(tool: string, initiator: string, url: string, password?: string, extra: string[] = []): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(tool, ['-i', initiator, ...extra, url], { timeout: 20_000, env: { ...process.env, ...(password ? { LIBISCSI_CHAP_PASSWORD: password } : {}) } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

function lunUrl(vol: Vol, user?: string, port = tgtd.port): string {
  return `iscsi://${user ? `${user}@` : ''}127.0.0.1:${port}/${vol.volume_context.iqn}/${vol.volume_context.lun}`;
}

const inq = (vol: Vol, initiator: string, creds?: { user: string; password: string }) => libiscsi('iscsi-inq', initiator, lunUrl(vol, creds?.user), creds?.password);

async function lunBytes(vol: Vol, initiator: string): Promise<number> {
  const r = await libiscsi('iscsi-readcapacity16', initiator, lunUrl(vol));
  const m = /Total size:(\d+)/.exec(r.out);
  if (!m) throw new Error(`iscsi-readcapacity16 failed: ${r.out}`);
  return Number(m[1]);
}

async function showTargets() {
  return parseTgtTargets(await tgtd.tgtadm(['--op', 'show', '--mode', 'target']));
}

/** What a node's udev builds the WWID from: VPD pages 0x83 (device identification) and 0x80 (serial). */
async function vpdIds(vol: Vol, initiator: string): Promise<string> {
  const pages = await Promise.all(['131', '128'].map((page) => libiscsi('iscsi-inq', initiator, lunUrl(vol), undefined, ['-e', '1', '-c', page])));
  for (const p of pages) if (p.code !== 0) throw new Error(`iscsi-inq failed: ${p.out}`);
  return pages.map((p) => p.out).join('');
}

async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Clients and watchers a test started: stopped after each test, also when it failed half-way. */
const background: { stop: () => Promise<unknown> }[] = [];

const nexusesOf = async (vol: Vol): Promise<string[]> => ((await showTargets()).find((t) => t.name === vol.volume_context.iqn)?.nexuses ?? []).map((n) => n.initiator);

/**
 * A libiscsi initiator that stays logged in with a read always in flight (iscsi-perf), like a node
 * with a mounted filesystem. iscsi-perf exits at the first failed command, so `running()` after an
 * operation means no command failed meanwhile.
 */
async function loggedInClient(vol: Vol, initiator: string): Promise<{ running: () => boolean; output: () => string; stop: () => Promise<void> }> {
  const child = spawn('iscsi-perf', ['-i', initiator, '-m', '1', '-b', '8', lunUrl(vol)], { stdio: ['ignore', 'pipe', 'pipe'] });
  background.push({ stop: async () => { child.kill('SIGKILL'); } }); // if the login below never happens
  let out = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const running = () => child.exitCode === null && child.signalCode === null;
  await until(`${initiator} logged in to ${vol.volume_context.iqn}`, async () => {
    if (!running()) throw new Error(`iscsi-perf exited: ${out}`);
    return (await nexusesOf(vol)).includes(initiator);
  });
  const handle = {
    running,
    output: () => out,
    stop: async () => {
      if (running()) child.kill('SIGINT');
      await exited;
      await until(`${initiator} logged out`, async () => !(await nexusesOf(vol)).includes(initiator));
    },
  };
  background.push(handle);
  return handle;
}

/** Polls tgtd's listing until stopped; counts the polls in which the volume's LUN was missing. */
function watchLun(vol: Vol): { stop: () => Promise<{ polls: number; missing: number }> } {
  let stopped = false;
  let polls = 0;
  let missing = 0;
  const loop = (async () => {
    while (!stopped) {
      const t = (await showTargets().catch(() => [])).find((x) => x.name === vol.volume_context.iqn);
      polls += 1;
      if (!t?.luns.some((l) => l.lun === Number(vol.volume_context.lun))) missing += 1;
    }
  })();
  const handle = { stop: async () => { stopped = true; await loop; return { polls, missing }; } };
  background.push(handle);
  return handle;
}

function expandTo(vol: Vol, bytes: number) {
  return call<{ capacity_bytes: number; node_expansion_required: boolean }>('ControllerExpandVolume', { volume_id: vol.volume_id, capacity_range: { required_bytes: bytes, limit_bytes: 0 }, secrets: {}, volume_capability: null });
}

async function failureOf(p: Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await p;
  } catch (e) {
    return e as { code: number; message: string };
  }
  throw new Error('did not fail');
}

type Condition = { abnormal: boolean; message: string };
async function conditionOf(vol: Vol): Promise<Condition> {
  return (await call<{ status: { volume_condition: Condition } }>('ControllerGetVolume', { volume_id: vol.volume_id })).status.volume_condition;
}

async function cleanupAll(s = svc): Promise<void> {
  const list = await call<{ entries: { volume: Vol; status: { published_node_ids: string[] } }[] }>('ListVolumes', { max_entries: 0, starting_token: '' }, s);
  for (const e of list.entries) {
    for (const n of e.status.published_node_ids) await unpublish(e.volume.volume_id, n, s);
    await del(e.volume.volume_id, s);
  }
}

beforeAll(async () => {
  tgtd = await startTgtd();
  svc = await newService(config(tgtd));
});

afterEach(async () => {
  for (const h of background.splice(0)) await h.stop().catch(() => undefined);
  await cleanupAll();
});

afterAll(async () => {
  await svc?.stop();
  await tgtd?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe('tgt controller: lifecycle', () => {
  it('creates, publishes to one node only, unpublishes and deletes a volume', async () => {
    const vol = await create('pvc-lifecycle', { bytes: 64 * MiB, parameters: { fsType: 'ext4' } });
    expect(vol.volume_id).toMatch(/^tgt:[0-9a-f]{32}$/);
    expect(vol.capacity_bytes).toBe(64 * MiB);
    expect(vol.volume_context).toMatchObject({ targetPortal: tgtd.portal, portals: JSON.stringify([tgtd.portal]), lun: '1', fsType: 'ext4' });
    expect(vol.volume_context.iqn).toMatch(new RegExp(`^${PREFIX.replace(/\./g, '\\.')}:pvc-lifecycle-[0-9a-f]{16}$`));

    // nobody may log in before ControllerPublishVolume
    expect((await inq(vol, NODE_A)).out).toMatch(/Target not found\(515\)/);

    const pub = await publish(vol.volume_id, NODE_A);
    expect(pub.publish_context).toMatchObject({ iqn: vol.volume_context.iqn, lun: '1', targetPortal: tgtd.portal });
    // the LUN's identity: naa.<tgt's NAA 6 of the SCSI ID tgtd shows for it>, in both contexts
    const scsiId = (await showTargets()).find((t) => t.name === vol.volume_context.iqn)!.luns.find((l) => l.lun === 1)!.scsiId;
    expect(scsiId).toMatch(/^csi[0-9a-f]{16}$/);
    expect(pub.publish_context.wwid).toBe(tgtLunWwid(scsiId));
    expect(vol.volume_context.wwid).toBe(pub.publish_context.wwid);
    expect((await inq(vol, NODE_A)).code).toBe(0);
    const other = await inq(vol, NODE_B);
    expect(other.code).not.toBe(0);
    expect(other.out).toMatch(/Target not found\(515\)/);
    expect(await lunBytes(vol, NODE_A)).toBe(64 * MiB);

    const got = await call<{ volume: Vol; status: { published_node_ids: string[]; volume_condition: { abnormal: boolean } } }>('ControllerGetVolume', { volume_id: vol.volume_id });
    expect(got.status.published_node_ids).toEqual([NODE_A]);
    expect(got.status.volume_condition.abnormal).toBe(false);

    expect(await codeOf(del(vol.volume_id))).toBe(status.FAILED_PRECONDITION);
    await unpublish(vol.volume_id, NODE_A);
    expect((await inq(vol, NODE_A)).out).toMatch(/Target not found\(515\)/);

    const file = join(tmp, 'pool', `${vol.volume_id.slice(4)}.img`);
    expect(existsSync(file)).toBe(true);
    await del(vol.volume_id);
    expect(existsSync(file)).toBe(false);
    expect((await showTargets()).some((t) => t.name === vol.volume_context.iqn)).toBe(false);
    // idempotent
    await del(vol.volume_id);
    await unpublish(vol.volume_id, NODE_A);
  });

  it('answers a repeated create with the same volume and a different size with ALREADY_EXISTS', async () => {
    const a = await create('pvc-twice', { bytes: 16 * MiB, limit: 16 * MiB });
    const b = await create('pvc-twice', { bytes: 16 * MiB, limit: 16 * MiB });
    expect(b.volume_id).toBe(a.volume_id);
    expect(await codeOf(create('pvc-twice', { bytes: 32 * MiB, limit: 32 * MiB }))).toBe(status.ALREADY_EXISTS);
    expect(await codeOf(create('pvc-twice', { bytes: 16 * MiB, caps: [blockCap()] }))).toBe(status.ALREADY_EXISTS);
    expect((await showTargets()).filter((t) => t.name === a.volume_context.iqn)).toHaveLength(1);
  });

  it('honours capacity ranges exactly and uses the default without one', async () => {
    expect((await create('pvc-exact', { bytes: 10 * MiB + 1000, limit: 10 * MiB + 1000 })).capacity_bytes).toBe(10 * MiB + 1000);
    expect((await create('pvc-default')).capacity_bytes).toBe(32 * MiB);
    expect((await create('pvc-limit-only', { limit: 8 * MiB })).capacity_bytes).toBe(8 * MiB);
    expect(await codeOf(create('pvc-inverted', { bytes: 2 * MiB, limit: MiB }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(create('pvc-huge', { bytes: 2 ** 52 }))).toBe(status.OUT_OF_RANGE);
  });

  it('accepts 128-character mixed-case names', async () => {
    const name = 'sanity-controller-create-maxlen-AbCdEf'.padEnd(128, 'Xy');
    const vol = await create(name, { bytes: 8 * MiB });
    expect(Buffer.byteLength(vol.volume_context.iqn)).toBeLessThanOrEqual(223);
    await publish(vol.volume_id, NODE_A);
    expect((await inq(vol, NODE_A)).code).toBe(0);
  });
});

describe('tgt controller: request checks', () => {
  it('reports missing arguments before unknown volumes', async () => {
    const fake = 'fake-vol-id';
    expect(await codeOf(call('CreateVolume', { name: '', volume_capabilities: [mountCap()], parameters: {}, secrets: {} }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('CreateVolume', { name: 'x', volume_capabilities: [], parameters: {}, secrets: {} }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('DeleteVolume', { volume_id: '', secrets: {} }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('ControllerPublishVolume', { volume_id: '', node_id: NODE_A, volume_capability: mountCap(), readonly: false, secrets: {}, volume_context: {} }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('ControllerPublishVolume', { volume_id: fake, node_id: '', volume_capability: mountCap(), readonly: false, secrets: {}, volume_context: {} }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('ControllerPublishVolume', { volume_id: fake, node_id: 'fake-node-id', volume_capability: null, readonly: false, secrets: {}, volume_context: {} }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('ControllerUnpublishVolume', { volume_id: '', node_id: NODE_A, secrets: {} }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('ValidateVolumeCapabilities', { volume_id: '', volume_capabilities: [mountCap()], parameters: {} }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('ValidateVolumeCapabilities', { volume_id: fake, volume_capabilities: [], parameters: {} }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('ControllerExpandVolume', { volume_id: '', capacity_range: { required_bytes: MiB, limit_bytes: 0 }, secrets: {}, volume_capability: null }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('ControllerExpandVolume', { volume_id: fake, capacity_range: null, secrets: {}, volume_capability: null }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(call('ControllerGetVolume', { volume_id: '' }))).toBe(status.INVALID_ARGUMENT);
  });

  it('answers unknown volumes and nodes as the spec says', async () => {
    const fake = 'fake-vol-id-123';
    expect(await codeOf(publish(fake, NODE_A))).toBe(status.NOT_FOUND);
    expect(await codeOf(call('ValidateVolumeCapabilities', { volume_id: fake, volume_capabilities: [mountCap()], parameters: {} }))).toBe(status.NOT_FOUND);
    expect(await codeOf(call('ControllerExpandVolume', { volume_id: fake, capacity_range: { required_bytes: MiB, limit_bytes: 0 }, secrets: {}, volume_capability: null }))).toBe(status.NOT_FOUND);
    expect(await codeOf(call('ControllerGetVolume', { volume_id: fake }))).toBe(status.NOT_FOUND);
    expect(await codeOf(del(fake))).toBe(status.OK);
    expect(await codeOf(unpublish(fake, NODE_A))).toBe(status.OK);
    const vol = await create('pvc-nodes', { bytes: 8 * MiB });
    expect(await codeOf(publish(vol.volume_id, 'fake-node-id-1'))).toBe(status.NOT_FOUND);
    expect(await codeOf(unpublish(vol.volume_id, 'fake-node-id-1'))).toBe(status.OK);
  });

  it('rejects bad parameters and content sources', async () => {
    expect(await codeOf(create('p1', { parameters: { targetMode: 'weird' } }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(create('p2', { parameters: { tagetMode: 'shared' } }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(create('p3', { parameters: { fsType: 'ntfs' } }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(create('p4', { parameters: { backend: 'static' } }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(create('p5', { parameters: { targetMode: 'shared', chap: 'true' }, secrets: CHAP }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(create('p6', { parameters: { chap: 'true' }, secrets: { 'node.session.auth.username': 'u' } }))).toBe(status.INVALID_ARGUMENT);
    // a snapshot id this driver never issued is no snapshot of it; an empty one is no id at all
    expect(await codeOf(call('CreateVolume', { name: 'p7', volume_capabilities: [mountCap()], parameters: {}, secrets: {}, volume_content_source: { type: 'snapshot', snapshot: { snapshot_id: 's' } } }))).toBe(status.NOT_FOUND);
    expect(await codeOf(call('CreateVolume', { name: 'p7', volume_capabilities: [mountCap()], parameters: {}, secrets: {}, volume_content_source: { type: 'snapshot', snapshot: { snapshot_id: '' } } }))).toBe(status.INVALID_ARGUMENT);
    // provisioner metadata is accepted
    await create('p8', { bytes: 8 * MiB, parameters: { 'csi.storage.k8s.io/pvc/name': 'data' } });
  });

  it('validates capabilities against the volume', async () => {
    const vol = await create('pvc-validate', { bytes: 8 * MiB });
    const ok = await call<{ confirmed: { volume_capabilities: unknown[] } | null }>('ValidateVolumeCapabilities', { volume_id: vol.volume_id, volume_capabilities: [mountCap()], parameters: {}, volume_context: {}, mutable_parameters: {} });
    expect(ok.confirmed?.volume_capabilities).toHaveLength(1);
    const multi = await call<{ confirmed: unknown; message: string }>('ValidateVolumeCapabilities', { volume_id: vol.volume_id, volume_capabilities: [mountCap('MULTI_NODE_MULTI_WRITER')], parameters: {} });
    expect(multi.confirmed).toBeNull();
    expect(multi.message).toMatch(/raw block/);
    const block = await call<{ confirmed: unknown }>('ValidateVolumeCapabilities', { volume_id: vol.volume_id, volume_capabilities: [blockCap()], parameters: {} });
    expect(block.confirmed).toBeNull();
  });

  it('advertises its capabilities and reports capacity from the pool filesystem', async () => {
    const caps = await call<{ capabilities: { rpc: { type: string } }[] }>('ControllerGetCapabilities', {});
    expect(caps.capabilities.map((c) => c.rpc.type)).toEqual(expect.arrayContaining(['CREATE_DELETE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME', 'LIST_VOLUMES', 'GET_CAPACITY', 'EXPAND_VOLUME', 'LIST_VOLUMES_PUBLISHED_NODES', 'PUBLISH_READONLY', 'GET_VOLUME', 'VOLUME_CONDITION', 'CREATE_DELETE_SNAPSHOT', 'LIST_SNAPSHOTS', 'GET_SNAPSHOT', 'CLONE_VOLUME']));
    const cap = await call<{ available_capacity: number; maximum_volume_size: { value: number } }>('GetCapacity', { volume_capabilities: [], parameters: {}, accessible_topology: null });
    expect(cap.available_capacity).toBeGreaterThan(0);
    expect(cap.maximum_volume_size.value).toBe(cap.available_capacity);
    const none = await call<{ available_capacity: number }>('GetCapacity', { volume_capabilities: [mountCap('MULTI_NODE_MULTI_WRITER')], parameters: {}, accessible_topology: null });
    expect(none.available_capacity).toBe(0);
  });
});

describe('tgt controller: publish rules', () => {
  it('refuses a second node for a single-node volume and a readonly change on the same node', async () => {
    const vol = await create('pvc-single', { bytes: 8 * MiB });
    await publish(vol.volume_id, NODE_A);
    await publish(vol.volume_id, NODE_A); // idempotent
    expect(await codeOf(publish(vol.volume_id, NODE_A, { readonly: true }))).toBe(status.ALREADY_EXISTS);
    expect(await codeOf(publish(vol.volume_id, NODE_B))).toBe(status.FAILED_PRECONDITION);
    expect((await inq(vol, NODE_B)).code).not.toBe(0);
  });

  it('publishes a volume only with the access type and mode it was created for', async () => {
    const vol = await create('pvc-caps', { bytes: 8 * MiB }); // filesystem, SINGLE_NODE_WRITER
    expect(await codeOf(publish(vol.volume_id, NODE_A, { cap: mountCap('MULTI_NODE_READER_ONLY'), readonly: true }))).toBe(status.FAILED_PRECONDITION);
    expect(await codeOf(publish(vol.volume_id, NODE_B, { cap: blockCap('MULTI_NODE_MULTI_WRITER') }))).toBe(status.FAILED_PRECONDITION);
    expect((await inq(vol, NODE_A)).code).not.toBe(0);
    expect((await inq(vol, NODE_B)).code).not.toBe(0);
    await publish(vol.volume_id, NODE_A);
    expect((await inq(vol, NODE_A)).code).toBe(0);
  });

  it('lets exactly one of two concurrent publishes of a single-node volume win', async () => {
    const vol = await create('pvc-race', { bytes: 8 * MiB });
    const codes = await Promise.all([codeOf(publish(vol.volume_id, NODE_A)), codeOf(publish(vol.volume_id, NODE_B))]);
    expect([...codes].sort((x, y) => x - y)).toEqual([status.OK, status.FAILED_PRECONDITION]);
    const winner = codes[0] === status.OK ? NODE_A : NODE_B;
    const loser = winner === NODE_A ? NODE_B : NODE_A;
    expect((await inq(vol, winner)).code).toBe(0);
    expect((await inq(vol, loser)).code).not.toBe(0);
  });

  it('refuses multi-node writers on a filesystem but lets two nodes share a raw block volume', async () => {
    expect(await codeOf(create('pvc-rwx-fs', { caps: [mountCap('MULTI_NODE_MULTI_WRITER')] }))).toBe(status.INVALID_ARGUMENT);
    const vol = await create('pvc-rwx-block', { bytes: 8 * MiB, caps: [blockCap('MULTI_NODE_MULTI_WRITER')] });
    await publish(vol.volume_id, NODE_A, { cap: blockCap('MULTI_NODE_MULTI_WRITER') });
    await publish(vol.volume_id, NODE_B, { cap: blockCap('MULTI_NODE_MULTI_WRITER') });
    expect((await inq(vol, NODE_A)).code).toBe(0);
    expect((await inq(vol, NODE_B)).code).toBe(0);
    await unpublish(vol.volume_id, NODE_A);
    expect((await inq(vol, NODE_A)).code).not.toBe(0);
    expect((await inq(vol, NODE_B)).code).toBe(0);
  });

  it('unpublishes from every node when no node id is given', async () => {
    const vol = await create('pvc-unpub-all', { bytes: 8 * MiB, caps: [blockCap('MULTI_NODE_READER_ONLY')] });
    await publish(vol.volume_id, NODE_A, { cap: blockCap('MULTI_NODE_READER_ONLY'), readonly: true });
    await publish(vol.volume_id, NODE_B, { cap: blockCap('MULTI_NODE_READER_ONLY'), readonly: true });
    await call('ControllerUnpublishVolume', { volume_id: vol.volume_id, node_id: '', secrets: {} });
    expect((await inq(vol, NODE_A)).code).not.toBe(0);
    expect((await inq(vol, NODE_B)).code).not.toBe(0);
    await del(vol.volume_id);
  });
});

describe('tgt controller: shared target', () => {
  it('puts volumes on LUNs of one target and keeps the target until its last volume goes', async () => {
    const params = { targetMode: 'shared' };
    const [a, b] = await Promise.all([create('pvc-sh-a', { bytes: 8 * MiB, parameters: params }), create('pvc-sh-b', { bytes: 8 * MiB, parameters: params })]);
    expect(a.volume_context.iqn).toBe(`${PREFIX}:shared`);
    expect(b.volume_context.iqn).toBe(a.volume_context.iqn);
    expect(new Set([a.volume_context.lun, b.volume_context.lun])).toEqual(new Set(['1', '2']));
    await publish(a.volume_id, NODE_A);
    await publish(b.volume_id, NODE_A);
    expect((await inq(b, NODE_A)).code).toBe(0);
    // the ACL stays while another volume of the target is published to the node
    await unpublish(a.volume_id, NODE_A);
    expect((await inq(b, NODE_A)).code).toBe(0);
    await unpublish(b.volume_id, NODE_A);
    expect((await inq(b, NODE_A)).code).not.toBe(0);
    await del(a.volume_id);
    const t = (await showTargets()).find((x) => x.name === b.volume_context.iqn);
    expect(t?.luns.map((l) => l.lun)).toEqual([0, Number(b.volume_context.lun)]);
    await del(b.volume_id);
    expect((await showTargets()).some((x) => x.name === b.volume_context.iqn)).toBe(false);
  });

  it('serves a named shared target and runs many creates in parallel with distinct tids and LUNs', async () => {
    const dedicated = await Promise.all(Array.from({ length: 6 }, (_, i) => create(`pvc-par-${i}`, { bytes: 4 * MiB })));
    const shared = await Promise.all(Array.from({ length: 6 }, (_, i) => create(`pvc-parsh-${i}`, { bytes: 4 * MiB, parameters: { targetMode: 'shared', sharedTarget: 'team-b' } })));
    const live = await showTargets();
    const tids = live.map((t) => t.tid);
    expect(new Set(tids).size).toBe(tids.length);
    for (const v of dedicated) expect(live.some((t) => t.name === v.volume_context.iqn)).toBe(true);
    const teamB = live.find((t) => t.name === `${PREFIX}:team-b`);
    expect(teamB?.luns.filter((l) => l.lun > 0)).toHaveLength(6);
    expect(new Set(shared.map((v) => v.volume_context.lun)).size).toBe(6);
  });
});

describe('tgt controller: CHAP', () => {
  it('lets the published node in with the right secret only, and keeps the secret out of context and state', async () => {
    const vol = await create('pvc-chap', { bytes: 8 * MiB, parameters: { chap: 'true' }, secrets: CHAP });
    expect(vol.volume_context.sessionCHAPAuth).toBe('true');
    expect(JSON.stringify(vol.volume_context)).not.toContain(CHAP['node.session.auth.password']);
    const pub = await publish(vol.volume_id, NODE_A);
    expect(JSON.stringify(pub.publish_context)).not.toContain(CHAP['node.session.auth.password']);

    expect((await inq(vol, NODE_A, { user: 'volchap', password: 'chap-secret-123' })).code).toBe(0);
    expect((await inq(vol, NODE_A, { user: 'volchap', password: 'wrong-secret' })).out).toMatch(/Authentication failure\(513\)/);
    expect((await inq(vol, NODE_A)).out).toMatch(/Authentication failure\(513\)/);
    expect((await inq(vol, NODE_B, { user: 'volchap', password: 'chap-secret-123' })).out).toMatch(/Target not found\(515\)/);

    const stateDir = join(tmp, 'state', 'controller', 'tgt');
    expect(readFileSync(join(stateDir, 'volumes.json'), 'utf8')).not.toContain(CHAP['node.session.auth.password']);
    expect(statSync(join(stateDir, 'chap-secrets.json')).mode & 0o777).toBe(0o600);
    expect(statSync(stateDir).mode & 0o777).toBe(0o700);

    // an attacher secret with other credentials would lock the node out: refused
    expect(await codeOf(publish(vol.volume_id, NODE_A, { secrets: { ...CHAP, 'node.session.auth.password': 'other-secret' } }))).toBe(status.FAILED_PRECONDITION);
    // another volume may not reuse the user name with another password (tgt has one account per name)
    expect(await codeOf(create('pvc-chap-2', { bytes: 8 * MiB, parameters: { chap: 'true' }, secrets: { ...CHAP, 'node.session.auth.password': 'other-secret' } }))).toBe(status.FAILED_PRECONDITION);

    await unpublish(vol.volume_id, NODE_A);
    await del(vol.volume_id);
    expect(await tgtd.tgtadm(['--op', 'show', '--mode', 'account'])).not.toContain('volchap');
  });

  it('takes CHAP credentials from ControllerPublishVolume secrets when CreateVolume had none', async () => {
    const vol = await create('pvc-chap-late', { bytes: 8 * MiB, parameters: { chap: 'true' } });
    expect(await codeOf(publish(vol.volume_id, NODE_A))).toBe(status.FAILED_PRECONDITION);
    await publish(vol.volume_id, NODE_A, { secrets: CHAP });
    expect((await inq(vol, NODE_A, { user: 'volchap', password: 'chap-secret-123' })).code).toBe(0);
    expect((await inq(vol, NODE_A)).code).not.toBe(0);
  });
});

describe('tgt controller: expansion and listing', () => {
  it('grows the LUN as the initiator sees it and returns exactly the requested size', async () => {
    const vol = await create('pvc-grow', { bytes: 16 * MiB });
    const blockVol = await create('pvc-grow-block', { bytes: 16 * MiB, caps: [blockCap()] });
    await publish(vol.volume_id, NODE_A);
    await publish(blockVol.volume_id, NODE_A, { cap: blockCap() });
    tgtadmCalls.length = 0;
    const wanted = 48 * MiB + 1000;
    const r = await call<{ capacity_bytes: number; node_expansion_required: boolean }>('ControllerExpandVolume', { volume_id: vol.volume_id, capacity_range: { required_bytes: wanted, limit_bytes: 0 }, secrets: {}, volume_capability: mountCap() });
    expect(r).toEqual({ capacity_bytes: wanted, node_expansion_required: true });
    expect(await lunBytes(vol, NODE_A)).toBe(48 * MiB + 1024);
    const b = await call<{ capacity_bytes: number; node_expansion_required: boolean }>('ControllerExpandVolume', { volume_id: blockVol.volume_id, capacity_range: { required_bytes: 32 * MiB, limit_bytes: 0 }, secrets: {}, volume_capability: null });
    expect(b).toEqual({ capacity_bytes: 32 * MiB, node_expansion_required: false });
    expect(await lunBytes(blockVol, NODE_A)).toBe(32 * MiB);
    // repeated: same answer; smaller: no shrink; limit below the size: OUT_OF_RANGE
    expect((await call<{ capacity_bytes: number }>('ControllerExpandVolume', { volume_id: vol.volume_id, capacity_range: { required_bytes: wanted, limit_bytes: 0 }, secrets: {}, volume_capability: null })).capacity_bytes).toBe(wanted);
    expect(await codeOf(call('ControllerExpandVolume', { volume_id: vol.volume_id, capacity_range: { required_bytes: MiB, limit_bytes: 2 * MiB }, secrets: {}, volume_capability: null }))).toBe(status.OUT_OF_RANGE);
    // grown in place: the LUN was never deleted, its SCSI ids (WWID) are the volume's
    expect(lunDeletes()).toEqual([]);
    const lun = (await showTargets()).find((t) => t.name === vol.volume_context.iqn)!.luns.find((l) => l.lun === 1)!;
    expect(lun.scsiId).toMatch(/^csi[0-9a-f]{16}$/);
  });

  it('never takes a LUN away from a logged-in initiator: refuses the growth while one is, grows it in place once none is', async () => {
    const vol = await create('pvc-grow-live', { bytes: 16 * MiB, caps: [blockCap()] });
    await publish(vol.volume_id, NODE_A, { cap: blockCap() });
    const ids = await vpdIds(vol, NODE_A);
    const file = join(tmp, 'pool', `${vol.volume_id.slice(4)}.img`);
    const client = await loggedInClient(vol, NODE_A);
    const watch = watchLun(vol);
    tgtadmCalls.length = 0;

    const refused = await failureOf(expandTo(vol, 32 * MiB));
    expect(refused.code).toBe(status.FAILED_PRECONDITION);
    expect(refused.message).toMatch(new RegExp(`${NODE_A}.*logged in`));
    // nothing changed: neither the state, nor the file, nor what the initiator sees; no command failed
    expect(client.running()).toBe(true);
    expect(backend.get(vol.volume_id)?.capacityBytes).toBe(16 * MiB);
    expect(statSync(file).size).toBe(16 * MiB);
    expect(await lunBytes(vol, NODE_A)).toBe(16 * MiB);
    await client.stop();

    // the resizer's retry once the node logged out: tgtd re-reads the grown file, the LUN stays
    expect(await expandTo(vol, 32 * MiB)).toEqual({ capacity_bytes: 32 * MiB, node_expansion_required: false });
    const seen = await watch.stop();
    expect(seen.polls).toBeGreaterThan(2);
    expect(seen.missing).toBe(0);
    expect(lunDeletes()).toEqual([]);
    expect(await lunBytes(vol, NODE_A)).toBe(32 * MiB);
    expect(await vpdIds(vol, NODE_A)).toBe(ids);
    expect((await showTargets()).find((t) => t.name === vol.volume_context.iqn)?.state).toBe('ready');
  });

  it('refuses to grow a LUN of a shared target while an initiator is logged in to that target for another LUN', async () => {
    const params = { targetMode: 'shared' };
    const a = await create('pvc-sh-grow-a', { bytes: 8 * MiB, parameters: params, caps: [blockCap()] });
    const b = await create('pvc-sh-grow-b', { bytes: 8 * MiB, parameters: params, caps: [blockCap()] });
    await publish(b.volume_id, NODE_B, { cap: blockCap() });
    const client = await loggedInClient(b, NODE_B);
    tgtadmCalls.length = 0;
    expect((await failureOf(expandTo(a, 16 * MiB))).code).toBe(status.FAILED_PRECONDITION);
    expect(client.running()).toBe(true);
    await client.stop();
    expect((await expandTo(a, 16 * MiB)).capacity_bytes).toBe(16 * MiB);
    expect(lunDeletes()).toEqual([]);
    await publish(a.volume_id, NODE_B, { cap: blockCap() });
    expect(await lunBytes(a, NODE_B)).toBe(16 * MiB);
  });

  it('never deletes a LUN on reconcile while an initiator is logged in, even with a size tgtd has not read', async () => {
    const vol = await create('pvc-pending', { bytes: 16 * MiB, caps: [blockCap()] });
    await publish(vol.volume_id, NODE_A, { cap: blockCap() });
    const ids = await vpdIds(vol, NODE_A);
    const client = await loggedInClient(vol, NODE_A);
    // a growth the state records and tgtd has not read (what a crash half-way through an expand leaves)
    await svc.stop();
    const stateFile = join(tmp, 'state', 'controller', 'tgt', 'volumes.json');
    const doc = JSON.parse(readFileSync(stateFile, 'utf8')) as { volumes: Record<string, { capacityBytes: number }> };
    doc.volumes[vol.volume_id]!.capacityBytes = 32 * MiB;
    writeFileSync(stateFile, JSON.stringify(doc));
    tgtadmCalls.length = 0;
    const watch = watchLun(vol);

    svc = await newService(config(tgtd)); // its start() reconciles
    for (let i = 0; i < 5; i++) await backend.reconcile();
    expect(lunDeletes()).toEqual([]);
    expect(client.running()).toBe(true);
    expect(await nexusesOf(vol)).toEqual([NODE_A]);
    const pending = await conditionOf(vol);
    expect(pending.abnormal).toBe(true);
    expect(pending.message).toMatch(/logged in/);
    await client.stop();

    // nobody logged in any more: the next reconcile lets tgtd read the size, in place
    await backend.reconcile();
    const seen = await watch.stop();
    expect(seen.missing).toBe(0);
    expect(lunDeletes()).toEqual([]);
    expect(await lunBytes(vol, NODE_A)).toBe(32 * MiB);
    expect(await vpdIds(vol, NODE_A)).toBe(ids);
    expect((await conditionOf(vol)).abnormal).toBe(false);
  });

  it('pages ListVolumes with opaque tokens and answers a bad token with ABORTED', async () => {
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await create(`pvc-list-${i}`, { bytes: 4 * MiB })).volume_id);
    await publish(ids[1]!, NODE_A);
    type Page = { entries: { volume: Vol; status: { published_node_ids: string[] } }[]; next_token: string };
    const first = await call<Page>('ListVolumes', { max_entries: 2, starting_token: '' });
    expect(first.entries.map((e) => e.volume.volume_id)).toEqual(ids.slice(0, 2));
    expect(first.entries[1]!.status.published_node_ids).toEqual([NODE_A]);
    await unpublish(ids[1]!, NODE_A);
    for (const id of ids.slice(0, 2)) await del(id);
    const added = await create('pvc-list-added', { bytes: 4 * MiB });
    const rest = await call<Page>('ListVolumes', { max_entries: 0, starting_token: first.next_token });
    expect(rest.entries.map((e) => e.volume.volume_id)).toEqual([...ids.slice(2), added.volume_id]);
    expect(rest.next_token).toBe('');
    expect(await codeOf(call('ListVolumes', { max_entries: 0, starting_token: 'invalid-token' }))).toBe(status.ABORTED);
  });
});

describe('tgt controller: restarts', () => {
  it('restores every volume, LUN, account and ACL after tgtd and the controller restart', async () => {
    const plain = await create('pvc-rs-plain', { bytes: 8 * MiB });
    const chap = await create('pvc-rs-chap', { bytes: 8 * MiB, parameters: { chap: 'true' }, secrets: CHAP });
    const sharedA = await create('pvc-rs-sh-a', { bytes: 8 * MiB, parameters: { targetMode: 'shared' } });
    const sharedB = await create('pvc-rs-sh-b', { bytes: 8 * MiB, parameters: { targetMode: 'shared' } });
    const grown = await create('pvc-rs-grown', { bytes: 8 * MiB });
    await publish(plain.volume_id, NODE_A);
    await publish(chap.volume_id, NODE_B);
    await publish(sharedB.volume_id, NODE_A);
    await call('ControllerExpandVolume', { volume_id: grown.volume_id, capacity_range: { required_bytes: 24 * MiB, limit_bytes: 0 }, secrets: {}, volume_capability: null });
    await publish(grown.volume_id, NODE_A);
    const before = await showTargets();

    // controller restart alone: the state is read back, nothing changes in tgtd
    await svc.stop();
    svc = await newService(config(tgtd));
    expect((await call<{ entries: unknown[] }>('ListVolumes', { max_entries: 0, starting_token: '' })).entries).toHaveLength(5);

    // tgtd restart on the same port: it comes back empty, the controller's start reconciles it
    const port = tgtd.port;
    await tgtd.stop();
    tgtd = await startTgtd({ port });
    expect(await showTargets()).toEqual([]);
    await svc.stop();
    svc = await newService(config(tgtd));

    const after = await showTargets();
    const summary = (ts: typeof before) => ts.map((t) => ({ tid: t.tid, name: t.name, acls: [...t.acls].sort(), accounts: t.accounts, luns: t.luns.map((l) => [l.lun, l.backingStorePath, l.scsiId, l.sizeMb]) })).sort((x, y) => x.tid - y.tid);
    expect(summary(after)).toEqual(summary(before));
    expect((await inq(plain, NODE_A)).code).toBe(0);
    expect((await inq(plain, NODE_B)).code).not.toBe(0);
    expect((await inq(chap, NODE_B, { user: 'volchap', password: 'chap-secret-123' })).code).toBe(0);
    expect((await inq(chap, NODE_B)).code).not.toBe(0);
    expect((await inq(sharedB, NODE_A)).code).toBe(0);
    expect((await inq(sharedA, NODE_B)).code).not.toBe(0);
    expect(await lunBytes(grown, NODE_A)).toBe(24 * MiB);
  });

  it('repairs tgtd on the periodic reconcile, removing ACLs the state does not know', async () => {
    const vol = await create('pvc-drift', { bytes: 8 * MiB });
    await publish(vol.volume_id, NODE_A);
    const tid = (await showTargets()).find((t) => t.name === vol.volume_context.iqn)!.tid;
    await tgtd.tgtadm(['--op', 'bind', '--mode', 'target', '--tid', String(tid), '--initiator-name', NODE_B]);
    await tgtd.tgtadm(['--op', 'unbind', '--mode', 'target', '--tid', String(tid), '--initiator-name', NODE_A]);
    await tgtd.tgtadm(['--op', 'delete', '--mode', 'logicalunit', '--tid', String(tid), '--lun', '1']);
    // tgtd itself answers: only the volume's condition tells what is wrong
    expect(await svc.checkBackend()).toBeNull();
    const cond = await call<{ status: { volume_condition: { abnormal: boolean; message: string } } }>('ControllerGetVolume', { volume_id: vol.volume_id });
    expect(cond.status.volume_condition.abnormal).toBe(true);
    expect(cond.status.volume_condition.message).toMatch(/LUN 1/);
    await backend.reconcile();
    expect((await inq(vol, NODE_A)).code).toBe(0);
    expect((await inq(vol, NODE_B)).code).not.toBe(0);
  });
});

/** A tgtd on a control port and iSCSI port of the test's choosing, so it can come back on the same ones. */
async function tgtdOn(controlPort: number, port: number): Promise<{ stop(): Promise<void> }> {
  const child = spawn('tgtd', ['-f', '-C', String(controlPort), '--iscsi', `portal=127.0.0.1:${port}`], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const tgtadm = (args: string[]) => promisify(execFile)('tgtadm', ['-C', String(controlPort), '--lld', 'iscsi', ...args], { timeout: 10_000 });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if ((await tgtadm(['--op', 'show', '--mode', 'portal']).catch(() => ({ stdout: '' }))).stdout.includes('Portal:')) break;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`tgtd -C ${controlPort} did not start`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    async stop() {
      const shown = (await tgtadm(['--op', 'show', '--mode', 'target'])).stdout;
      for (const m of shown.matchAll(/^Target (\d+):/gm)) await tgtadm(['--op', 'delete', '--force', '--mode', 'target', '--tid', m[1]!]);
      await tgtadm(['--op', 'delete', '--mode', 'system']);
      await exited;
    },
  };
}

describe('tgt controller: tgtd unreachable', () => {
  it('stays ready (no restart loop), answers UNAVAILABLE naming tgtd, logs the change once each way, restores the targets when tgtd is back', async () => {
    const first = await startTgtd();
    const { controlPort, port } = first;
    const dir = mkdtempSync(join(tmp, 'down-'));
    const cfg = config(first, join(dir, 'state'));
    cfg.mode = 'controller';
    cfg.endpoint = `unix://${dir}/csi.sock`;
    cfg.timeouts.probeCacheMs = 0; // every Probe runs the checks
    cfg.controller.tgt.poolDir = join(dir, 'pool');
    const lines: { level: string; msg: string }[] = [];
    const sink = new Writable({ write(chunk: Buffer, _e, cb) { for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l)); cb(); } });
    const driver = await startDriver(cfg, createLogger('info', sink));
    const client = new CsiClient(cfg.endpoint);
    let second: { stop(): Promise<void> } | undefined;
    const cap = { mount: { fs_type: '', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
    const createReq = (name: string) => ({ name, capacity_range: { required_bytes: 4 * MiB, limit_bytes: 0 }, volume_capabilities: [cap], parameters: {}, secrets: {} });
    const downLines = () => lines.filter((l) => l.level === 'warn' && /^tgtd is not reachable/.test(l.msg));
    const backLines = () => lines.filter((l) => l.level === 'warn' && /^tgtd is reachable again/.test(l.msg));
    try {
      const vol = (await client.call<{ volume: Vol }>('Controller', 'CreateVolume', createReq('pvc-tgtd-down'))).volume;
      await client.call('Controller', 'ControllerPublishVolume', { volume_id: vol.volume_id, node_id: NODE_A, volume_capability: cap, readonly: false, secrets: {}, volume_context: {} });
      await first.stop();

      // Probe (what the livenessprobe sidecar turns into /healthz) answers ready again and again
      for (let i = 0; i < 3; i++) {
        const probe = await client.call<{ ready: { value: boolean } }>('Identity', 'Probe', {});
        expect(probe.ready.value).toBe(true);
      }
      // the calls that need tgtd say so, with the reason
      for (const name of ['pvc-while-down-1', 'pvc-while-down-2']) {
        const err = await client.call('Controller', 'CreateVolume', createReq(name)).catch((e: { code: number; details: string }) => e);
        expect((err as { code: number }).code).toBe(status.UNAVAILABLE);
        expect((err as { details: string }).details).toMatch(new RegExp(`^tgtd is not reachable through tgtadm -C ${controlPort}: .*tgt daemon`));
      }
      const pub = await client.call('Controller', 'ControllerPublishVolume', { volume_id: vol.volume_id, node_id: NODE_A, volume_capability: cap, readonly: false, secrets: {}, volume_context: {} }).catch((e: { code: number }) => e);
      expect((pub as { code: number }).code).toBe(status.UNAVAILABLE);
      expect(downLines()).toHaveLength(1);
      expect(lines.filter((l) => l.level === 'error')).toEqual([]);

      // tgtd back, empty, on the same ports: the first call that reaches it restores the targets
      second = await tgtdOn(controlPort, port);
      const again = (await client.call<{ volume: Vol }>('Controller', 'CreateVolume', createReq('pvc-after-back'))).volume;
      expect(again.volume_id).toMatch(/^tgt:/);
      await expect.poll(async () => (await libiscsi('iscsi-inq', NODE_A, lunUrl(vol, undefined, port))).code, { timeout: 15_000, interval: 200 }).toBe(0);
      expect(backLines()).toHaveLength(1);
      expect(downLines()).toHaveLength(1);
      expect((await client.call<{ ready: { value: boolean } }>('Identity', 'Probe', {})).ready.value).toBe(true);
      for (const id of [vol.volume_id, again.volume_id]) {
        await client.call('Controller', 'ControllerUnpublishVolume', { volume_id: id, node_id: '', secrets: {} });
        await client.call('Controller', 'DeleteVolume', { volume_id: id, secrets: {} });
      }
    } finally {
      client.close();
      await driver.stop();
      await second?.stop();
    }
  });
});
