import { describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { ProbeGuard } from '../../src/common/probe-guard.js';
import { parseStatfs } from '../../src/node-host/filesystem.js';

describe('ProbeGuard', () => {
  it('returns a probe that finishes in time', async () => {
    expect(await new ProbeGuard().run('k', async () => 42, 1000)).toEqual({ status: 'done', value: 42 });
  });

  it('stops waiting at the deadline, keeps the probe as the one running, and starts no second one', async () => {
    const guard = new ProbeGuard();
    let release!: () => void;
    let started = 0;
    const probe = (): Promise<string> => {
      started += 1;
      return new Promise((resolve) => (release = () => resolve('late answer')));
    };
    expect(await guard.run('path', probe, 30)).toEqual({ status: 'late', waitedMs: 30 });
    expect(await guard.run('path', probe, 30)).toMatchObject({ status: 'busy' });
    expect(started).toBe(1);
    // another key is not held up
    expect(await guard.run('other', async () => 'ok', 30)).toEqual({ status: 'done', value: 'ok' });
    release();
    await sleep(0);
    // forgotten once it settled: a probe still listed would make this one 'busy'
    expect(await guard.run('path', async () => 'fresh', 30)).toEqual({ status: 'done', value: 'fresh' });
  });

  it('lets a caller wait for a probe already running, then run its own', async () => {
    const guard = new ProbeGuard();
    const first = guard.run('p', () => sleep(20).then(() => 'first'), 1000);
    const second = guard.run('p', async () => 'second', 1000);
    expect(await first).toEqual({ status: 'done', value: 'first' });
    expect(await second).toEqual({ status: 'done', value: 'second' });
  });

  it('forgets a probe that failed', async () => {
    const guard = new ProbeGuard();
    await expect(guard.run('p', async () => { throw new Error('EIO'); }, 100)).rejects.toThrow('EIO');
    // a failed probe still listed would make the next one 'busy'
    expect(await guard.run('p', async () => 'next', 100)).toEqual({ status: 'done', value: 'next' });
  });
});

describe('parseStatfs', () => {
  it('reads `stat -f -c "%b %f %a %S %c %d"` into bytes and inodes', () => {
    // a 32 MiB ext4: 4 KiB blocks
    expect(parseStatfs('7749 7284 7284 4096 8192 8181\n', '/x')).toEqual({
      totalBytes: 7749 * 4096, availableBytes: 7284 * 4096, usedBytes: (7749 - 7284) * 4096,
      totalInodes: 8192, freeInodes: 8181, usedInodes: 11,
    });
  });

  it('refuses anything else', () => {
    expect(() => parseStatfs('stat: cannot read file system information\n', '/x')).toThrow(/unexpected `stat -f` output for \/x/);
  });
});
