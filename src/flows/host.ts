// The node's real host: the ports of ports.ts over the adapters in src/node-host, built once per driver
// from the configuration. Flows read as one-line steps over these; tests build the same object over
// the simulated host (e2e) or an in-memory one (unit).
import { join } from 'node:path';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { CommandRunner } from '../runner.js';
import { Devices, waitUntil, type WaitOptions } from '../node-host/devices.js';
import { Filesystem } from '../node-host/filesystem.js';
import { Iscsiadm } from '../node-host/iscsiadm.js';
import { IscsiDbLock } from '../node-host/iscsi-db-lock.js';
import { TargetLock } from '../node-host/target-lock.js';
import { MetadataStore } from '../node-host/metadata.js';
import { SessionMarks } from '../node-host/session-marks.js';
import { Mounts } from '../node-host/mounts.js';
import { Multipath } from '../node-host/multipath.js';
import { Sysfs } from '../node-host/sysfs.js';
import { Udev } from '../node-host/udev.js';
import { checkTarget, ensureDir, ensureFile, removeTarget } from '../node-host/target-paths.js';
import { resolvePortals } from '../node-host/resolve.js';
import { ForgottenNodes } from './node-records.js';
import { ProbeGuard } from '../common/probe-guard.js';
import { BoundedMemo } from '../common/bounded-memo.js';
import { SingleFlight } from '../common/single-flight.js';
import type { DeviceSizes, NodeHost, NodeMetrics, SizeWaits, TargetLocks } from './ports.js';

/** The real host, with what forRequest needs to build a request's command adapters. */
export interface RealNodeHost extends NodeHost {
  /** open-iscsi's record lock: a lock.write left by a killed iscsiadm is removed before the next call */
  iscsiDbLock: IscsiDbLock;
}

/** Volume paths whose last usage is kept: more than a node publishes at once. */
const LAST_USAGE_ENTRIES = 4096;

export function createNodeHost(cfg: Config, runner: CommandRunner, logger: Logger, metrics?: NodeMetrics): RealNodeHost {
  const sysfs = new Sysfs(cfg.host.sysRoot);
  const iscsiDbLock = new IscsiDbLock({ lockDir: cfg.host.iscsiLockDir, staleAfterMs: cfg.timeouts.iscsiLockStaleMs });
  return {
    ...commandAdapters(cfg, runner, logger, iscsiDbLock),
    cfg,
    sysfs,
    devices: new Devices(cfg.host.devRoot, sysfs),
    sizes: sysfsSizeWaits(sysfs),
    udev: new Udev(cfg.host.udevDataDir, sysfs),
    metadata: new MetadataStore(cfg.stateDir, logger),
    sessionMarks: new SessionMarks(cfg.stateDir),
    targetLocks: timedLocks(new TargetLock(cfg.stateDir, { logger }), metrics),
    paths: { checkTarget, ensureDir, ensureFile, removeTarget },
    resolver: { resolvePortals },
    forgottenNodes: new ForgottenNodes(),
    probes: new ProbeGuard(),
    lastUsage: new BoundedMemo(LAST_USAGE_ENTRIES),
    discoveries: new SingleFlight(),
    iscsiDbLock,
    ...(metrics ? { metrics } : {}),
  };
}

/** The locks, with each wait for one reported to the metrics. */
function timedLocks(locks: TargetLocks, metrics: NodeMetrics | undefined): TargetLocks {
  if (!metrics) return locks;
  return {
    withLock(key, fn) {
      const asked = performance.now();
      return locks.withLock(key, () => {
        metrics.lockWait((performance.now() - asked) / 1000);
        return fn();
      });
    },
  };
}

/** The adapters that run commands, logging through `logger` (a request's child logger carries its id). */
function commandAdapters(cfg: Config, runner: CommandRunner, logger: Logger, iscsiDbLock: IscsiDbLock): Pick<RealNodeHost, 'iscsi' | 'mounts' | 'fs' | 'multipath'> {
  return {
    iscsi: new Iscsiadm(runner, logger, iscsiDbLock),
    mounts: new Mounts(runner, cfg, logger),
    fs: new Filesystem(runner, cfg, logger),
    multipath: new Multipath(runner, cfg.host.devRoot, cfg.timeouts, logger),
  };
}

/**
 * The same host for one request: command lines are logged with the request's id, while the state
 * shared between requests (locks, metadata store, sysfs and device watchers) stays the same objects.
 */
export function forRequest(host: RealNodeHost, runner: CommandRunner, logger: Logger): RealNodeHost {
  return { ...host, ...commandAdapters(host.cfg, runner, logger, host.iscsiDbLock) };
}

/**
 * A rescan re-reads the capacity; a kernel (or a simulated one) may apply it a little after the write
 * returns. The wait is woken by a change of the paths' `size` attribute where the sysfs reports one,
 * else by the poll.
 */
function sysfsSizeWaits(sysfs: DeviceSizes): SizeWaits {
  return {
    async waitForSizes(devices: string[], minBytes: number, opts: WaitOptions): Promise<void> {
      const sysRoot = sysfs.sysRoot;
      await waitUntil(
        devices.map((d) => ({ dir: join(sysRoot, 'block', d), root: sysRoot, relevant: (f: string | null) => f === null || f === 'size' })),
        async () => {
          const sizes = await Promise.all(devices.map((d) => sysfs.deviceSizeBytes(d)));
          return sizes.every((s) => s !== null && s >= minBytes) ? true : null;
        },
        opts,
      );
    },
  };
}
