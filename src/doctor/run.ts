// Runs the checks of a mode through the driver's own configuration and command runner. Every command
// goes through the runner (argv arrays, the configured prefix), each bounded by the smaller of its
// configured timeout and the doctor's own, so a hung tool delays the report by seconds at most.
import type { Config } from '../config.js';
import type { CommandRunner } from '../runner.js';
import { CHECK, guarded, summarize, type Check, type Summary } from './check.js';
import { checkInitiatorName } from './initiator-name.js';
import { checkIscsiadm, checkIscsid, checkIscsiTcp } from './iscsi.js';
import { checkKubeletDir, DEFAULT_KUBELET_DIR } from './kubelet.js';
import { checkMultipathd } from './multipath.js';
import { checkStateDir } from './state-dir.js';

export type DoctorMode = 'node' | 'controller' | 'all';

/** No doctor command waits longer than this, whatever the configured timeout. */
export const DOCTOR_COMMAND_TIMEOUT_MS = 10_000;

export interface DoctorOptions {
  mode: DoctorMode;
  kubeletDir?: string;
  /** per-command bound (default DOCTOR_COMMAND_TIMEOUT_MS) */
  commandTimeoutMs?: number;
  /** where /proc is (tests) */
  procRoot?: string;
}

export interface DoctorReport {
  mode: DoctorMode;
  checks: Check[];
  summary: Summary;
  /** conclusions drawn from several checks together */
  notes: string[];
}

/** The runner with each call's timeout capped. */
export function boundedRunner(runner: CommandRunner, cfg: Config, capMs: number): CommandRunner {
  return {
    get stats() { return runner.stats; },
    run: (name, args, opts = {}) => runner.run(name, args, { ...opts, timeoutMs: Math.min(opts.timeoutMs ?? cfg.commands[name].timeoutMs, capMs) }),
  };
}

export async function nodeChecks(cfg: Config, runner: CommandRunner, opts: Omit<DoctorOptions, 'mode'> = {}): Promise<Check[]> {
  const r = boundedRunner(runner, cfg, opts.commandTimeoutMs ?? DOCTOR_COMMAND_TIMEOUT_MS);
  return Promise.all([
    guarded(CHECK.iscsiadm, () => checkIscsiadm(cfg, r)),
    guarded(CHECK.iscsid, () => checkIscsid(cfg, r, opts.procRoot)),
    guarded(CHECK.initiatorName, () => checkInitiatorName(cfg)),
    guarded(CHECK.iscsiTcp, () => checkIscsiTcp(cfg)),
    guarded(CHECK.multipathd, () => checkMultipathd(cfg, r)),
    guarded(CHECK.kubeletDir, () => checkKubeletDir(cfg, opts.kubeletDir ?? DEFAULT_KUBELET_DIR)),
    guarded(CHECK.stateDir, () => checkStateDir(cfg.stateDir)),
  ]);
}

export async function controllerChecks(cfg: Config, runner: CommandRunner, opts: Omit<DoctorOptions, 'mode'> = {}): Promise<Check[]> {
  const r = boundedRunner(runner, cfg, opts.commandTimeoutMs ?? DOCTOR_COMMAND_TIMEOUT_MS);
  // loaded here: the node plugin runs the node checks at start and never needs the controller's modules
  const { checkInventory, checkTgtd, checkTgtPool } = await import('./controller.js');
  const backend = cfg.controller.backend === 'tgt'
    ? [guarded(CHECK.tgtd, () => checkTgtd(cfg, r)), guarded(CHECK.tgtPool, () => checkTgtPool(cfg))]
    : [guarded(CHECK.inventory, () => checkInventory(cfg))];
  return Promise.all([...backend, guarded(CHECK.stateDir, () => checkStateDir(cfg.stateDir))]);
}

/** What the checks say together: a host without a kernel initiator, named as such. */
export function notesOf(checks: readonly Check[]): string[] {
  const failed = (name: string) => checks.some((c) => c.name === name && c.status === 'fail');
  if (failed(CHECK.iscsiTcp) && failed(CHECK.iscsid)) {
    return ['This host has no kernel iSCSI initiator (the iscsi_tcp module is not loaded and no iscsid listens): the node plugin cannot attach volumes here until both are fixed.'];
  }
  return [];
}

export async function runDoctor(cfg: Config, runner: CommandRunner, opts: DoctorOptions): Promise<DoctorReport> {
  const node = opts.mode === 'controller' ? [] : await nodeChecks(cfg, runner, opts);
  let controller = opts.mode === 'node' ? [] : await controllerChecks(cfg, runner, opts);
  // one state dir for both modes: checked once
  if (node.length > 0) controller = controller.filter((c) => c.name !== CHECK.stateDir);
  const checks = [...node, ...controller];
  return { mode: opts.mode, checks, summary: summarize(checks), notes: notesOf(checks) };
}
