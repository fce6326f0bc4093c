// The tgt backend's CHAP account store: passwords only in its 0600 file, one password per user name,
// accounts created in tgtd from it and deleted once no volume uses them.
import fs, { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChapStore } from '../../src/controller/tgt/chap-store.js';
import { Tgtadm } from '../../src/controller/tgt/tgtadm.js';
import { Secret } from '../../src/log.js';
import type { Arg, CommandRunner, RunResult } from '../../src/runner.js';

const PASSWORD = 'chap-secret-123';
const MUTUAL = 'chap-secret-456';

let dir: string;
let calls: Arg[][];
let store: ChapStore;

beforeEach(async () => {
  dir = await fsp.mkdtemp(join(tmpdir(), 'chap-store-'));
  calls = [];
  const runner: CommandRunner = {
    stats: { commands: 0, commandMs: 0, byName: {} },
    run: async (name: string, args: Arg[]): Promise<RunResult> => {
      calls.push(args.slice(4));
      return { argv: [name, ...args.map(String)], exitCode: 0, stdout: '', stderr: '', durationMs: 0 };
    },
  };
  store = new ChapStore(join(dir, 'chap-secrets.json'), new Tgtadm(runner, 5555));
});
afterEach(async () => {
  vi.restoreAllMocks();
  await fsp.rm(dir, { recursive: true, force: true });
});

const creds = (password = PASSWORD) => ({ username: 'volchap', password: new Secret(password), usernameIn: 'volchap-in', passwordIn: new Secret(MUTUAL) });

describe('ChapStore', () => {
  it('keeps the passwords in a 0600 file and gives them back after a restart', async () => {
    expect(await store.store(creds())).toEqual({ user: 'volchap', mutualUser: 'volchap-in' });
    expect((await fsp.stat(store.path)).mode & 0o777).toBe(0o600);
    const again = new ChapStore(store.path, new Tgtadm({ stats: { commands: 0, commandMs: 0, byName: {} }, run: () => Promise.reject(new Error('no commands')) }, 5555));
    await again.load();
    const back = again.credentialsOf({ user: 'volchap', mutualUser: 'volchap-in' });
    expect(back?.password.reveal()).toBe(PASSWORD);
    expect(back?.passwordIn?.reveal()).toBe(MUTUAL);
    expect(again.credentialsOf({ user: 'nobody' })).toBeUndefined();
  });

  it('refuses a known user name with another password, without saying the password', async () => {
    await store.store(creds());
    const refused = await store.store(creds('other-secret-789')).catch((e: Error & { code: number }) => e);
    expect(refused).toMatchObject({ code: status.FAILED_PRECONDITION, message: expect.stringContaining('CHAP user volchap is already used') });
    expect((refused as Error).message).not.toMatch(/secret-/);
    expect(store.credentialsOf({ user: 'volchap' })?.password.reveal()).toBe(PASSWORD);
    await store.store(creds()); // the same password is fine
  });

  it('records nothing when its file cannot be written', async () => {
    vi.spyOn(fs, 'renameSync').mockImplementationOnce(() => {
      throw Object.assign(new Error('disk full'), { code: 'ENOSPC' });
    });
    await expect(store.store(creds())).rejects.toMatchObject({ code: status.INTERNAL });
    expect(store.credentialsOf({ user: 'volchap' })).toBeUndefined();
    await store.store(creds('another-secret-1')); // not "already used"
  });

  it('creates an account in tgtd with its stored password, and says which file lacks one', async () => {
    await store.store(creds());
    await store.createInTgtd('volchap', 'tgt:abc');
    expect(calls).toHaveLength(1);
    expect(calls[0]!.slice(0, 6)).toEqual(['--op', 'new', '--mode', 'account', '--user', 'volchap']);
    expect(calls[0]![7]).toBeInstanceOf(Secret);
    expect((calls[0]![7] as Secret).reveal()).toBe(PASSWORD);
    await expect(store.createInTgtd('stranger', 'tgt:abc')).rejects.toMatchObject({
      code: status.INTERNAL, message: `CHAP password of account stranger (volume tgt:abc) is missing from ${store.path}; create the volume's account again with tgtadm or restore that file`,
    });
  });

  it('deletes an account from tgtd and the file only once no volume uses it', async () => {
    await store.store(creds());
    await store.dropIfUnused('volchap', () => true);
    expect(calls).toEqual([]);
    await store.dropIfUnused('volchap', () => false);
    expect(calls).toEqual([['--op', 'delete', '--mode', 'account', '--user', 'volchap']]);
    expect(store.credentialsOf({ user: 'volchap' })).toBeUndefined();
    expect(await fsp.readFile(store.path, 'utf8')).not.toContain(PASSWORD);
    expect(await fsp.readFile(store.path, 'utf8')).toContain(MUTUAL);
  });
});
