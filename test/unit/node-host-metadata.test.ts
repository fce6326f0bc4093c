import fs, { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Internal, ResourceExhausted } from '../../src/errors.js';
import { Secret } from '../../src/log.js';
import { MetadataStore, METADATA_SCHEMA_VERSION, secretPaths, type VolumeRecord } from '../../src/node-host/metadata.js';
import { volumeKey } from '../../src/common/validate.js';
import { spyOnFsyncs } from '../helpers/fsync-spy.js';

function record(volumeId: string, over: Partial<VolumeRecord> = {}): VolumeRecord {
  return {
    volumeId,
    phase: 'staged',
    portals: ['127.0.0.1:3260', '[fd00::10]:3260'],
    iqn: 'iqn.2026-11.io.example:t1',
    lun: 1,
    iface: 'default',
    transport: 'tcp',
    devices: ['sdb', 'sdc'],
    multipath: { dm: 'dm-0', wwid: '36001405abcdef', name: 'mpatha' },
    devicePath: '/dev/dm-0',
    stagingPath: '/var/lib/kubelet/plugins/kubernetes.io/csi/pv/x/globalmount',
    accessType: 'mount',
    accessMode: 'SINGLE_NODE_WRITER',
    fsType: 'ext4',
    mountFlags: ['noatime'],
    readonly: false,
    publishedAt: [],
    stagedAt: '2026-11-21T22:00:00.000Z',
    ...over,
  };
}

let stateDir: string;
let store: MetadataStore;

beforeEach(async () => {
  stateDir = await fsp.mkdtemp(join(tmpdir(), 'host-meta-'));
  store = new MetadataStore(stateDir);
});
afterEach(async () => {
  vi.restoreAllMocks();
  await fsp.rm(stateDir, { recursive: true, force: true });
});

