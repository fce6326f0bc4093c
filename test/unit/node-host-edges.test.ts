// Filesystem.nonZeroEdges: the first and last MiB of a device read in the driver (a regular file
// stands in for the device; blockdev's size answer is scripted), with a deadline.
import { afterAll, describe, expect, it } from 'vitest';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { EDGE_BYTES, Filesystem } from '../../src/node-host/filesystem.js';
import type { CommandRunner, RunResult } from '../../src/runner.js';

const dir = mkdtempSync(join(tmpdir(), 'edges-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sizeRunner(bytes: number): CommandRunner & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    stats: { started: 0, failed: 0, timedOut: 0 } as unknown as CommandRunner['stats'],
    run: async (name, args): Promise<RunResult> => {
      const argv = [String(name), ...args.map(String)];
      calls.push(argv);
      return { argv, exitCode: 0, stdout: `${bytes}\n`, stderr: '', durationMs: 1 };
    },
  };
}

async function device(name: string, bytes: number, writes: [number, Buffer][] = []): Promise<string> {
  const path = join(dir, name);
  closeSync(openSync(path, 'w'));
  await truncate(path, bytes);
  const fd = openSync(path, 'r+');
  for (const [offset, data] of writes) writeSync(fd, data, 0, data.length, offset);
  closeSync(fd);
  return path;
}

const cfg = { node: { mkfsOptions: {} }, timeouts: { deviceReadMs: 5_000 } };
const SIZE = 8 * EDGE_BYTES;

describe('nonZeroEdges', () => {
  it('an all-zero device: nothing; the size comes from blockdev --getsize64', async () => {
    const runner = sizeRunner(SIZE);
    expect(await new Filesystem(runner, cfg).nonZeroEdges(await device('zero', SIZE))).toEqual([]);
    expect(runner.calls[0]!.slice(0, 2)).toEqual(['blockdev', '--getsize64']);
  });

  it('a byte in the first MiB, in the last MiB, or both', async () => {
    const one = Buffer.from([1]);
    const fs = new Filesystem(sizeRunner(SIZE), cfg);
    expect(await fs.nonZeroEdges(await device('head', SIZE, [[EDGE_BYTES - 1, one]]))).toEqual(['first MiB']);
    expect(await fs.nonZeroEdges(await device('tail', SIZE, [[SIZE - EDGE_BYTES, one]]))).toEqual(['last MiB']);
    expect(await fs.nonZeroEdges(await device('both', SIZE, [[0, one], [SIZE - 1, one]]))).toEqual(['first MiB', 'last MiB']);
    // outside both ends: not the edges' business (blkid's)
    expect(await fs.nonZeroEdges(await device('middle', SIZE, [[4 * EDGE_BYTES, one]]))).toEqual([]);
  });

  it('a device smaller than a MiB is read whole', async () => {
    const fs = new Filesystem(sizeRunner(4096), cfg);
    expect(await fs.nonZeroEdges(await device('small', 4096, [[4095, Buffer.from([7])]]))).toEqual(['first MiB', 'last MiB']);
  });

  it('a device that ends before its reported size, or is missing, is never called empty', async () => {
    const short = await device('short', EDGE_BYTES);
    const e1 = await new Filesystem(sizeRunner(SIZE), cfg).nonZeroEdges(short).catch((e: Error & { code?: number }) => e);
    expect((e1 as { code?: number }).code).toBe(status.UNAVAILABLE);
    const e2 = await new Filesystem(sizeRunner(SIZE), cfg).nonZeroEdges(join(dir, 'missing')).catch((e: Error & { code?: number }) => e);
    expect((e2 as { code?: number }).code).toBe(status.NOT_FOUND);
  });

  it('a read that does not finish within timeouts.deviceReadMs is UNAVAILABLE', async () => {
    // a FIFO with no writer: open() blocks, as a read from a device whose paths are all down would
    const fifo = join(dir, 'fifo');
    const { execFileSync } = await import('node:child_process');
    execFileSync('mkfifo', [fifo]);
    const fs = new Filesystem(sizeRunner(SIZE), { ...cfg, timeouts: { deviceReadMs: 200 } });
    const started = Date.now();
    const e = await fs.nonZeroEdges(fifo).catch((err: Error & { code?: number }) => err);
    expect((e as { code?: number }).code).toBe(status.UNAVAILABLE);
    expect((e as Error).message).toContain('did not finish within 200 ms');
    expect(Date.now() - started).toBeLessThan(5_000);
    // let the blocked open finish so the thread pool is not left holding it
    closeSync(openSync(fifo, 'r+'));
  });
});
