// Minimal /proc/self/mountinfo reader for the simulated host (in-use checks and teardown).
import { readFileSync } from 'node:fs';

export interface MountEntry {
  majorMinor: string;
  /** path of the mount's root inside its filesystem (a bind mount of a file or subdir shows it here) */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function readMountInfo(file = '/proc/self/mountinfo'): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep < 6) continue;
    out.push({
      majorMinor: f[2]!,
      root: unescape(f[3]!),
      mountPoint: unescape(f[4]!),
      fsType: f[sep + 1] ?? '',
      source: unescape(f[sep + 2] ?? ''),
    });
  }
  return out;
}
