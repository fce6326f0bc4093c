// udev's database, read for one fact: whether multipath will claim a path device. multipath's udev
// rules (`multipath -u`) set DM_MULTIPATH_DEVICE_PATH on a path multipathd takes over: 1 = it will,
// 2 = maybe (find_multipaths smart: multipathd waits a while for a second path). multipathd builds the
// map after the path's links exist, so a single-path LUN on a node running multipathd must wait for
// its map; mounting the path device first would keep multipathd from ever taking it.
import { promises as fs, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Sysfs } from './sysfs.js';
import { waitUntil } from './devices.js';

export type MultipathClaim = 'claimed' | 'maybe' | 'no' | 'unknown';

const FLAG = 'DM_MULTIPATH_DEVICE_PATH';
/**
 * udevd makes a device's links first and writes its database entry right after: the driver, woken
 * by the by-path link, may look before the entry exists. It waits this long for it.
 */
const DB_ENTRY_WAIT_MS = 2_000;
const DB_ENTRY_POLL_MS = 100;

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

  /**
   * What multipath's udev rules said about the path device `name`. Its database entry may come a
   * moment after its links; `unknown` when there is no udev database here or no entry came in time.
   */
  async multipathClaim(name: string): Promise<MultipathClaim> {
    const number = await this.sysfs.deviceNumber(name);
    if (!number) return 'unknown';
    const entry = `b${number}`;
    const read = async (): Promise<MultipathClaim | null> => {
      try {
        // synchronous: udev keeps its database on /run (tmpfs), a read from memory that costs less than a thread-pool round trip
        return claimOf(parseUdevProperties(readFileSync(join(this.dataDir, entry), 'utf8')));
      } catch {
        return null;
      }
    };
    const now = await read();
    if (now) return now;
    const hasDatabase = await fs.stat(this.dataDir).then((st) => st.isDirectory(), () => false);
    if (!hasDatabase) return 'unknown'; // no udev on this node, or its database not shared with the driver
    const r = await waitUntil([{ dir: this.dataDir, root: this.dataDir, relevant: (f) => f === null || f === entry }], read, { deadlineMs: DB_ENTRY_WAIT_MS, pollMs: DB_ENTRY_POLL_MS });
    return r.ok ? r.value : 'unknown';
  }
}
