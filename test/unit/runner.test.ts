import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config.js';
import { DeadlineExceeded, Internal } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { ExecaRunner } from '../../src/runner.js';

const base = buildConfig(undefined).commands;
const runner = (argv: string[], timeoutMs: number): ExecaRunner =>
  new ExecaRunner({ ...base, blockdev: { argv, timeoutMs } }, [], createLogger('silent'));

describe('ExecaRunner', () => {
  it('kills the whole process group at the timeout, even one whose grandchild holds its output', async () => {
    const started = Date.now();
    // the shell's background sleep keeps stdout open after the shell itself is gone
    await expect(runner(['sh', '-c', 'sleep 5 & sleep 5'], 300).run('blockdev', [])).rejects.toThrow(DeadlineExceeded);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('reports a command killed by a signal as such, not as one that cannot run', async () => {
    const err = await runner(['sh', '-c', 'kill -SEGV $$'], 5_000).run('blockdev', []).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Internal);
    expect((err as Error).message).toMatch(/^blockdev was killed by SIGSEGV/);
  });
});
