// Where the simulated host keeps things under its root R (see design.md, "The simulated host").
import { join } from 'node:path';

export interface SimPaths {
  root: string;
  sys: string;
  dev: string;
  byPath: string;
  byId: string;
  mapper: string;
  etcIscsi: string;
  initiatorNameFile: string;
  iscsidConf: string;
  /** open-iscsi DBROOT (meson default /var/lib/iscsi) */
  db: string;
  nodes: string;
  sendTargets: string;
  ifaces: string;
  run: string;
  kernelSocket: string;
  /** udev's database (`/run/udev/data`): one `b<major>:<minor>` file per block device */
  udevData: string;
  /** open-iscsi's LOCK_DIR (`/run/lock/iscsi`: `lock`, and `lock.write` while a fake iscsiadm holds it) */
  lockDir: string;
  bin: string;
  /** what R/bin/<tool> execs: R/libexec/<tool> → the native client, so the process is named like the tool */
  libexec: string;
  backing: string;
  faults: string;
  multipathBindings: string;
}

export function simPaths(root: string): SimPaths {
  const dev = join(root, 'dev');
  const etcIscsi = join(root, 'etc/iscsi');
  const db = join(root, 'var/lib/iscsi');
  const run = join(root, 'run');
  return {
    root,
    sys: join(root, 'sys'),
    dev,
    byPath: join(dev, 'disk/by-path'),
    byId: join(dev, 'disk/by-id'),
    mapper: join(dev, 'mapper'),
    etcIscsi,
    initiatorNameFile: join(etcIscsi, 'initiatorname.iscsi'),
    iscsidConf: join(etcIscsi, 'iscsid.conf'),
    db,
    nodes: join(db, 'nodes'),
    sendTargets: join(db, 'send_targets'),
    ifaces: join(db, 'ifaces'),
    run,
    kernelSocket: join(run, 'kernel.sock'),
    udevData: join(run, 'udev/data'),
    lockDir: join(run, 'lock/iscsi'),
    bin: join(root, 'bin'),
    libexec: join(root, 'libexec'),
    backing: join(root, 'backing'),
    faults: join(root, 'faults.json'),
    multipathBindings: join(root, 'etc/multipath/bindings'),
  };
}
