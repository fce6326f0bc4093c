// The controller's storage system: tgtd answering on the configured control port and a pool directory
// it can use (tgt backend), or a readable, valid LUN inventory (static backend).
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import type { Config } from '../config.js';
import { FailedPrecondition, Unavailable } from '../errors.js';
import type { CommandRunner } from '../runner.js';
import { parseInventory } from '../controller/static-backend.js';
import { Tgtadm } from '../controller/tgt/tgtadm.js';
import { CHECK, fail, ok, warn, type Check } from './check.js';
import { checkWritableDir } from './state-dir.js';

/** tgtd's control port 0 is what `tgtd` and the tgt packages' service use when given none. */
const DEFAULT_TGTD_CONTROL_PORT = 0;

export async function checkTgtd(cfg: Config, runner: CommandRunner): Promise<Check> {
  const port = cfg.controller.tgt.controlPort;
  const start = port === DEFAULT_TGTD_CONTROL_PORT
    ? 'start tgtd on the controller\'s host (`systemctl enable --now tgt`, package tgt / scsi-target-utils)'
    : `start tgtd with \`tgtd -C ${port}\` on the controller's host, or set controller.tgt.controlPort to the port it uses`;
  try {
    const sys = await new Tgtadm(runner, port).showSystem();
    const iscsi = sys.llds.iscsi;
    if (sys.state !== 'ready' || iscsi !== 'ready') {
      return warn(CHECK.tgtd, `tgtd answers on control port ${port} but is not ready (state ${sys.state || 'unknown'}, iscsi driver ${iscsi ?? 'missing'})`, 'see tgtd\'s log; `tgtadm --op update --mode sys --name State -v ready` if it was set offline');
    }
    return ok(CHECK.tgtd, `tgtd answers on control port ${port}: state ready, iscsi driver ready`);
  } catch (e) {
    if (e instanceof Unavailable) return fail(CHECK.tgtd, e.message.split('; start tgtd')[0]!, start);
    if (e instanceof FailedPrecondition) return fail(CHECK.tgtd, e.message, 'install tgt (tgtadm and tgtd) on the controller\'s host, or set commands.tgtadm.argv');
    return fail(CHECK.tgtd, `tgtadm --op show --mode sys failed: ${(e as Error).message}`, start);
  }
}

export function checkTgtPool(cfg: Config): Promise<Check> {
  return checkWritableDir(CHECK.tgtPool, cfg.controller.tgt.poolDir, 'controller.tgt.poolDir', 'the volumes\' backing files', false);
}

export async function checkInventory(cfg: Config): Promise<Check> {
  const path = cfg.controller.static.inventoryFile;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    return fail(CHECK.inventory, `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'write the LUN inventory (README: static backend) there, or set controller.static.inventoryFile');
  }
  let luns;
  try {
    const doc: unknown = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
    luns = parseInventory(doc, path);
  } catch (e) {
    return fail(CHECK.inventory, (e as Error).message.split('\n')[0]!, `correct ${path}; the controller reads it again at each call`);
  }
  if (luns.length === 0) return warn(CHECK.inventory, `${path} lists no LUNs: CreateVolume has nothing to hand out`, `list the SAN's LUNs in ${path} (iqn, lun, portals, sizeBytes)`);
  const targets = new Set(luns.map((l) => l.iqn)).size;
  return ok(CHECK.inventory, `${path}: ${luns.length} LUN${luns.length === 1 ? '' : 's'} on ${targets} target${targets === 1 ? '' : 's'}`);
}
