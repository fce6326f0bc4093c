// Everything a node flow touches on the host, built once per driver from the configuration. Flows
// read as one-line steps over these adapters; tests build the same object over the simulated host.
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { CommandRunner } from '../runner.js';
import { Devices } from '../host/devices.js';
import { Filesystem } from '../host/filesystem.js';
import { Iscsiadm } from '../host/iscsiadm.js';
import { TargetLock } from '../host/locks.js';
import { MetadataStore } from '../host/metadata.js';
import { Mounts } from '../host/mounts.js';
import { Multipath } from '../host/multipath.js';
import { Sysfs } from '../host/sysfs.js';

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
}

export function createNodeHost(cfg: Config, runner: CommandRunner, logger: Logger): NodeHost {
  const sysfs = new Sysfs(cfg.host.sysRoot);
  return {
    cfg,
    iscsi: new Iscsiadm(runner, logger),
    sysfs,
    devices: new Devices(cfg.host.devRoot, sysfs),
    mounts: new Mounts(runner, cfg, logger),
    fs: new Filesystem(runner, cfg, logger),
    multipath: new Multipath(runner, cfg.host.devRoot, logger),
    metadata: new MetadataStore(cfg.stateDir),
    targetLocks: new TargetLock(cfg.stateDir, { logger }),
  };
}
