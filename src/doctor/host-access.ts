// How the driver reaches the host's tools, read from the configuration the way the runner applies it
// (a command's own prefix, else the global commandPrefix): through nsenter into a host process's
// namespaces, through chroot into a host mount, or directly. The doctor says which, and reads the
// socket table of the network namespace iscsiadm will run in.
import type { Config, CommandName } from '../config.js';

export type HostAccess =
  | { kind: 'none' }
  | { kind: 'chroot'; root: string }
  | { kind: 'nsenter'; targetPid?: number; mount: boolean; net: boolean }
  | { kind: 'other'; argv: string[] };

/** The prefix the runner puts before this command (its own `prefix`, else the global one). */
export function prefixOf(cfg: Config, name: CommandName): string[] {
  return cfg.commands[name].prefix ?? cfg.commandPrefix;
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Reads a prefix such as `[nsenter, --target, 1, --mount, --net, --]` or `[chroot, /host]`. */
export function hostAccessOf(prefix: readonly string[]): HostAccess {
  if (prefix.length === 0) return { kind: 'none' };
  const tool = baseName(prefix[0]!);
  if (tool === 'chroot') {
    const root = prefix.slice(1).find((a) => !a.startsWith('-'));
    return root ? { kind: 'chroot', root } : { kind: 'other', argv: [...prefix] };
  }
  if (tool !== 'nsenter') return { kind: 'other', argv: [...prefix] };
  let targetPid: number | undefined;
  let mount = false;
  let net = false;
  for (let i = 1; i < prefix.length; i++) {
    const a = prefix[i]!;
    if (a === '--') break;
    const target = /^(?:--target=|-t)(\d+)$/.exec(a);
    if (target) targetPid = Number(target[1]);
    else if ((a === '--target' || a === '-t') && /^\d+$/.test(prefix[i + 1] ?? '')) targetPid = Number(prefix[++i]);
    else if (a === '--all') mount = net = true;
    else if (a === '--mount' || a === '-m' || a.startsWith('--mount=')) mount = true;
    else if (a === '--net' || a === '-n' || a.startsWith('--net=')) net = true;
    else if (/^-[a-zA-Z]+$/.test(a)) {
      // combined short options, e.g. -mn; -a enters all of them
      if (a.includes('m') || a.includes('a')) mount = true;
      if (a.includes('n') || a.includes('a')) net = true;
    }
  }
  return { kind: 'nsenter', ...(targetPid !== undefined ? { targetPid } : {}), mount, net };
}

/** "nsenter into PID 1's mount and network namespaces", "chroot /host", "none, …". */
export function describeHostAccess(access: HostAccess): string {
  switch (access.kind) {
    case 'none':
      return 'none, no commandPrefix: the driver\'s own namespaces';
    case 'chroot':
      return `chroot ${access.root}`;
    case 'nsenter': {
      const spaces = [access.mount ? 'mount' : '', access.net ? 'network' : ''].filter(Boolean).join(' and ') || 'no';
      return `nsenter into ${access.targetPid !== undefined ? `PID ${access.targetPid}'s` : "the target's"} ${spaces} namespace${access.mount && access.net ? 's' : ''}`;
    }
    case 'other':
      return `commandPrefix ${access.argv.join(' ')}`;
  }
}

export const PROC_ROOT = '/proc';

/**
 * The unix socket table of the network namespace a command runs in: with nsenter --net --target N,
 * that of PID N (the node plugin has hostPID, so /proc/1 is the host's init); otherwise the driver's
 * own (chroot does not change the network namespace: the pod needs hostNetwork, as node.yaml has).
 */
export function unixSocketTableOf(access: HostAccess, procRoot = PROC_ROOT): string {
  if (access.kind === 'nsenter' && access.net && access.targetPid !== undefined) return `${procRoot}/${access.targetPid}/net/unix`;
  return `${procRoot}/self/net/unix`;
}
