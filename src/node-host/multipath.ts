// multipath / multipathd, as the two calls detach and expand need. Maps are named by their dm node
// (`/dev/dm-N`), never by the map name, which `user_friendly_names` or aliases may change.
import { setTimeout as sleep } from 'node:timers/promises';
import type { TimeoutConfig } from '../config.js';
import { Internal } from '../errors.js';
import type { Logger } from '../log.js';
import { firstLine, type CommandRunner } from '../runner.js';

export interface MultipathMap {
  dm: string;
  name?: string | null;
  wwid: string;
}

/** multipath-tools prints one of these when the map is open (mounted, held by LVM…). */
const MAP_IN_USE_RE = /map in use|map or partition in use|^fail$/m;

export class Multipath {
  constructor(
    private readonly runner: CommandRunner,
    private readonly devRoot: string,
    private readonly timeouts: Pick<TimeoutConfig, 'mapFlushMs' | 'devicePollMs'>,
    private readonly logger?: Logger,
  ) {}

  /**
   * `multipath -f /dev/dm-N`; a map that is already gone counts as flushed. A map in use is tried
   * again every devicePollMs for up to mapFlushMs: udev probes a dm device (blkid, the dm and
   * multipath rules) after a path is added and after every close of a write, and that brief open
   * makes the flush fail although nothing uses the map (what multipath.conf's remove_retries is for).
   */
  async flush(map: MultipathMap): Promise<void> {
    const deadline = Date.now() + this.timeouts.mapFlushMs;
    for (let attempt = 1; ; attempt++) {
      const r = await this.runner.run('multipath', ['-f', `${this.devRoot}/${map.dm}`], this.logger ? { logger: this.logger } : {});
      if (r.exitCode === 0) return;
      const text = `${r.stdout}\n${r.stderr}`;
      if (/not a multipath device|No such file|does not exist|requires a map name/i.test(text)) return;
      if (!MAP_IN_USE_RE.test(text.trim())) throw new Internal(`flushing multipath map ${map.dm} failed: ${firstLine(r)} (multipath exit ${r.exitCode})`);
      if (Date.now() >= deadline) throw new Internal(`multipath map ${map.dm} (wwid ${map.wwid}) is still in use after ${attempt} flushes in ${this.timeouts.mapFlushMs} ms; unmount it first`);
      await sleep(this.timeouts.devicePollMs);
    }
  }

  /** `multipathd resize map <name|dm>` after every path device was rescanned. */
  async resize(map: MultipathMap): Promise<void> {
    const r = await this.runner.run('multipathd', ['resize', 'map', map.name ?? map.dm], this.logger ? { logger: this.logger } : {});
    if (r.exitCode !== 0 || /^fail/m.test(r.stdout)) throw new Internal(`resizing multipath map ${map.dm} failed: ${firstLine(r)} (multipathd exit ${r.exitCode})`);
  }
}
