// The launcher's bundle script and its V8 code cache: the build's script runs as the CommonJS file it
// was made from (require, __filename, strictness), and a cache is used only for the source it was
// made from; any other cache is left out and the script still runs. Each script runs in a Node of its
// own, as in the image: within one process V8's in-memory compilation cache would answer first.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CODE_CACHE_SUFFIX, writeBundleScript } from '../../src/launcher/code-cache.js';

const COMPILED = resolve('dist/src/launcher/code-cache.js');

function bundle(marker: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'launcher-'));
  const cjs = join(dir, 'driver.cjs');
  writeFileSync(cjs, [
    '#!/usr/bin/env node',
    '// a comment the build must escape: → ×',
    "'use strict';",
    "const { sep } = require('node:path');",
    `process.stdout.write(JSON.stringify({ marker: ${JSON.stringify(marker)}, filename: __filename, strict: (function () { return this === undefined; })(), sep }) + '\\n');`,
    '',
  ].join('\n'));
  const script = join(dir, 'driver.js');
  writeBundleScript(cjs, script);
  return script;
}

/** Runs the script as the launcher does, in a Node of its own: what it printed, then the cache's use. */
function launch(script: string): { ran: Record<string, unknown>; cache: string } {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e',
    `import { runBundleScript } from ${JSON.stringify(COMPILED)}; process.stdout.write(runBundleScript(process.argv[1]) + '\\n');`, script],
  { encoding: 'utf8', timeout: 20_000 }).trim().split('\n');
  return { ran: JSON.parse(out[0]!) as Record<string, unknown>, cache: out[1]! };
}

describe('launcher code cache', () => {
  it('is compiled for this test (make build)', () => {
    expect(existsSync(COMPILED)).toBe(true);
  });

  it("the build's bundle runs with its cache on this Node (iscsi-csi --version)", () => {
    const bundled = resolve('dist/bundle/driver.js');
    // argv[2] on is what the driver's command line reads
    const out = execFileSync(process.execPath, ['--input-type=module', '-e',
      `import { runBundleScript } from ${JSON.stringify(COMPILED)}; process.stdout.write(runBundleScript(${JSON.stringify(bundled)}) + '\\n');`, '-', '--version'],
    { encoding: 'utf8', timeout: 20_000 });
    expect(out).toMatch(/^iscsi-csi \S+\nused\n$/);
  });

  it('runs the script with its own cache, as the CommonJS file would run', () => {
    const script = bundle('first');
    expect(readFileSync(script, 'latin1')).toMatch(/^[\x00-\x7f]*$/);
    expect(launch(script)).toEqual({ ran: { marker: 'first', filename: script, strict: true, sep: '/' }, cache: 'used' });
  });

  it('leaves out a cache made from another source of the same length, and runs the new source', () => {
    const script = bundle('aaaaa');
    writeFileSync(script, readFileSync(script, 'latin1').replace('aaaaa', 'bbbbb'), 'latin1');
    expect(launch(script)).toMatchObject({ ran: { marker: 'bbbbb' }, cache: 'stale' });
  });

  it('runs with a cache V8 refuses, and with none', () => {
    const script = bundle('plain');
    const cache = readFileSync(script + CODE_CACHE_SUFFIX);
    writeFileSync(script + CODE_CACHE_SUFFIX, Buffer.concat([cache.subarray(0, 32), Buffer.alloc(cache.length - 32, 7)]));
    expect(launch(script)).toMatchObject({ ran: { marker: 'plain' }, cache: 'rejected' });
    writeFileSync(script + CODE_CACHE_SUFFIX, '');
    expect(launch(script)).toMatchObject({ ran: { marker: 'plain' }, cache: 'stale' });
  });
});
