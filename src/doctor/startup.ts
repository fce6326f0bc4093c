// The node plugin runs the doctor's node checks once at start, after its socket listens (serving never
// waits for them), and logs one warn line per check that is not ok and an info summary: an operator
// reading the pod's log sees what `iscsi-csi doctor` would say.
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { ProcessRunner } from '../runner.js';
import { summarize } from './check.js';
import { nodeChecks, notesOf } from './run.js';

/** Each start-up check command is bounded by this (a hung tool must not keep the checks around). */
export const STARTUP_COMMAND_TIMEOUT_MS = 5_000;

/**
 * Runs the node checks and logs them; never throws. Uses its own runner on the same commands and
 * prefix, so the driver's command counts stay the driver's.
 */
export async function logNodeChecks(cfg: Config, logger: Logger, kubeletDir?: string): Promise<void> {
  const log = logger.child({ component: 'doctor' });
  try {
    const runner = new ProcessRunner(cfg.commands, cfg.commandPrefix, log);
    const checks = await nodeChecks(cfg, runner, { commandTimeoutMs: STARTUP_COMMAND_TIMEOUT_MS, ...(kubeletDir ? { kubeletDir } : {}) });
    for (const c of checks) {
      if (c.status !== 'ok') log.warn({ check: c.name, status: c.status, detail: c.detail, fix: c.fix }, `node check ${c.name}: ${c.status}`);
    }
    const s = summarize(checks);
    log.info({ ok: s.ok, warn: s.warn, fail: s.fail, notes: notesOf(checks) }, `node checks: ${s.ok} ok, ${s.warn} warn, ${s.fail} fail (iscsi-csi doctor --mode node shows them)`);
  } catch (e) {
    log.warn({ err: (e as Error).message }, 'node checks could not run');
  }
}
