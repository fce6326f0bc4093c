import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config.js';
import { DeadlineExceeded, FailedPrecondition, Internal } from '../../src/errors.js';
import { createLogger, Secret } from '../../src/log.js';
import { ProcessRunner } from '../../src/runner.js';

const base = buildConfig(undefined).commands;
const runner = (argv: string[], timeoutMs: number): ProcessRunner =>
  new ProcessRunner({ ...base, blockdev: { argv, timeoutMs } }, [], createLogger('silent'));

describe('ProcessRunner', () => {
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

  it('passes argv as given (no shell), input on stdin and extra environment, and returns exit code and both outputs', async () => {
    const r = await runner(['sh', '-c', 'read line; echo "out:$line:$EXTRA:$1"; echo err >&2; exit 3', 'sh'], 5_000)
      .run('blockdev', ['$(not run) ; *'], { input: 'from-stdin\n', env: { EXTRA: 'x' } });
    expect(r).toMatchObject({ exitCode: 3, stdout: 'out:from-stdin:x:$(not run) ; *\n', stderr: 'err\n' });
  });

  it('a command that does not exist is FAILED_PRECONDITION naming its config key', async () => {
    const err = await runner(['/nonexistent/blockdev'], 5_000).run('blockdev', []).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FailedPrecondition);
    expect((err as Error).message).toBe('cannot run blockdev (/nonexistent/blockdev): not found; check commands.blockdev in the driver config');
  });

  it('gives a secret to the process but shows only the placeholder', async () => {
    const r = await runner(['sh', '-c', 'echo "got $1"', 'sh'], 5_000).run('blockdev', [new Secret('s3cret')]);
    expect(r.stdout).toBe('got s3cret\n');
    expect(r.argv.join(' ')).toBe('sh -c echo "got $1" sh [REDACTED]');
  });
});
