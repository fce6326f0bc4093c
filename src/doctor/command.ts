// `iscsi-csi doctor`: the checks an operator would make on a node (or the controller's host) before
// installing, through the same configuration file the driver reads. Exit 0 when nothing failed, 1 when
// something did, 2 for bad flags or an invalid config (one line, as the driver itself).
import { parseArgs } from 'node:util';
import { buildConfig, ConfigError, loadConfigFile, type Config } from '../config.js';
import { createLogger } from '../log.js';
import { ProcessRunner } from '../runner.js';
import { exitCodeOf } from './check.js';
import { DEFAULT_KUBELET_DIR } from './kubelet.js';
import { renderJson, renderTable, DEFAULT_WIDTH } from './render.js';
import { runDoctor, type DoctorMode } from './run.js';

export const DOCTOR_USAGE = `Usage: iscsi-csi doctor [--json] [--mode node|controller|all] [--config FILE] [--kubelet-dir DIR]

  Checks this host as the driver will use it, through the same config file (host roots,
  commandPrefix, commands and their timeouts). Node: iscsiadm, iscsid, the initiator name,
  the iscsi_tcp module, multipathd, the kubelet dir's mount propagation, the state dir.
  Controller: tgtd and the pool dir (tgt backend) or the LUN inventory (static backend).
  Writes nothing but one probe file in the state dir, removed at once.

  --json              one JSON document instead of the table
  --mode MODE         node | controller | all (default: the config file's mode, else node)
  --config FILE       the driver's YAML or JSON config file
  --kubelet-dir DIR   kubelet's root dir (default: node.kubeletDir of the config, ${DEFAULT_KUBELET_DIR})

  Exit status: 0 nothing failed (warnings allowed), 1 a check failed, 2 bad flags or config.
`;

const EXIT_USAGE = 2;
const MODES: readonly DoctorMode[] = ['node', 'controller', 'all'];

interface Output {
  write(text: string): unknown;
  columns?: number;
}

export async function runDoctorCommand(argv: string[], out: Output = process.stdout, err: Output = process.stderr): Promise<number> {
  const usage = (message: string): number => {
    err.write(`iscsi-csi doctor: ${message}\n`);
    return EXIT_USAGE;
  };
  let values;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        json: { type: 'boolean' },
        mode: { type: 'string' },
        config: { type: 'string' },
        'kubelet-dir': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    return usage(`${(e as Error).message.split('\n')[0]} (see --help)`);
  }
  if (values.help) {
    out.write(DOCTOR_USAGE);
    return 0;
  }
  if (values.mode !== undefined && !MODES.includes(values.mode as DoctorMode)) return usage(`--mode must be node, controller or all, got ${JSON.stringify(values.mode)}`);
  let cfg: Config;
  let fileMode: unknown;
  try {
    const file = values.config ? loadConfigFile(values.config) : undefined;
    fileMode = file?.mode;
    cfg = buildConfig(file);
  } catch (e) {
    if (e instanceof ConfigError) return usage(values.config ? `invalid config (${values.config}): ${e.message}` : e.message);
    throw e;
  }
  const kubeletDir = values['kubelet-dir'] ?? cfg.node.kubeletDir;
  if (!kubeletDir.startsWith('/')) return usage('--kubelet-dir must be an absolute path');
  const mode = (values.mode ?? (MODES.includes(fileMode as DoctorMode) ? fileMode : 'node')) as DoctorMode;
  // the runner's own log lines (a command killed at its timeout) would garble the table: the checks say it
  const runner = new ProcessRunner(cfg.commands, cfg.commandPrefix, createLogger('silent'));
  const report = await runDoctor(cfg, runner, { mode, kubeletDir });
  out.write(values.json ? renderJson(report) : renderTable(report, out.columns ?? DEFAULT_WIDTH));
  return exitCodeOf(report.checks);
}
