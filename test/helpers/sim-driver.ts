// A driver (node, or node + controller on the host's tgtd) running in-process on a simulated host,
// with a gRPC client: what the node e2e tests, the benchmark and the demo share.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { buildConfig, type Config, type Mode } from '../../src/config.js';
import { startDriver, type DriverHandle } from '../../src/driver.js';
import { createLogger, type Logger } from '../../src/log.js';
import { ProcessRunner } from '../../src/runner.js';
import { SimulatedHost, unmountUnder, type SimulatedHostOptions } from '../sim/host.js';
import { CsiClient } from './client.js';

export interface SimDriver {
  host: SimulatedHost;
  cfg: Config;
  driver: DriverHandle;
  client: CsiClient;
  runner: ProcessRunner;
  stateDir: string;
  /** starts the driver again on the same host and state (a restart) */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface SimDriverOptions extends SimulatedHostOptions {
  mode?: Mode;
  logger?: Logger;
  configure?: (cfg: Config) => void;
}

export function simDriverConfig(host: SimulatedHost, stateDir: string, mode: Mode, endpoint: string): Config {
  const base = buildConfig(undefined);
  const sim = host.driverConfig();
  return buildConfig(undefined, {
    mode,
    endpoint,
    stateDir,
    nodeId: sim.nodeId,
    logLevel: 'warn',
    host: sim.host,
    commands: { ...base.commands, ...sim.commands },
    timeouts: { ...base.timeouts, deviceWaitMs: 10_000, devicePollMs: 200, multipathWaitMs: 5_000 },
    controller: {
      ...base.controller,
      tgt: { ...base.controller.tgt, controlPort: host.tgtd.controlPort, portals: host.portals, poolDir: join(stateDir, 'pool') },
    },
  });
}

export async function startSimDriver(opts: SimDriverOptions = {}): Promise<SimDriver> {
  const host = await SimulatedHost.create(opts);
  const stateDir = mkdtempSync('/tmp/iscsi-csi-state-');
  const cfg = simDriverConfig(host, stateDir, opts.mode ?? 'node', `unix://${stateDir}/csi.sock`);
  opts.configure?.(cfg);
  const logger = opts.logger ?? createLogger('silent');
  const runner = new ProcessRunner(cfg.commands, cfg.commandPrefix, logger);
  let driver: DriverHandle;
  try {
    driver = await startDriver(cfg, logger, runner);
  } catch (e) {
    // no tgtd, kernel process, loop device or state left behind by a driver that would not start
    await host.destroy().catch(() => undefined);
    rmSync(stateDir, { recursive: true, force: true });
    throw e;
  }
  const self: SimDriver = {
    host, cfg, stateDir, runner, driver,
    client: new CsiClient(cfg.endpoint),
    async restart() {
      await self.driver.stop();
      self.client.close();
      self.driver = await startDriver(cfg, logger, runner);
      self.client = new CsiClient(cfg.endpoint);
    },
    async stop() {
      self.client.close();
      await self.driver.stop().catch(() => undefined);
      // a failed test may leave volumes mounted under the state dir (kubelet paths live there)
      await unmountUnder(stateDir);
      await host.destroy();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
  return self;
}

export function mountCapability(fsType = 'ext4', mode = 'SINGLE_NODE_WRITER', mountFlags: string[] = []): object {
  return { mount: { fs_type: fsType, mount_flags: mountFlags }, access_mode: { mode } };
}

export function blockCapability(mode = 'SINGLE_NODE_WRITER'): object {
  return { block: {}, access_mode: { mode } };
}
