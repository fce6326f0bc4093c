// The bundle's V8 code cache. Node 20 keeps no compile cache for user code: every start parses the
// whole bundle again (≈60 ms of a ≈400 ms start here). The build compiles the bundle once and stores
// V8's code cache beside it; the launcher hands it back to V8, which then skips that parse.
// The cache is only as good as its match: V8 checks its own version and flags and refuses a cache
// from another Node (the bundle then compiles as without one), but of the source it checks only the
// length, so the cache starts with the SHA-256 of the exact source it was made from, and any other
// source compiles without it.
//
// The bundle on disk is a script whose value is the CommonJS module function (Node's module wrapper
// around esbuild's output), in ASCII only: the launcher reads it as Latin-1 straight into the one
// string V8 compiles, with no copy for the wrapper and no UTF-16 form for a stray character.
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { Script } from 'node:vm';

/** the code cache's file, beside the bundle's script */
export const CODE_CACHE_SUFFIX = '.v8cache';
const DIGEST_BYTES = 32;

type ModuleFunction = (exports: object, require: NodeRequire, module: { exports: object }, filename: string, dirname: string) => void;

function digest(bytes: Buffer): Buffer {
  return createHash('sha256').update(bytes).digest();
}

function writeAtomically(file: string, data: Buffer): void {
  writeFileSync(`${file}.tmp`, data);
  renameSync(`${file}.tmp`, file);
}

/**
 * Build step: turns esbuild's CommonJS output into the launcher's script (the module wrapper around
 * it, non-ASCII characters escaped) and writes the script's code cache, compiled without running it.
 */
export function writeBundleScript(commonJsFile: string, scriptFile: string): void {
  // esbuild escapes non-ASCII characters in strings, templates and regular expressions but not in the
  // comments it keeps: only comments are touched here
  const body = readFileSync(commonJsFile, 'utf8')
    .replace(/^#!.*/, '')
    .replace(/[^\x00-\x7f]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
  const bytes = Buffer.from(Module.wrap(body), 'latin1');
  writeAtomically(scriptFile, bytes);
  const data = new Script(bytes.toString('latin1'), { filename: scriptFile }).createCachedData();
  writeAtomically(scriptFile + CODE_CACHE_SUFFIX, Buffer.concat([digest(bytes), data]));
}

/** The cache made from these bytes, or why there is none. */
function cacheFor(scriptFile: string, bytes: Buffer): Buffer | 'none' | 'stale' {
  let stored: Buffer;
  try {
    stored = readFileSync(scriptFile + CODE_CACHE_SUFFIX);
  } catch {
    return 'none';
  }
  return stored.length > DIGEST_BYTES && stored.subarray(0, DIGEST_BYTES).equals(digest(bytes)) ? stored.subarray(DIGEST_BYTES) : 'stale';
}

/** What became of the code cache: used, absent, made from another source, or refused by this V8. */
export type CodeCacheUse = 'used' | 'none' | 'stale' | 'rejected';

/** Runs the bundle's script as Node's loader runs a CommonJS file, with its code cache when it matches. */
export function runBundleScript(scriptFile: string): CodeCacheUse {
  const bytes = readFileSync(scriptFile);
  const cache = cacheFor(scriptFile, bytes);
  const cachedData = typeof cache === 'string' ? undefined : cache;
  const script = new Script(bytes.toString('latin1'), { filename: scriptFile, ...(cachedData ? { cachedData } : {}) });
  const run = script.runInThisContext() as ModuleFunction;
  const module = { exports: {} };
  run.call(module.exports, module.exports, createRequire(scriptFile), module, scriptFile, dirname(scriptFile));
  return typeof cache === 'string' ? cache : script.cachedDataRejected ? 'rejected' : 'used';
}
