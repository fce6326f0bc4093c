// The kubelet directory and its mount propagation. The node plugin mounts volumes under it (staging and
// publish paths); kubelet and the pods see those mounts only when the mount holding the directory is
// shared (`shared:N` in mountinfo's optional fields), which the pod's Bidirectional volume needs.
import { realpath, stat } from 'node:fs/promises';
import { readFile } from 'node:fs/promises';
import type { Config } from '../config.js';
import { errnoCode } from '../errors.js';
import { parseMountInfo, type MountInfoEntry } from '../node-host/mounts.js';
import { CHECK, fail, ok, type Check } from './check.js';

export const DEFAULT_KUBELET_DIR = '/var/lib/kubelet';

export interface Propagation {
  /** peer group of a shared mount (`shared:N`) */
  shared?: number;
  /** peer group this mount receives from (`master:N`: a slave) */
  master?: number;
  unbindable: boolean;
}

export function propagationOf(entry: Pick<MountInfoEntry, 'optionalFields'>): Propagation {
  const p: Propagation = { unbindable: false };
  for (const f of entry.optionalFields) {
    const m = /^(shared|master):(\d+)$/.exec(f);
    if (m?.[1] === 'shared') p.shared = Number(m[2]);
    else if (m?.[1] === 'master') p.master = Number(m[2]);
    else if (f === 'unbindable') p.unbindable = true;
  }
  return p;
}

/** "shared:3", "master:1 (a slave)", "private", as findmnt -o PROPAGATION would put it. */
export function describePropagation(p: Propagation): string {
  const parts = [p.shared !== undefined ? `shared:${p.shared}` : '', p.master !== undefined ? `master:${p.master}` : '', p.unbindable ? 'unbindable' : ''].filter(Boolean);
  if (parts.length === 0) return 'private';
  return parts.join(' ') + (p.shared === undefined && p.master !== undefined ? ' (a slave)' : '');
}

/** The mount a path lives on: the longest mount point that is the path or one of its parents; of stacked mounts, the top one. */
export function mountContaining(entries: readonly MountInfoEntry[], path: string): MountInfoEntry | undefined {
  let best: MountInfoEntry | undefined;
  for (const e of entries) {
    const mp = e.mountPoint;
    const contains = mp === '/' || path === mp || path.startsWith(`${mp}/`);
    if (contains && (!best || mp.length >= best.mountPoint.length)) best = e;
  }
  return best;
}

const FIX_PROPAGATION = (dir: string, mount: string) =>
  `on the host the mount holding ${dir} (${mount}) must be shared: \`mount --make-rshared ${mount}\` (systemd makes / shared at boot; a chroot, a container or a unit with MountFlags=private is not); in the node plugin's pod the kubelet dir volume needs mountPropagation: Bidirectional (deploy/node.yaml has it)`;

export async function checkKubeletDir(cfg: Config, kubeletDir: string): Promise<Check> {
  let real: string;
  try {
    const s = await stat(kubeletDir);
    if (!s.isDirectory()) return fail(CHECK.kubeletDir, `${kubeletDir} is not a directory`, 'set node.kubeletDir in the driver config (the chart: kubeletDir), or doctor --kubelet-dir, to the directory kubelet uses (its --root-dir)');
    real = await realpath(kubeletDir);
  } catch (e) {
    return fail(CHECK.kubeletDir, `${kubeletDir} does not exist (${errnoCode(e) ?? (e as Error).message})`, 'set node.kubeletDir in the driver config (the chart: kubeletDir), or doctor --kubelet-dir, to the directory kubelet uses (its --root-dir); in the node plugin\'s pod it is the hostPath volume mounted at the same path');
  }
  let entries: MountInfoEntry[];
  try {
    entries = parseMountInfo(await readFile(cfg.host.mountInfoPath, 'utf8'));
  } catch (e) {
    return fail(CHECK.kubeletDir, `cannot read ${cfg.host.mountInfoPath}: ${errnoCode(e) ?? (e as Error).message}`, 'set host.mountInfoPath to a readable mountinfo (default /proc/self/mountinfo)');
  }
  const mount = mountContaining(entries, real);
  if (!mount) return fail(CHECK.kubeletDir, `no mount in ${cfg.host.mountInfoPath} holds ${real}`, `check host.mountInfoPath (${cfg.host.mountInfoPath})`);
  const p = propagationOf(mount);
  const where = `${kubeletDir}${real !== kubeletDir ? ` (${real})` : ''} is on mount ${mount.mountPoint}, propagation ${describePropagation(p)}`;
  if (p.shared !== undefined) return ok(CHECK.kubeletDir, `${where}: mounts the node plugin makes there reach kubelet and the pods`);
  const why = p.master !== undefined
    ? 'it receives the host\'s mounts but the node plugin\'s mounts do not propagate back, so kubelet and the pods would see empty staging and publish paths'
    : 'mounts the node plugin makes there stay invisible to kubelet and the pods';
  return fail(CHECK.kubeletDir, `${where}: ${why}`, FIX_PROPAGATION(real, mount.mountPoint));
}
