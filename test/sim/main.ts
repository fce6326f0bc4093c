// `npm run sim -- --endpoint unix:///abs.sock [--multipath] [--state-dir DIR] [--pool-dir DIR] [--log-level L]`:
// a private tgtd on 127.0.0.1, a simulated iSCSI host around it, and the driver (node + controller)
// running in this process against both. Prints exactly one JSON line on stdout once serving:
//   {"endpoint":"unix:///…","portal":"127.0.0.1:PORT","tgtControlPort":N,"root":"R"}
// --pool-dir puts the tgt backend's backing files (and snapshots) there, e.g. on a reflink filesystem
// (scripts/csi-sanity.sh mounts an xfs made with -m reflink=1); default: <root>/pool. All logs go to stderr. SIGTERM/SIGINT: stop the driver, log out every simulated session, unmount
// what is mounted under the root, detach the loop devices, stop tgtd, remove the root, exit 0.
import { join } from 'node:path';
import { buildConfig, defaultConfig, type LogLevel } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { SimulatedHost } from './host.js';

interface Flags { endpoint?: string; multipath: boolean; stateDir?: string; poolDir?: string; logLevel: LogLevel }

function parseFlags(argv: string[]): Flags {
  const flags: Flags = { multipath: false, logLevel: 'info' };
  for (let i = 0; i < argv.length; i++) {
    const [name, inline] = argv[i]!.split(/=(.*)/s, 2) as [string, string | undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${name} needs a value`);
      return v;
    };
    switch (name) {
      case '--endpoint': flags.endpoint = value(); break;
      case '--multipath': flags.multipath = true; break;
      case '--state-dir': flags.stateDir = value(); break;
      case '--pool-dir': flags.poolDir = value(); break;
      case '--log-level': flags.logLevel = value() as LogLevel; break;
      default: throw new Error(`unknown flag ${name} (usage: --endpoint unix:///abs.sock [--multipath] [--state-dir DIR] [--pool-dir DIR] [--log-level LEVEL])`);
    }
  }
  if (!flags.endpoint) throw new Error('--endpoint unix:///abs/path.sock is required');
  return flags;
}

async function main(): Promise<void> {
  let flags: Flags;
  try {
    flags = parseFlags(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`sim: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const logger = createLogger(flags.logLevel);
  const kernelLog = flags.logLevel === 'debug' || flags.logLevel === 'trace' ? 'debug' : flags.logLevel === 'info' ? 'info' : 'warn';
  const host = await SimulatedHost.create({ multipath: flags.multipath, logLevel: kernelLog });
  let driver: { stop(): Promise<void> } | undefined;
  let stopping = false;
  const shutdown = async (code: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info('simulated host: shutting down');
    try {
      await driver?.stop();
    } catch (e) {
      logger.error({ err: (e as Error).message }, 'driver stop failed');
    }
    try {
      await host.destroy();
    } catch (e) {
      logger.error({ err: (e as Error).message }, 'simulated host teardown failed');
      code ||= 1;
    }
    process.exit(code);
  };
  process.on('SIGTERM', () => void shutdown(0));
  process.on('SIGINT', () => void shutdown(0));

  try {
    const base = defaultConfig();
    const sim = host.driverConfig();
    const cfg = buildConfig(undefined, {
      endpoint: flags.endpoint!,
      mode: 'all',
      logLevel: flags.logLevel,
      stateDir: flags.stateDir ?? join(host.root, 'state'),
      nodeId: sim.nodeId,
      host: sim.host,
      commands: { ...base.commands, ...sim.commands },
      controller: {
        ...base.controller,
        backend: 'tgt',
        tgt: { ...base.controller.tgt, controlPort: host.tgtd.controlPort, portals: [host.tgtd.portal], poolDir: flags.poolDir ?? join(host.root, 'pool') },
      },
    });
    const { startDriver } = await import('../../src/driver.js');
    driver = await startDriver(cfg, logger);
    process.stdout.write(JSON.stringify({ endpoint: cfg.endpoint, portal: host.tgtd.portal, tgtControlPort: host.tgtd.controlPort, root: host.root }) + '\n');
  } catch (e) {
    logger.error({ err: (e as Error).message }, 'simulated host: driver did not start');
    await shutdown(1);
  }
}

void main().catch((e: Error) => {
  process.stderr.write(`sim: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
