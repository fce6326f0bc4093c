// /proc/self/mountinfo for the simulated host (in-use checks and teardown), read with the driver's own
// parser: the simulated host never prints mountinfo, so nothing is gained by a second parser.
import { readFileSync } from 'node:fs';
import { parseMountInfo } from '../../src/node-host/mounts.js';

export interface MountEntry {
  majorMinor: string;
  /** path of the mount's root inside its filesystem (a bind mount of a file or subdir shows it here) */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
}

export function readMountInfo(file = '/proc/self/mountinfo'): MountEntry[] {
  return parseMountInfo(readFileSync(file, 'utf8')).map((m) => ({
    majorMinor: `${m.major}:${m.minor}`, root: m.root, mountPoint: m.mountPoint, fsType: m.fsType, source: m.source,
  }));
}