describe('MetadataStore', () => {
  it('saves under <stateDir>/volumes/<volumeKey>/iscsi.json with private modes and loads it back', async () => {
    const r = record('pvc-1');
    await store.save(r);
    const file = join(stateDir, 'volumes', volumeKey('pvc-1'), 'iscsi.json');
    expect(store.filePath('pvc-1')).toBe(file);
    expect((await fsp.stat(file)).mode & 0o777).toBe(0o600);
    expect((await fsp.stat(join(stateDir, 'volumes', volumeKey('pvc-1')))).mode & 0o777).toBe(0o700);
    expect((await fsp.stat(join(stateDir, 'volumes'))).mode & 0o777).toBe(0o700);
    expect(JSON.parse(await fsp.readFile(file, 'utf8')).schemaVersion).toBe(METADATA_SCHEMA_VERSION);
    expect(await store.load('pvc-1')).toEqual({ ...r, schemaVersion: METADATA_SCHEMA_VERSION });
    expect(await store.load('pvc-unknown')).toBeNull();
  });

  it('keeps hostile volume ids inside the state directory', async () => {
    for (const id of ['../../etc', '..', '/etc/passwd', 'a/../../b']) {
      await store.save(record(id));
      expect(store.filePath(id).startsWith(join(stateDir, 'volumes') + '/')).toBe(true);
      expect((await store.load(id))?.volumeId).toBe(id);
    }
    expect(await fsp.readdir(stateDir)).toEqual(['volumes']);
    expect(await fsp.readdir(join(stateDir, 'volumes'))).toHaveLength(4);
  });

  it('refuses to write anything that looks like a secret, and writes nothing then', async () => {
    const leaky = { ...record('pvc-2'), chap: { 'node.session.auth.password': 'secretpass123' } } as unknown as VolumeRecord;
    await expect(store.save(leaky)).rejects.toThrow(Internal);
    await expect(store.save(leaky)).rejects.toThrow('refusing to write volume metadata with secret fields ($.chap.node.session.auth.password)');
    await expect(store.save({ ...record('pvc-2'), clientSecret: 'x' } as unknown as VolumeRecord)).rejects.toThrow(/\$\.clientSecret/);
    await expect(store.save({ ...record('pvc-2'), initiatorName: new Secret('x') } as unknown as VolumeRecord)).rejects.toThrow(/\$\.initiatorName/);
    await expect(fsp.access(store.volumeDir('pvc-2'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(secretPaths(record('x'))).toEqual([]);
  });

  it('replaces a record atomically: a failed write leaves the old record and no temp file', async () => {
    await store.save(record('pvc-3', { lun: 1 }));
    await store.save(record('pvc-3', { lun: 2 }));
    expect((await store.load('pvc-3'))?.lun).toBe(2);
    const rename = vi.spyOn(fs, 'renameSync').mockImplementationOnce(() => {
      throw Object.assign(new Error('disk full'), { code: 'ENOSPC' });
    });
    await expect(store.save(record('pvc-3', { lun: 3 }))).rejects.toThrow('disk full');
    rename.mockRestore();
    expect((await store.load('pvc-3'))?.lun).toBe(2);
    expect(await fsp.readdir(store.volumeDir('pvc-3'))).toEqual(['iscsi.json']);
  });

  it('syncs the file before renaming it into place', async () => {
    const order: string[] = [];
    const rename = vi.spyOn(fs, 'renameSync').mockImplementation(() => {
      order.push('rename');
    });
    spyOnFsyncs((path) => order.push(`sync ${path?.endsWith('.tmp') ? 'file' : 'dir'}`));
    await store.save(record('pvc-4'));
    rename.mockRestore();
    // a new volume: the sync of its directory's entry in volumes/ starts alongside the file's
    expect(order).toEqual(['sync file', 'sync dir', 'rename', 'sync dir']);
  });

  it('reports a corrupt record as INTERNAL naming the file, and the survey skips it and names it', async () => {
    await store.save(record('pvc-good'));
    await store.save(record('pvc-bad'));
    await fsp.writeFile(store.filePath('pvc-bad'), '{"schemaVersion": 1, "volumeId": ');
    await expect(store.load('pvc-bad')).rejects.toThrow(`volume metadata ${store.filePath('pvc-bad')} is not valid JSON`);
    await fsp.writeFile(store.filePath('pvc-bad'), JSON.stringify({ schemaVersion: 99, volumeId: 'pvc-bad' }));
    await expect(store.load('pvc-bad')).rejects.toThrow(/does not match schema version 1/);
    const survey = await store.survey();
    expect(survey.records.map((r) => r.volumeId)).toEqual(['pvc-good']);
    expect(survey.unreadable).toEqual([store.filePath('pvc-bad')]);
  });

  it('lists all staged volumes and those on one target (e.g. other LUNs still in use)', async () => {
    expect((await store.survey()).records).toEqual([]);
    await store.save(record('vol-a', { lun: 1 }));
    await store.save(record('vol-b', { lun: 2, phase: 'attaching' }));
    await store.save(record('vol-c', { iqn: 'iqn.2026-11.io.example:t2' }));
    await fsp.writeFile(join(store.volumeDir('vol-a'), '.iscsi.json.123.abc.tmp'), 'left by a crash');
    expect((await store.survey()).records.map((r) => r.volumeId)).toEqual(['vol-a', 'vol-b', 'vol-c']);
    expect((await store.listByTarget('iqn.2026-11.io.example:t1', 'vol-a')).map((r) => [r.volumeId, r.phase])).toEqual([['vol-b', 'attaching']]);
  });

  it('loads back every phase a record goes through, detaching included', async () => {
    for (const phase of ['attaching', 'staged', 'detaching'] as const) {
      await store.save(record('vol-p', { phase }));
      expect((await store.load('vol-p'))?.phase).toBe(phase);
    }
  });

  it('removes a record and its directory; removing twice is fine', async () => {
    await store.save(record('pvc-5'));
    await store.remove('pvc-5');
    expect(await store.load('pvc-5')).toBeNull();
    await expect(fsp.access(store.volumeDir('pvc-5'))).rejects.toMatchObject({ code: 'ENOENT' });
    await store.remove('pvc-5');
  });
});

describe('MetadataStore.load validates the whole record', () => {
  /** Writes `over` merged into a good record straight to the file, as a corruption or a hand edit would. */
  async function corrupt(volumeId: string, over: Record<string, unknown>, drop: string[] = []): Promise<void> {
    await store.save(record(volumeId));
    const doc = JSON.parse(await fsp.readFile(store.filePath(volumeId), 'utf8')) as Record<string, unknown>;
    for (const k of drop) delete doc[k];
    await fsp.writeFile(store.filePath(volumeId), JSON.stringify({ ...doc, ...over }));
  }
  const SECRETISH = 'hunter2-secret-value';

  const cases: { what: string; over: Record<string, unknown>; drop?: string[]; field: string }[] = [
    { what: 'a number among the portals', over: { portals: [3260] }, field: 'portals[0]' },
    { what: 'a number among the published paths', over: { publishedAt: [42] }, field: 'publishedAt[0]' },
    { what: 'no portals', over: { portals: [] }, field: 'portals' },
    { what: 'a portal not in canonical form', over: { portals: ['127.0.0.1'] }, field: 'portals[0]' },
    { what: 'a portal that is no portal', over: { portals: [SECRETISH] }, field: 'portals[0]' },
    { what: 'a volume id of another type', over: { volumeId: 7 }, field: 'volumeId' },
    { what: 'an unknown phase', over: { phase: 'mounted' }, field: 'phase' },
    { what: 'an IQN that is no IQN', over: { iqn: SECRETISH }, field: 'iqn' },
    { what: 'a LUN as a string', over: { lun: '1' }, field: 'lun' },
    { what: 'a LUN out of range', over: { lun: 70000 }, field: 'lun' },
    { what: 'a bad iface name', over: { iface: '../x' }, field: 'iface' },
    { what: 'a bad cloned iface', over: { clonedIface: 5 }, field: 'clonedIface' },
    { what: 'a bad initiator name', over: { initiatorName: 'not an iqn' }, field: 'initiatorName' },
    { what: 'a relative staging path', over: { stagingPath: 'relative/path' }, field: 'stagingPath' },
    { what: 'an unknown access type', over: { accessType: 'file' }, field: 'accessType' },
    { what: 'an unknown fsType', over: { fsType: 'ntfs' }, field: 'fsType' },
    { what: 'mount flags that are no strings', over: { mountFlags: [1] }, field: 'mountFlags[0]' },
    { what: 'readonly as a string', over: { readonly: 'false' }, field: 'readonly' },
    { what: 'an unknown access mode', over: { accessMode: 'ANY' }, field: 'accessMode' },
    { what: 'a device name with a slash', over: { devices: ['../sda'] }, field: 'devices[0]' },
    { what: 'devices that are no list', over: { devices: 'sdb' }, field: 'devices' },
    { what: 'a relative device path', over: { devicePath: 'dev/sdb' }, field: 'devicePath' },
    { what: 'a multipath map without wwid', over: { multipath: { dm: 'dm-0' } }, field: 'multipath.wwid' },
    { what: 'a multipath map with a bad dm name', over: { multipath: { dm: '../dm-0', wwid: '36001405ab' } }, field: 'multipath.dm' },
    { what: 'published paths that are no list', over: { publishedAt: '/x' }, field: 'publishedAt' },
    { what: 'a relative published path', over: { publishedAt: ['x'] }, field: 'publishedAt[0]' },
    { what: 'a stagedAt that is no time', over: { stagedAt: 'yesterday' }, field: 'stagedAt' },
    { what: 'a transport of another type', over: { transport: ['tcp'] }, field: 'transport' },
    { what: 'a field this driver does not know', over: { surprise: SECRETISH }, field: 'surprise' },
    { what: 'a missing required field', over: {}, drop: ['iqn'], field: 'iqn' },
    { what: 'a missing schema version', over: {}, drop: ['schemaVersion'], field: 'schemaVersion' },
  ];
  for (const c of cases) {
    it(`refuses ${c.what} with INTERNAL naming the file and the field, not the value`, async () => {
      await corrupt('vol-c', c.over, c.drop);
      const e = await store.load('vol-c').then(() => undefined, (err: unknown) => err);
      expect(e).toBeInstanceOf(Internal);
      const message = (e as Error).message;
      expect(message).toContain(store.filePath('vol-c'));
      expect(message).toContain(`field ${c.field}`);
      expect(message).not.toContain(SECRETISH);
      expect(message).not.toMatch(/TypeError|undefined is not|Cannot read/);
    });
  }

  it('refuses a record that is no object', async () => {
    await store.save(record('vol-c'));
    for (const text of ['[]', 'null', '"x"', '42']) {
      await fsp.writeFile(store.filePath('vol-c'), text);
      await expect(store.load('vol-c')).rejects.toThrow(Internal);
    }
  });

  it('loads every optional field left out', async () => {
    const minimal: VolumeRecord = {
      volumeId: 'vol-m', phase: 'attaching', portals: ['127.0.0.1:3260'], iqn: 'iqn.2026-11.io.example:t1', lun: 0, iface: 'default',
      devices: [], stagingPath: '/staging', accessType: 'block', readonly: true, publishedAt: [],
    };
    await store.save(minimal);
    expect(await store.load('vol-m')).toEqual({ ...minimal, schemaVersion: METADATA_SCHEMA_VERSION });
  });

  it('the survey skips a record that fails validation', async () => {
    await store.save(record('vol-ok'));
    await corrupt('vol-c', { portals: [3260] });
    expect((await store.survey()).records.map((r) => r.volumeId)).toEqual(['vol-ok']);
  });
});

describe('MetadataStore on a full state directory', () => {
  const noSpace = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });

  it('a write without space is RESOURCE_EXHAUSTED naming the state directory', async () => {
    vi.spyOn(fs, 'renameSync').mockImplementationOnce(() => {
      throw noSpace();
    });
    const e = await store.save(record('pvc-full')).then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(ResourceExhausted);
    expect((e as Error).message).toContain(`the state directory ${stateDir} is full`);
  });

  it('a first record that cannot be written leaves no empty volume directory; an existing one keeps its record', async () => {
    vi.spyOn(fs, 'openSync').mockImplementationOnce(() => {
      throw noSpace();
    });
    await expect(store.save(record('pvc-new'))).rejects.toThrow(ResourceExhausted);
    await expect(fsp.access(store.volumeDir('pvc-new'))).rejects.toMatchObject({ code: 'ENOENT' });
    await store.save(record('pvc-old', { phase: 'attaching' }));
    vi.spyOn(fs, 'openSync').mockImplementationOnce(() => {
      throw noSpace();
    });
    await expect(store.save(record('pvc-old'))).rejects.toThrow(ResourceExhausted);
    expect((await store.load('pvc-old'))?.phase).toBe('attaching');
  });
});
