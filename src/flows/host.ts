// Everything a node flow touches on the host, built once per driver from the configuration. Flows
// read as one-line steps over these adapters; tests build the same object over the simulated host.
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { CommandRunner } from '../runner.js';
import { Devices } from '../node-host/devices.js';
import { Filesystem } from '../node-host/filesystem.js';
import { Iscsiadm } from '../node-host/iscsiadm.js';
import { IscsiDbLock } from '../node-host/iscsi-db-lock.js';
import { TargetLock } from '../node-host/target-lock.js';
import { MetadataStore } from '../node-host/metadata.js';
import { Mounts } from '../node-host/mounts.js';
import { Multipath } from '../node-host/multipath.js';
import { Sysfs } from '../node-host/sysfs.js';
import { ForgottenNodes } from './node-records.js';
import { ProbeGuard } from '../common/probe-guard.js';
import { Udev } from '../node-host/udev.js';
import { SingleFlight } from '../common/single-flight.js';
import type { PortalTarget } from '../node-host/iscsiadm.js';

export interface NodeHost {
  cfg: Config;
  iscsi: Iscsiadm;
  sysfs: Sysfs;
  devices: Devices;
  mounts: Mounts;
  fs: Filesystem;
  multipath: Multipath;
  metadata: MetadataStore;
  targetLocks: TargetLock;
  /** node records this process logged out of and deleted (see node-records.ts) */
  forgottenNodes: ForgottenNodes;
  /** I/O probes of volume paths (stats): bounded, never two at once per path */
  probes: ProbeGuard;
  udev: Udev;
  /** SendTargets discoveries under way, shared by the stages that ask the same portal the same way */
  discoveries: SingleFlight<PortalTarget[]>;
  /** open-iscsi's record lock: a lock.write left by a killed iscsiadm is removed before the next call */
  iscsiDbLock: IscsiDbLock;
}

export function createNodeHost(cfg: Config, runner: CommandRunner, logger: Logger): NodeHost {
  const sysfs = new Sysfs(cfg.host.sysRoot);
  const iscsiDbLock = new IscsiDbLock({ lockDir: cfg.host.iscsiLockDir, staleAfterMs: cfg.timeouts.iscsiLockStaleMs });
  return {
    ...commandAdapters(cfg, runner, logger, iscsiDbLock),
    cfg,
    sysfs,
    devices: new Devices(cfg.host.devRoot, sysfs),
    metadata: new MetadataStore(cfg.stateDir),
    targetLocks: new TargetLock(cfg.stateDir, { logger }),
    forgottenNodes: new ForgottenNodes(),
    probes: new ProbeGuard(),
    udev: new Udev(cfg.host.udevDataDir, sysfs),
    discoveries: new SingleFlight(),
    iscsiDbLock,
  };
}

/** The adapters that run commands, logging through `logger` (a request's child logger carries its id). */
function commandAdapters(cfg: Config, runner: CommandRunner, logger: Logger, iscsiDbLock: IscsiDbLock): Pick<NodeHost, 'iscsi' | 'mounts' | 'fs' | 'multipath'> {
  return {
    iscsi: new Iscsiadm(runner, logger, iscsiDbLock),
    mounts: new Mounts(runner, cfg, logger),
    fs: new Filesystem(runner, cfg, logger),
    multipath: new Multipath(runner, cfg.host.devRoot, logger),
  };
}

/**
 * The same host for one request: command lines are logged with the request's id, while the state
 * shared between requests (locks, metadata store, sysfs and device watchers) stays the same objects.
 */
export function forRequest(host: NodeHost, runner: CommandRunner, logger: Logger): NodeHost {
  return { ...host, ...commandAdapters(host.cfg, runner, logger, host.iscsiDbLock) };
}
