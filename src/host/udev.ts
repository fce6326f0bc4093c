// udev's database, read for one fact: whether multipath will claim a path device. multipath's udev
// rules (`multipath -u`) set DM_MULTIPATH_DEVICE_PATH on a path multipathd takes over: 1 = it will,
// 2 = maybe (find_multipaths smart: multipathd waits a while for a second path). multipathd builds the
// map after the path's links exist, so a single-path LUN on a node running multipathd must wait for
// its map; mounting the path device first would keep multipathd from ever taking it.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Sysfs } from './sysfs.js';

export type MultipathClaim = 'claimed' | 'maybe' | 'no' | 'unknown';

const FLAG = 'DM_MULTIPATH_DEVICE_PATH';

/** Parses a `/run/udev/data/b<maj>:<min>` file: its `E:KEY=VALUE` properties. */
export function parseUdevProperties(text: string): Map<string, string> {
  const props = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line.startsWith('E:')) continue;
    const eq = line.indexOf('=');
    if (eq > 2) props.set(line.slice(2, eq), line.slice(eq + 1));
  }
  return props;
}

export function claimOf(props: Map<string, string>): MultipathClaim {
  const v = props.get(FLAG);
  return v === '1' ? 'claimed' : v === '2' ? 'maybe' : 'no';
}

export class Udev {
  constructor(
    readonly dataDir: string,
    private readonly sysfs: Sysfs,
  ) {}

  /** What multipath's udev rules said about the path device `name`; `unknown` without a udev entry. */
  async multipathClaim(name: string): Promise<MultipathClaim> {
    const number = await this.sysfs.deviceNumber(name);
    if (!number) return 'unknown';
    let text: string;
    try {
      text = await fs.readFile(join(this.dataDir, `b${number}`), 'utf8');
    } catch {
      return 'unknown'; // no udev on this node (or its database not shared with the driver)
    }
    return claimOf(parseUdevProperties(text));
  }
}
