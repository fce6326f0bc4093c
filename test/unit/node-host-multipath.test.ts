// Multipath.flush: `multipath -f` answers scripted; a map udev holds open for a moment is flushed on a
// later try, one that stays open fails with the map named once the bound is spent.
import { describe, expect, it } from 'vitest';
import { Multipath } from '../../src/node-host/multipath.js';
import type { CommandRunner, RunResult } from '../../src/runner.js';

const MAP = { dm: 'dm-3', name: 'mpatha', wwid: '36000000000000c00c8f33f0d5b94691d' };
const IN_USE = { exitCode: 1, stderr: '1733180000.123456 | mpatha: map in use\n' };

function scriptedRunner(answers: { exitCode: number; stderr?: string }[]): CommandRunner & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    stats: {} as CommandRunner['stats'],
    run: async (name, args): Promise<RunResult> => {
      const argv = [String(name), ...args.map(String)];
      calls.push(argv);
      const a = answers[Math.min(calls.length, answers.length) - 1]!;
      return { argv, exitCode: a.exitCode, stdout: '', stderr: a.stderr ?? '', durationMs: 1 };
    },
  };
}

describe('Multipath.flush', () => {
  it('a map in use for a moment (udev probing it) is flushed on a later try', async () => {
    const runner = scriptedRunner([IN_USE, IN_USE, { exitCode: 0 }]);
    await new Multipath(runner, '/dev', { mapFlushMs: 5_000, devicePollMs: 5 }).flush(MAP);
    expect(runner.calls).toEqual([['multipath', '-f', '/dev/dm-3'], ['multipath', '-f', '/dev/dm-3'], ['multipath', '-f', '/dev/dm-3']]);
  });

  it('a map that stays in use fails after mapFlushMs, naming the map and its wwid', async () => {
    const runner = scriptedRunner([IN_USE]);
    const t0 = Date.now();
    await expect(new Multipath(runner, '/dev', { mapFlushMs: 60, devicePollMs: 10 }).flush(MAP)).rejects.toThrow(/multipath map dm-3 \(wwid 36000000000000c00c8f33f0d5b94691d\) is still in use after \d+ flushes in 60 ms/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(60);
    expect(runner.calls.length).toBeGreaterThan(1);
  });

  it('mapFlushMs 0: one try only', async () => {
    const runner = scriptedRunner([IN_USE]);
    await expect(new Multipath(runner, '/dev', { mapFlushMs: 0, devicePollMs: 10 }).flush(MAP)).rejects.toThrow(/still in use after 1 flushes/);
    expect(runner.calls.length).toBe(1);
  });

  it('a map already gone counts as flushed; any other failure is not retried', async () => {
    const gone = scriptedRunner([{ exitCode: 1, stderr: '/dev/dm-3 is not a multipath device\n' }]);
    await new Multipath(gone, '/dev', { mapFlushMs: 5_000, devicePollMs: 5 }).flush(MAP);
    expect(gone.calls.length).toBe(1);
    const broken = scriptedRunner([{ exitCode: 1, stderr: 'DM message failed\n' }]);
    await expect(new Multipath(broken, '/dev', { mapFlushMs: 5_000, devicePollMs: 5 }).flush(MAP)).rejects.toThrow(/flushing multipath map dm-3 failed: DM message failed \(multipath exit 1\)/);
    expect(broken.calls.length).toBe(1);
  });
});
