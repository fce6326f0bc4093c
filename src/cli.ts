#!/usr/bin/env node
// Command line: flags override the config file, which overrides the defaults. Bad flags or an
// invalid config exit 2 with one line saying what is wrong and where.
import { parseArgs } from 'node:util';
import { buildConfig, ConfigError, loadConfigFile, type Config, type LogLevel, type Mode } from './config.js';
import { startDriver, type DriverHandle } from './driver.js';
import { runDoctorCommand } from './doctor/command.js';
import { readInitiatorName } from './node-host/initiator.js';
import { createLogger } from './log.js';
import { SocketInUse } from './server/server.js';
import { VERSION } from './version.js';

const USAGE = `Usage: iscsi-csi [options]
       iscsi-csi doctor [--json] [--mode node|controller|all] [--config FILE] [--kubelet-dir DIR]
                       check this host before installing (see iscsi-csi doctor --help)

  --endpoint URL       CSI socket, unix:///abs/path.sock (default: $CSI_ENDPOINT)
  --mode MODE          node | controller | all (default: all)
  --node-id ID         node id (default: the initiator name from host.initiatorNameFile)
  --driver-name NAME   CSI driver name (default: iscsi.csi.tsdriver.dev)
  --config FILE        YAML or JSON config file (host roots, commands, prefixes, timeouts, backend)
  --log-level LEVEL    trace | debug | info | warn | error (default: info)
  --metrics-address HOST:PORT
                       serve Prometheus metrics over HTTP at /metrics (default: off)
  --version            print the version and exit
  --help               print this help and exit
`;

const EXIT_USAGE = 2;
const EXIT_FAILURE = 1;

function fail(message: string, code = EXIT_USAGE): never {
  process.stderr.write(`iscsi-csi: ${message}\n`);
  process.exit(code);
}

function parseFlags(argv: string[]): { file?: string; overrides: Partial<Config>; help: boolean; version: boolean } {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        endpoint: { type: 'string' },
        mode: { type: 'string' },
        'node-id': { type: 'string' },
        'driver-name': { type: 'string' },
        config: { type: 'string' },
        'log-level': { type: 'string' },
        'metrics-address': { type: 'string' },
        version: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    fail(`${(e as Error).message.split('\n')[0]} (see --help)`);
  }
  const v = parsed.values;
  const overrides: Partial<Config> = {};
  if (v.endpoint !== undefined) overrides.endpoint = v.endpoint;
  if (v.mode !== undefined) overrides.mode = v.mode as Mode;
  if (v['node-id'] !== undefined) overrides.nodeId = v['node-id'];
  if (v['driver-name'] !== undefined) overrides.driverName = v['driver-name'];
  if (v['log-level'] !== undefined) overrides.logLevel = v['log-level'] as LogLevel;
  if (v['metrics-address'] !== undefined) overrides.metricsAddress = v['metrics-address'];
  return { file: v.config, overrides, help: v.help ?? false, version: v.version ?? false };
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  if (flags.help) { process.stdout.write(USAGE); return; }
  if (flags.version) { process.stdout.write(`iscsi-csi ${VERSION}\n`); return; }
  let cfg: Config;
  try {
    cfg = buildConfig(flags.file ? loadConfigFile(flags.file) : undefined, flags.overrides);
  } catch (e) {
    if (e instanceof ConfigError) fail(flags.file ? `invalid config (${flags.file}): ${e.message}` : `invalid option: ${e.message}`);
    throw e;
  }
  const logger = createLogger(cfg.logLevel);
  if (!cfg.nodeId && cfg.mode !== 'controller') {
    try {
      cfg.nodeId = await readInitiatorName(cfg.host.initiatorNameFile);
    } catch (e) {
      fail(`no --node-id given and ${(e as Error).message}`, EXIT_FAILURE);
    }
  }
  // the signal handlers come before the socket does: a SIGTERM that arrives while the driver starts
  // (kubelet may remove a pod at any time) waits for the start, then stops it like any other
  let handle: DriverHandle | undefined;
  let stopRequested: string | undefined;
  const stop = (signal: string) => {
    if (stopRequested) return;
    stopRequested = signal;
    logger.info({ signal }, 'stopping');
    if (handle) stopStarted(handle);
  };
  const stopStarted = (started: DriverHandle) => {
    started.stop().then(
      () => { logger.info('stopped'); process.exit(0); },
      (e: Error) => { logger.error({ err: e.message }, 'stop failed'); process.exit(EXIT_FAILURE); },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    handle = await startDriver(cfg, logger);
  } catch (e) {
    if (e instanceof SocketInUse) fail(e.message, EXIT_FAILURE);
    fail(`cannot start: ${(e as Error).message.split('\n')[0]}`, EXIT_FAILURE);
  }
  if (stopRequested) stopStarted(handle);
}

const DOCTOR = 'doctor';

if (process.argv[2] === DOCTOR) {
  runDoctorCommand(process.argv.slice(3)).then(
    (code) => { process.exitCode = code; },
    (e: Error) => fail(`doctor: ${e.message.split('\n')[0]}`, EXIT_FAILURE),
  );
} else {
  main().catch((e: Error) => fail(`cannot start: ${e.message.split('\n')[0]}`, EXIT_FAILURE));
}
