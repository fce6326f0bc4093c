// The one crash-safe JSON writer and versioned reader behind every state file of the driver.
import fs, { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  DurableJsonFile, readJson, readVersionedJson, RESTORE_HINT, writeJsonDurably,
} from '../../src/common/durable-json.js';
import { spyOnFsyncs } from '../helpers/fsync-spy.js';

let dir: string;
beforeEach(async () => {
  dir = await fsp.mkdtemp(join(tmpdir(), 'durable-json-'));
});
afterEach(async () => {
  vi.restoreAllMocks();
  await fsp.rm(dir, { recursive: true, force: true });
});

const modeOf = async (path: string): Promise<number> => (await fsp.stat(path)).mode & 0o777;

describe('writeJsonDurably', () => {
  it('writes the document with mode 0600 (or the one asked for) and leaves no temp file', async () => {
    const file = join(dir, 'state.json');
    await writeJsonDurably(file, { version: 1, a: [1, 2] });
    expect(JSON.parse(await fsp.readFile(file, 'utf8'))).toEqual({ version: 1, a: [1, 2] });
    expect(await modeOf(file)).toBe(0o600);
    await writeJsonDurably(join(dir, 'open.json'), {}, { mode: 0o640 });
    expect(await modeOf(join(dir, 'open.json'))).toBe(0o640);
    expect((await fsp.readdir(dir)).sort()).toEqual(['open.json', 'state.json']);
  });

  it('puts the new content under the real name only once it is complete and fsynced, then fsyncs the directory', async () => {
    const file = join(dir, 'state.json');
    await writeJsonDurably(file, { version: 1, n: 'old' });
    const events: string[] = [];
    spyOnFsyncs((path) => events.push(path === dir ? 'sync dir' : 'sync temp'));
    const renameSync = fs.renameSync.bind(fs);
    vi.spyOn(fs, 'renameSync').mockImplementation((from, to) => {
      // at the rename the temp file already holds the whole new document, and the real name the old one
      expect(String(from)).not.toBe(file);
      expect(String(from)).toMatch(/\/\.state\.json\.\d+\.[0-9a-f]+\.tmp$/);
      expect(JSON.parse(fs.readFileSync(from, 'utf8'))).toEqual({ version: 1, n: 'new' });
      expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toEqual({ version: 1, n: 'old' });
      events.push('rename');
      renameSync(from, to);
    });
    await writeJsonDurably(file, { version: 1, n: 'new' });
    expect(events).toEqual(['sync temp', 'rename', 'sync dir']);
    expect(JSON.parse(await fsp.readFile(file, 'utf8'))).toEqual({ version: 1, n: 'new' });
  });

  it('keeps the old document and removes the temp file when the write, fsync or rename fails', async () => {
    const file = join(dir, 'state.json');
    await writeJsonDurably(file, { version: 1, n: 1 });
    const diskFull = (): Error => Object.assign(new Error('disk full'), { code: 'ENOSPC' });
    const writeFileSync = fs.writeFileSync.bind(fs);
    // half a document reached the temp file when the disk filled up (or the machine died)
    vi.spyOn(fs, 'writeFileSync').mockImplementationOnce((target) => {
      writeFileSync(target, '{"version": 1, "n"');
      throw diskFull();
    });
    await expect(writeJsonDurably(file, { version: 1, n: 2 })).rejects.toMatchObject({ code: 'ENOSPC' });
    vi.spyOn(fs, 'fsync').mockImplementationOnce((_fd, callback) => callback(diskFull()));
    await expect(writeJsonDurably(file, { version: 1, n: 3 })).rejects.toMatchObject({ code: 'ENOSPC' });
    vi.spyOn(fs, 'renameSync').mockImplementationOnce(() => {
      throw Object.assign(new Error('read-only file system'), { code: 'EROFS' });
    });
    await expect(writeJsonDurably(file, { version: 1, n: 4 })).rejects.toMatchObject({ code: 'EROFS' });
    expect(JSON.parse(await fsp.readFile(file, 'utf8'))).toEqual({ version: 1, n: 1 });
    expect(await fsp.readdir(dir)).toEqual(['state.json']);
  });

  it('fails with the file system error (ENOENT) when the directory is gone', async () => {
    await expect(writeJsonDurably(join(dir, 'gone', 'state.json'), {})).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('readJson / readVersionedJson', () => {
  const what = 'controller state';

  it('reads a document back; a missing file is undefined', async () => {
    const file = join(dir, 'state.json');
    expect(await readJson(file, { what })).toBeUndefined();
    expect(await readVersionedJson(file, { what, version: 1 })).toBeUndefined();
    await writeJsonDurably(file, { version: 1, x: 'y' });
    expect(await readVersionedJson(file, { what, version: 1 })).toEqual({ version: 1, x: 'y' });
  });

  it('refuses a corrupt file with INTERNAL naming it, without quoting its content', async () => {
    const file = join(dir, 'chap-secrets.json');
    await fsp.writeFile(file, '{"version": 1, "accounts": {"u": {"password": "hunter2-secret"');
    const refusal = readJson(file, { what, hint: RESTORE_HINT });
    await expect(refusal).rejects.toMatchObject({ code: status.INTERNAL, message: expect.stringContaining(`controller state ${file} is not valid JSON`) });
    await expect(readJson(file, { what, hint: RESTORE_HINT })).rejects.toThrow(RESTORE_HINT);
    await fsp.writeFile(file, '{"password": "hunter2-secret" oops}');
    const err = await readJson(file, { what }).catch((e: Error) => e);
    expect((err as Error).message).toMatch(/is not valid JSON \(error at position \d+\)$/);
    expect((err as Error).message).not.toContain('hunter2');
  });

  it('refuses a document of another version, or without one, naming the file and both versions', async () => {
    const file = join(dir, 'state.json');
    await writeJsonDurably(file, { version: 2 });
    await expect(readVersionedJson(file, { what, version: 1 })).rejects.toMatchObject({
      code: status.INTERNAL, message: `controller state ${file} has version 2; this driver reads version 1`,
    });
    for (const doc of [{}, null, [1], 'text']) {
      await writeJsonDurably(file, doc);
      await expect(readVersionedJson(file, { what, version: 1 })).rejects.toThrow(`controller state ${file} has version none; this driver reads version 1`);
    }
  });

  it('reports an unreadable file as INTERNAL naming it', async () => {
    await fsp.mkdir(join(dir, 'a-directory.json'));
    await expect(readJson(join(dir, 'a-directory.json'), { what })).rejects.toMatchObject({ code: status.INTERNAL, message: expect.stringContaining(`cannot read controller state ${join(dir, 'a-directory.json')}`) });
  });
});

describe('DurableJsonFile', () => {
  interface Doc { version: number; n: number }

  it('creates its private directory and stores the latest snapshot when saves overlap', async () => {
    let doc: Doc = { version: 1, n: 0 };
    const file = new DurableJsonFile<Doc>(join(dir, 'controller', 'tgt', 'volumes.json'), { what: 'controller state', version: 1 }, () => doc);
    const saves: Promise<void>[] = [];
    for (let n = 1; n <= 5; n++) {
      doc = { version: 1, n };
      saves.push(file.save());
    }
    await Promise.all(saves);
    expect(await file.load()).toEqual({ version: 1, n: 5 });
    expect(await modeOf(join(dir, 'controller', 'tgt'))).toBe(0o700);
    expect(await modeOf(file.path)).toBe(0o600);
  });

  it('reports a failed write as INTERNAL naming the file, and the next save still works', async () => {
    const doc: Doc = { version: 1, n: 1 };
    const file = new DurableJsonFile<Doc>(join(dir, 'claims.json'), { what: 'controller state', version: 1 }, () => doc);
    vi.spyOn(fs, 'renameSync').mockImplementationOnce(() => {
      throw Object.assign(new Error('disk full'), { code: 'ENOSPC' });
    });
    await expect(file.save()).rejects.toMatchObject({ code: status.INTERNAL, message: `cannot write controller state ${file.path}: disk full` });
    await file.save();
    expect(await file.load()).toEqual(doc);
  });
});
