// Tgtadm: the parser of `--op show --mode target` on real listings (test/fixtures/tgtadm), and the LUN
// size refresh: one management request that never deletes the LUN.
import { readFileSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { parseTgtTargets, Tgtadm } from '../../src/controller/tgt/tgtadm.js';
import type { Arg, CommandRunner, RunResult } from '../../src/runner.js';

function fakeRunner(exitCode = 0, stderr = ''): { runner: CommandRunner; calls: string[][] } {
  const calls: string[][] = [];
  const runner: CommandRunner = {
    stats: { commands: 0, commandMs: 0, byName: {} },
    run: async (name: string, args: Arg[]): Promise<RunResult> => {
      const argv = [name, ...args.map(String)];
      calls.push(argv);
      return { argv, exitCode, stdout: '', stderr, durationMs: 0 };
    },
  };
  return { runner, calls };
}

describe('Tgtadm.reopenLun', () => {
  it('takes the LUN offline, re-opens its file and brings it back online in one update, without deleting it', async () => {
    const { runner, calls } = fakeRunner();
    await new Tgtadm(runner, 5555).reopenLun(3, 1, '/pool/a.img');
    expect(calls).toEqual([['tgtadm', '-C', '5555', '--lld', 'iscsi', '--op', 'update', '--mode', 'logicalunit', '--tid', '3', '--lun', '1', '--params', 'online=0,path=/pool/a.img,online=1']]);
  });

  it('refuses a path tgtd would split at a comma, and reports tgtd refusals as INTERNAL', async () => {
    const { runner, calls } = fakeRunner(22, 'tgtadm: invalid request');
    const tgtadm = new Tgtadm(runner, 5555);
    await expect(tgtadm.reopenLun(3, 1, '/pool/a,b.img')).rejects.toMatchObject({ code: status.INTERNAL });
    expect(calls).toEqual([]);
    await expect(tgtadm.reopenLun(3, 1, '/pool/a.img')).rejects.toMatchObject({ code: status.INTERNAL, message: /invalid request \(exit 22\)/ });
  });

  it('sets a target offline and ready again', async () => {
    const { runner, calls } = fakeRunner();
    await new Tgtadm(runner, 5555).setTargetState(3, 'offline');
    expect(calls[0]!.slice(5)).toEqual(['--op', 'update', '--mode', 'target', '--tid', '3', '--name', 'state', '--value', 'offline']);
  });
});

const listing = (name: string): string => readFileSync(new URL(`../fixtures/tgtadm/show-target-${name}.txt`, import.meta.url), 'utf8');

describe('parseTgtTargets (tgtd 1.0.85 listings)', () => {
  it('reads nothing from a tgtd without targets', () => {
    expect(parseTgtTargets(listing('empty'))).toEqual([]);
  });

  it('reads tid, name, state, LUNs with their ids and backing files, accounts and ACLs', () => {
    const [a, shared] = parseTgtTargets(listing('in-sync'));
    expect(a).toEqual({
      tid: 1, name: 'iqn.2026-11.dev.tsdriver.test:pvc-a-38f2b742b935d124', state: 'ready', nexuses: [],
      luns: [
        { lun: 0, type: 'controller', scsiId: 'IET     00010000', scsiSn: 'beaf10', sizeMb: 0, online: true, readonly: false, backingStoreType: 'null', backingStorePath: null },
        { lun: 1, type: 'disk', scsiId: 'csi8a237f6b54a573bc', scsiSn: '0037e45ba0d06607', sizeMb: 17, online: true, readonly: false, backingStoreType: 'rdwr', backingStorePath: '/tmp/tgt-fixtures/pool/38f2b742b935d124a05585a67175089f.img' },
      ],
      accounts: ['volchap'], outgoingAccounts: ['volchap-in'], acls: ['iqn.2026-11.dev.test:node-a'],
    });
    expect(shared?.luns.map((l) => l.lun)).toEqual([0, 1, 2]);
    expect(shared?.acls).toEqual(['iqn.2026-11.dev.test:node-a', 'iqn.2026-11.dev.test:node-b']);
  });

  it('reads the initiators logged in (I_T nexus) with their addresses', () => {
    const shared = parseTgtTargets(listing('logged-in')).find((t) => t.tid === 2);
    expect(shared?.nexuses).toEqual([{ nexus: 1, initiator: 'iqn.2026-11.dev.test:node-a', alias: 'none', addresses: ['127.0.0.1'] }]);
  });

  it('reads an offline target, address ACLs and a target without LUNs beyond the controller', () => {
    const [a, shared, other] = parseTgtTargets(listing('drift'));
    expect(a?.luns.map((l) => l.lun)).toEqual([0]);
    expect(a?.acls).toEqual(['127.0.0.1', 'iqn.2026-11.dev.test:node-b']);
    expect(a?.accounts).toEqual(['volchap', 'stranger']);
    expect(a?.outgoingAccounts).toEqual([]);
    expect(shared?.state).toBe('offline');
    expect(shared?.luns.find((l) => l.lun === 2)).toMatchObject({ scsiId: 'IET     00020002', backingStorePath: '/tmp/tgt-fixtures/pool/other.img' });
    expect(other).toMatchObject({ tid: 3, name: 'iqn.2001-05.com.example:array1', acls: ['ALL'] });
  });
});
