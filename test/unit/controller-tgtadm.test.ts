// Tgtadm's LUN size refresh: one management request that never deletes the LUN.
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { Tgtadm } from '../../src/controller/tgt/tgtadm.js';
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
