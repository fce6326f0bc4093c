// What a Kubernetes CSI sidecar accepts, read from the fixtures in test/fixtures/sidecars/ (see the
// README there): the flags of one image:tag from its own `--help` output, and the tags released for
// each image. Used by deploy.test.ts (deploy/) and chart.test.ts (the Helm chart's renders).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SIDECAR_FIXTURES = fileURLToPath(new URL('../fixtures/sidecars/', import.meta.url));
export const SIDECAR_REGISTRY = 'registry.k8s.io/sig-storage/';

export interface SidecarFlag {
  name: string;
  /** takes no value unless written `--name=value` (Go's flag and pflag: `--name false` is not a value) */
  bool: boolean;
  /** pflag's `type[=default]`: the value may be left out, but is given only as `--name=value` */
  optionalValue?: boolean;
}

/**
 * Flags of a `--help` text. Go's flag package prints `  -name type` (or `  -name` for a bool), the
 * description on the next lines after a TAB; pflag prints `  -n, --name type   description` (a bool
 * without type; `type[=default]` for a value that may be left out). Either way with one or two dashes
 * on the command line. Both print a backquoted word of the description in place of the type (`-http-endpoint
 * :8080`), which for a bool flag (provisioner's `--enable-pprof /debug/pprof/`) looks like a value: such
 * a flag used bare would be reported as needing a value; none of the manifests' flags is one.
 */
export function parseHelpFlags(text: string): Map<string, SidecarFlag> {
  const flags = new Map<string, SidecarFlag>();
  for (const line of text.split('\n')) {
    const goFlag = /^ {2}-([A-Za-z0-9][\w.-]*)(?: (\S+))?$/.exec(line);
    if (goFlag) {
      flags.set(goFlag[1]!, { name: goFlag[1]!, bool: goFlag[2] === undefined });
      continue;
    }
    const pflag = /^\s+(?:-[A-Za-z0-9], )?--([A-Za-z0-9][\w.-]*)(?:(?: (\S+))?(?: {2,}.*)?)$/.exec(line);
    if (pflag) flags.set(pflag[1]!, { name: pflag[1]!, bool: pflag[2] === undefined, optionalValue: pflag[2]?.includes('[=') ?? false });
  }
  return flags;
}

/** `name type` lines (comments `#`): flags read from a sidecar's source where no --help could be captured. */
function parseFlagList(text: string): Map<string, SidecarFlag> {
  const flags = new Map<string, SidecarFlag>();
  for (const line of text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'))) {
    const [name, type] = line.split(/\s+/);
    flags.set(name!, { name: name!, bool: type === 'bool' });
  }
  return flags;
}

export interface SidecarImage {
  name: string; // csi-provisioner
  tag: string; // v6.4.0
}

export function parseSidecarImage(image: string): SidecarImage | undefined {
  if (!image.startsWith(SIDECAR_REGISTRY)) return undefined;
  const m = /^([a-z0-9-]+):(v\d+\.\d+\.\d+)$/.exec(image.slice(SIDECAR_REGISTRY.length));
  return m ? { name: m[1]!, tag: m[2]! } : undefined;
}

/** The flags of image:tag, or an error message saying which fixture is missing. */
export function sidecarFlags(img: SidecarImage): Map<string, SidecarFlag> | string {
  const help = join(SIDECAR_FIXTURES, `${img.name}-${img.tag}.help.txt`);
  if (existsSync(help)) {
    const flags = parseHelpFlags(readFileSync(help, 'utf8'));
    return flags.size > 0 ? flags : `${help} holds no flag`;
  }
  const list = join(SIDECAR_FIXTURES, `${img.name}-${img.tag}.flags.txt`);
  if (existsSync(list)) return parseFlagList(readFileSync(list, 'utf8'));
  return `no --help fixture for ${img.name}:${img.tag}: run test/fixtures/sidecars/capture.sh ${img.name}:${img.tag}`;
}

interface ReleasedTags {
  captured: string;
  images: Record<string, { modules: Record<string, { source: string; tags: string[] }> }>;
}

export function releasedTags(name: string): string[] {
  const doc = JSON.parse(readFileSync(join(SIDECAR_FIXTURES, 'released-tags.json'), 'utf8')) as ReleasedTags;
  return Object.values(doc.images[name]?.modules ?? {}).flatMap((m) => m.tags);
}

/**
 * Problems of a sidecar's args against its flags: unknown flags, a bool given a separate value, a
 * value flag without a value, a positional argument (the sidecars take none; Go's flag parsing stops
 * at the first one, silently ignoring every flag after it).
 */
export function checkSidecarArgs(args: string[], flags: Map<string, SidecarFlag>): string[] {
  const problems: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const m = /^--?([A-Za-z0-9][\w.-]*)(=(.*))?$/.exec(arg);
    if (!m) {
      problems.push(`${JSON.stringify(arg)} is not a flag (a positional argument ends flag parsing)`);
      continue;
    }
    const flag = flags.get(m[1]!);
    if (!flag) {
      problems.push(`${arg}: no flag --${m[1]} in this version`);
      continue;
    }
    if (m[2] !== undefined) {
      if (flag.bool && !/^(true|false|1|0|t|f|TRUE|FALSE|True|False)$/.test(m[3]!)) problems.push(`${arg}: --${flag.name} is a bool`);
    } else if (!flag.bool && !flag.optionalValue) {
      const next = args[i + 1];
      if (next === undefined || next.startsWith('-')) problems.push(`${arg}: --${flag.name} needs a value`);
      else i++;
    }
  }
  return problems;
}

/** Every problem of one container (image tag released, args known to that version), or [] for a non-sidecar image. */
export function checkSidecarContainer(c: { name: string; image: string; args?: string[] }): string[] {
  const img = parseSidecarImage(c.image);
  if (!img) return c.image.startsWith(SIDECAR_REGISTRY) ? [`${c.name}: image ${c.image} is not ${SIDECAR_REGISTRY}<name>:vX.Y.Z`] : [];
  const problems: string[] = [];
  const tags = releasedTags(img.name);
  if (tags.length === 0) problems.push(`${c.name}: no released tags of ${img.name} in test/fixtures/sidecars/released-tags.json`);
  else if (!tags.includes(img.tag)) problems.push(`${c.name}: ${img.name}:${img.tag} is not a released tag (released: ${tags.join(' ')})`);
  const flags = sidecarFlags(img);
  if (typeof flags === 'string') problems.push(`${c.name}: ${flags}`);
  else problems.push(...checkSidecarArgs(c.args ?? [], flags).map((p) => `${c.name} (${img.name}:${img.tag}): ${p}`));
  return problems;
}
