#!/usr/bin/env node
// The package registry reachable here does not serve rollup's native packages for other platforms, so
// `npm install` leaves them out of package-lock.json and `npm ci` then refuses the lock as out of sync.
// This adds the missing optional entries (platform-only: no integrity, never fetched on linux-x64-glibc,
// where npm skips them by os/cpu/libc). Run after regenerating the lock: node scripts/lockfile-platforms.mjs
import { readFileSync, writeFileSync } from 'node:fs';

const LOCK = 'package-lock.json';
const OS = { android: 'android', darwin: 'darwin', freebsd: 'freebsd', linux: 'linux', openbsd: 'openbsd', openharmony: 'openharmony', win32: 'win32' };
const CPU = { 'arm-eabi': 'arm', arm64: 'arm64', x64: 'x64', ia32: 'ia32', arm: 'arm', loong64: 'loong64', ppc64: 'ppc64', riscv64: 'riscv64', s390x: 's390x' };

const lock = JSON.parse(readFileSync(LOCK, 'utf8'));
let added = 0;
for (const [path, entry] of Object.entries(lock.packages)) {
  for (const [dep, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const key = `node_modules/${dep}`;
    if (lock.packages[key]) continue;
    const m = /^@rollup\/rollup-([a-z0-9]+)-([a-z0-9]+(?:-eabi)?)(?:-(gnu|musl|gnueabihf|musleabihf|msvc))?$/.exec(dep);
    if (!m || !OS[m[1]] || !CPU[m[2]]) throw new Error(`${path}: cannot place optional ${dep}; add it by hand`);
    const libc = m[3]?.startsWith('musl') ? ['musl'] : m[3]?.startsWith('gnu') && m[1] === 'linux' ? ['glibc'] : undefined;
    lock.packages[key] = { version, cpu: [CPU[m[2]]], dev: entry.dev, ...(libc ? { libc } : {}), license: 'MIT', optional: true, os: [OS[m[1]]] };
    added += 1;
  }
}
lock.packages = Object.fromEntries(Object.entries(lock.packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b))));
writeFileSync(LOCK, JSON.stringify(lock, null, 2) + '\n');
console.log(`added ${added} platform-only entries to ${LOCK}`);
