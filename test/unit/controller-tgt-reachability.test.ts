// tgtd's reachability as the tgt backend sees it: which tgtadm outcomes mean "no tgtd" (UNAVAILABLE,
// naming tgtd and its control port) and which are tgtd's own answer, and that only the changes are logged.
import { Writable } from 'node:stream';
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { Reachability } from '../../src/common/reachability.js';
import { Tgtadm, tgtdUnreachable } from '../../src/controller/tgt/tgtadm.js';
import { DeadlineExceeded } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import type { Arg, CommandRunner, RunResult } from '../../src/runner.js';

/** What tgtadm 1.0.85 prints when nothing listens on the control port (verbatim, exit 107 = ENOTCONN). */
const NO_TGTD = 'tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not connected\n';

type Outcome = { exitCode: number; stdout?: string; stderr?: string } | Error;

function runnerOf(next: () => Outcome): CommandRunner {
  return {
    stats: { commands: 0, commandMs: 0, byName: {} },
    run: async (name: string, args: Arg[]): Promise<RunResult> => {
      const o = next();
      if (o instanceof Error) throw o;
      return { argv: [name, ...args.map(String)], exitCode: o.exitCode, stdout: o.stdout ?? '', stderr: o.stderr ?? '', durationMs: 0 };
    },
  };
}

function capture(): { logger: ReturnType<typeof createLogger>; lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = [];
  const sink = new Writable({ write(chunk: Buffer, _e, cb) { for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l)); cb(); } });
  return { logger: createLogger('info', sink), lines };
}

describe('tgtdUnreachable', () => {
  it('tells tgtadm\'s connection failures from tgtd\'s own refusals', () => {
    const r = (exitCode: number, stderr: string): RunResult => ({ argv: [], exitCode, stdout: '', stderr, durationMs: 0 });
    expect(tgtdUnreachable(r(107, NO_TGTD))).toBe(true);
    expect(tgtdUnreachable(r(255, "tgtadm: can't connect to tgt daemon, Connection refused\n"))).toBe(true);
    expect(tgtdUnreachable(r(22, "tgtadm: can't find the target\n"))).toBe(false);
    expect(tgtdUnreachable(r(0, ''))).toBe(false);
  });
});

describe('Tgtadm with a reachability observer', () => {
  it('throws UNAVAILABLE naming tgtd and the port, and logs one line when tgtd goes and one when it is back', async () => {
    const { logger, lines } = capture();
    let back = 0;
    const reach = new Reachability('tgtd', logger, 'calls that need it answer UNAVAILABLE', () => { back += 1; });
    let outcome: Outcome = { exitCode: 107, stderr: NO_TGTD };
    const tgtadm = new Tgtadm(runnerOf(() => outcome), 5555, logger, reach);

    for (let i = 0; i < 3; i++) {
      await expect(tgtadm.showTargets()).rejects.toMatchObject({ code: status.UNAVAILABLE, message: expect.stringMatching(/^tgtd is not reachable through tgtadm -C 5555: failed to send request hdr to tgt daemon/) });
    }
    outcome = new DeadlineExceeded('tgtadm did not finish within 30000 ms and was killed');
    await expect(tgtadm.deleteLun(1, 1)).rejects.toMatchObject({ code: status.UNAVAILABLE, message: expect.stringContaining('did not finish within 30000 ms') });
    expect(reach.state).toBe(false);
    expect(lines.filter((l) => /^tgtd is not reachable/.test(l.msg))).toHaveLength(1);

    // a refusal is an answer: tgtd is there
    outcome = { exitCode: 22, stderr: "tgtadm: can't find the target\n" };
    await expect(tgtadm.newLun(1, 1, '/pool/a.img')).rejects.toMatchObject({ code: status.INTERNAL });
    expect(reach.state).toBe(true);
    outcome = { exitCode: 0 };
    expect(await tgtadm.showTargets()).toEqual([]);
    expect(lines.filter((l) => /^tgtd is reachable again/.test(l.msg))).toHaveLength(1);
    expect(back).toBe(1);
    expect(lines.every((l) => l.level === 'warn')).toBe(true);
  });

  it('starts unknown and logs nothing when the first call reaches tgtd', async () => {
    const { logger, lines } = capture();
    const reach = new Reachability('tgtd', logger, 'x');
    expect(reach.state).toBeUndefined();
    await new Tgtadm(runnerOf(() => ({ exitCode: 0 })), 0, logger, reach).showTargets();
    expect(reach.state).toBe(true);
    expect(lines).toEqual([]);
  });
});
