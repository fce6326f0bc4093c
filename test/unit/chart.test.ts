// The Helm chart (charts/iscsi-csi) against the plain manifests: `helm template` with the default
// values must render the driver `kustomize build deploy/` renders (pod specs: images, args, ports,
// probes, mounts, volumes, host settings; RBAC; CSIDriver; the driver configs as buildConfig() reads
// them), and the other values files (charts/iscsi-csi/ci/) must render what they ask for. Runs the
// real helm and kustomize: `make deps` installs them into $(go env GOPATH)/bin (or set HELM and
// KUSTOMIZE); without them this file fails, saying so.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { buildConfig, DEFAULT_DRIVER_NAME, parseListenAddress, type Config } from '../../src/config.js';
import { parseInventory } from '../../src/controller/static-backend.js';
import { checkSidecarContainer } from './sidecar-help.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CHART = join(REPO, 'charts/iscsi-csi');
const RENDER_TIMEOUT_MS = 60_000;
// the oldest Kubernetes the chart supports (Chart.yaml kubeVersion); a go-installed helm would
// otherwise template for v1.20.0, its built-in default without release ldflags
const KUBE_VERSION = '1.34.0';

type K8s = Record<string, any>;

function goBin(): string {
  if (process.env.GOBIN) return process.env.GOBIN;
  try {
    return join(execFileSync('go', ['env', 'GOPATH'], { encoding: 'utf8' }).trim(), 'bin');
  } catch {
    return '';
  }
}

const HELM = process.env.HELM ?? join(goBin(), 'helm');
const KUSTOMIZE = process.env.KUSTOMIZE ?? join(goBin(), 'kustomize');

function run(bin: string, args: string[]): string {
  const r = spawnSync(bin, args, { cwd: REPO, encoding: 'utf8', timeout: RENDER_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw new Error(`${bin} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${bin} ${args.join(' ')} exited ${r.status}:\n${r.stderr}`);
  return r.stdout;
}

function parseDocs(text: string, what: string): K8s[] {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length > 0) throw new Error(`${what}: ${d.errors[0]!.message}`);
    return d.toJS() as K8s;
  }).filter((o) => o !== null && typeof o === 'object');
}

function helmTemplate(...valuesFiles: string[]): K8s[] {
  const args = ['template', 'iscsi-csi', CHART, '--namespace', 'iscsi-csi', '--kube-version', KUBE_VERSION, ...valuesFiles.flatMap((f) => ['-f', join(CHART, f)])];
  return parseDocs(run(HELM, args), `helm ${args.join(' ')}`);
}

function find(objs: K8s[], kind: string, name: string): K8s {
  const found = objs.filter((o) => o.kind === kind && o.metadata?.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length}`);
  return found[0]!;
}

function podSpec(objs: K8s[], kind: 'Deployment' | 'DaemonSet', name: string): K8s {
  return find(objs, kind, name).spec.template.spec;
}

function containerOf(pod: K8s, name: string): K8s {
  const c = (pod.containers as K8s[]).find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

/** What a pod runs, with the API server's default filled in where one side leaves it implicit. */
function normalizedPod(pod: K8s): K8s {
  return {
    ...pod,
    containers: (pod.containers as K8s[]).map((c) => ({ imagePullPolicy: 'IfNotPresent', ...c })),
  };
}

function configOf(objs: K8s[], cmName: string, mode: Config['mode']): Config {
  const cm = find(objs, 'ConfigMap', cmName);
  return buildConfig(parseYaml(cm.data['config.yaml'] as string), { mode });
}

const WORKLOADS = [['Deployment', 'iscsi-csi-controller', 'controller'], ['DaemonSet', 'iscsi-csi-node', 'node']] as const;

let chart: K8s[] = [];
let kustomize: K8s[] = [];

beforeAll(() => {
  for (const [what, bin, pkg] of [['helm', HELM, 'helm.sh/helm/v3/cmd/helm@v3.22.0'], ['kustomize', KUSTOMIZE, 'sigs.k8s.io/kustomize/kustomize/v5@v5.8.2']] as const) {
    if (!existsSync(bin)) throw new Error(`${what} not found at ${bin}: \`make deps\` installs it (go install ${pkg}), or set ${what.toUpperCase()}=<path>`);
  }
  chart = helmTemplate();
  kustomize = parseDocs(run(KUSTOMIZE, ['build', join(REPO, 'deploy')]), 'kustomize build deploy/');
}, 2 * RENDER_TIMEOUT_MS);

describe('chart default render = kustomize build deploy/', () => {
  it('renders the same objects, less the Namespace (helm install -n creates it; the README says how to label it)', () => {
    const keys = (objs: K8s[]) => objs.map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`).sort();
    expect(keys(chart)).toEqual(keys(kustomize).filter((k) => !k.startsWith('Namespace/')));
  });

  it('the same pods: images, args, ports, probes, security contexts, mounts, volumes, host settings, placement', () => {
    for (const [kind, name] of WORKLOADS) {
      const a = normalizedPod(podSpec(chart, kind, name));
      const b = normalizedPod(podSpec(kustomize, kind, name));
      // first the parts that matter most, for a readable failure
      for (const c of b.containers as K8s[]) {
        const mine = containerOf(a, c.name);
        expect(mine.image, `${name}/${c.name} image`).toBe(c.image);
        expect(mine.args, `${name}/${c.name} args`).toEqual(c.args);
        expect(mine.volumeMounts, `${name}/${c.name} volumeMounts`).toEqual(c.volumeMounts);
      }
      expect(a.volumes, `${name} volumes`).toEqual(b.volumes);
      expect(a, `${name} pod spec`).toEqual(b);
    }
  });

  it('the same workload settings: one controller replica with Recreate, the DaemonSet rolling one node at a time', () => {
    for (const [kind, name] of WORKLOADS) {
      const { template: _a, selector: _sa, ...a } = find(chart, kind, name).spec;
      const { template: _b, selector: _sb, ...b } = find(kustomize, kind, name).spec;
      expect(a, name).toEqual(b);
    }
  });

  it('the same RBAC: ServiceAccounts, rules, bindings', () => {
    for (const kind of ['ServiceAccount', 'ClusterRole', 'Role', 'ClusterRoleBinding', 'RoleBinding']) {
      const strip = (o: K8s) => ({ ...o, metadata: { name: o.metadata.name, namespace: o.metadata.namespace } });
      const mine = chart.filter((o) => o.kind === kind).map(strip);
      const theirs = kustomize.filter((o) => o.kind === kind).map(strip);
      expect(mine.length, kind).toBeGreaterThan(0);
      const byName = (list: K8s[]) => Object.fromEntries(list.map((o) => [o.metadata.name, o]));
      expect(byName(mine), kind).toEqual(byName(theirs));
    }
  });

  it('the same CSIDriver spec', () => {
    expect(find(chart, 'CSIDriver', DEFAULT_DRIVER_NAME).spec).toEqual(find(kustomize, 'CSIDriver', DEFAULT_DRIVER_NAME).spec);
  });

  it('the same driver configs, as the driver reads them', () => {
    for (const [, , role] of WORKLOADS) {
      const cm = `iscsi-csi-${role}-config`;
      expect(configOf(chart, cm, role), cm).toEqual(configOf(kustomize, cm, role));
    }
  });

  it('the check is real: one changed argument is a difference', () => {
    const changed = structuredClone(podSpec(chart, 'Deployment', 'iscsi-csi-controller'));
    containerOf(changed, 'csi-resizer').args[0] = '--csi-address=/csi/other.sock';
    expect(normalizedPod(changed)).not.toEqual(normalizedPod(podSpec(kustomize, 'Deployment', 'iscsi-csi-controller')));
  });
});

describe('chart values files (charts/iscsi-csi/ci/)', () => {
  it('nsenter into iscsid, microk8s kubelet dir, metrics on, node.healing, static backend with its inventory', () => {
    const objs = helmTemplate('ci/nsenter-microk8s-metrics-values.yaml');
    const kubelet = '/var/snap/microk8s/common/var/lib/kubelet';
    const node = podSpec(objs, 'DaemonSet', 'iscsi-csi-node');
    const registrar = containerOf(node, 'node-driver-registrar');
    expect(registrar.args).toContain(`--kubelet-registration-path=${kubelet}/plugins/${DEFAULT_DRIVER_NAME}/csi.sock`);
    const hostPaths = Object.fromEntries((node.volumes as K8s[]).filter((v) => v.hostPath).map((v) => [v.name, v.hostPath.path]));
    expect(hostPaths).toMatchObject({ 'socket-dir': `${kubelet}/plugins/${DEFAULT_DRIVER_NAME}`, 'registration-dir': `${kubelet}/plugins_registry`, 'kubelet-dir': kubelet });
    expect(JSON.stringify(node)).not.toMatch(/"(--[a-z-]+=)?\/var\/lib\/kubelet/);
    const driverMount = (containerOf(node, 'driver').volumeMounts as K8s[]).find((m) => m.name === 'kubelet-dir');
    expect(driverMount).toEqual({ name: 'kubelet-dir', mountPath: kubelet, mountPropagation: 'Bidirectional' });

    const nodeCfg = configOf(objs, 'iscsi-csi-node-config', 'node');
    expect(nodeCfg.commandPrefix.slice(0, 2)).toEqual(['sh', '-c']);
    expect(nodeCfg.commandPrefix[2]).toMatch(/exec nsenter --target "\$\{p%\/comm\}" --mount --net -- "\$@"/);
    expect(nodeCfg.node.healing).toEqual({ enabled: true, intervalMs: 60_000, orphanGraceMs: 600_000, reapOrphans: false });
    expect(nodeCfg.logLevel).toBe('debug');

    for (const [kind, name] of WORKLOADS) {
      const driver = containerOf(podSpec(objs, kind, name), 'driver');
      expect(driver.args, name).toContain('--metrics-address=:29655');
      expect(driver.ports, name).toContainEqual({ name: 'metrics', containerPort: 29655, protocol: 'TCP' });
    }
    const controllerCfg = configOf(objs, 'iscsi-csi-controller-config', 'controller');
    expect(controllerCfg.controller.backend).toBe('static');
    expect(controllerCfg.controller.static.wipeOnDeleteMiB).toBe(1);
    const inventory = find(objs, 'ConfigMap', 'iscsi-csi-controller-config').data['inventory.yaml'] as string;
    expect(controllerCfg.controller.static.inventoryFile).toBe('/etc/iscsi-csi/inventory.yaml');
    expect(parseInventory(parseYaml(inventory), 'inventory.yaml').map((l) => l.key)).toEqual(['iqn.2001-05.com.example:array1/3']);
    const controller = podSpec(objs, 'Deployment', 'iscsi-csi-controller');
    expect(controller.tolerations).toEqual([{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists', effect: 'NoSchedule' }]);
    // helm merges a values file's map into the default one: the values file drops the tgt-host label with null
    expect(controller.nodeSelector).toEqual({ 'kubernetes.io/os': 'linux', 'node-role.kubernetes.io/control-plane': '' });
    const sc = find(objs, 'StorageClass', 'iscsi-static');
    expect(sc).toMatchObject({ provisioner: DEFAULT_DRIVER_NAME, reclaimPolicy: 'Retain', allowVolumeExpansion: true, parameters: { fsType: 'xfs' } });
  });

  it('chroot: the host\'s / at /host on both pods, k0s kubelet dir, a pool outside the state dir, a default StorageClass', () => {
    const objs = helmTemplate('ci/chroot-values.yaml');
    for (const [kind, name, role] of WORKLOADS) {
      const pod = podSpec(objs, kind, name);
      expect(configOf(objs, `iscsi-csi-${role}-config`, role).commandPrefix, name).toEqual(['chroot', '/host']);
      expect((containerOf(pod, 'driver').volumeMounts as K8s[]).find((m) => m.name === 'host-root'), name).toEqual({ name: 'host-root', mountPath: '/host', mountPropagation: 'HostToContainer' });
      expect((pod.volumes as K8s[]).find((v) => v.name === 'host-root')?.hostPath.path, name).toBe('/');
    }
    const node = podSpec(objs, 'DaemonSet', 'iscsi-csi-node');
    expect(containerOf(node, 'node-driver-registrar').args).toContain(`--kubelet-registration-path=/var/lib/k0s/kubelet/plugins/${DEFAULT_DRIVER_NAME}/csi.sock`);
    const cfg = configOf(objs, 'iscsi-csi-controller-config', 'controller');
    expect(cfg.controller.tgt.portals).toEqual(['10.0.0.5:3260', '10.0.1.5:3260']);
    const controller = podSpec(objs, 'Deployment', 'iscsi-csi-controller');
    const pool = (containerOf(controller, 'driver').volumeMounts as K8s[]).find((m) => m.mountPath === '/srv/iscsi-pool');
    expect((controller.volumes as K8s[]).find((v) => v.name === pool?.name)?.hostPath.path).toBe('/srv/iscsi-pool');
    expect(find(objs, 'StorageClass', 'iscsi-tgt').metadata.annotations).toEqual({ 'storageclass.kubernetes.io/is-default-class': 'true' });
  });

  it('every render\'s sidecars use released tags and flags of their version', () => {
    for (const files of [[], ['ci/nsenter-microk8s-metrics-values.yaml'], ['ci/chroot-values.yaml']]) {
      const objs = files.length ? helmTemplate(...files) : chart;
      const problems = [...WORKLOADS].flatMap(([kind, name]) => (podSpec(objs, kind, name).containers as K8s[])
        .filter((c) => c.name !== 'driver').flatMap((c) => checkSidecarContainer(c as { name: string; image: string }).map((p) => `${files.join(',') || 'defaults'}: ${name}/${p}`)));
      expect(problems).toEqual([]);
    }
  });

  it('every render\'s driver args are flags of the driver\'s own --help; --metrics-address is an address it accepts', () => {
    // dist/ is built by the test run's global setup (tsc)
    const help = run(process.execPath, [join(REPO, 'dist/src/cli.js'), '--help']);
    const known = new Set([...help.matchAll(/^\s+--([a-z][a-z-]*)/gm)].map((m) => m[1]!));
    expect(known).toContain('config');
    for (const files of [[], ['ci/nsenter-microk8s-metrics-values.yaml'], ['ci/chroot-values.yaml']]) {
      const objs = files.length ? helmTemplate(...files) : chart;
      for (const [kind, name] of WORKLOADS) {
        const args = containerOf(podSpec(objs, kind, name), 'driver').args as string[];
        for (const arg of args.filter((a) => a.startsWith('--'))) {
          const [flagName, value] = arg.slice(2).split(/=(.*)/s);
          expect(known.has(flagName!), `${files.join(',') || 'defaults'}: ${name} driver ${arg} is not in iscsi-csi --help`).toBe(true);
          if (flagName === 'metrics-address') expect(() => parseListenAddress(value!, '--metrics-address')).not.toThrow();
        }
      }
    }
  });

  it('a wrong hostAccess.strategy or backend fails the render with a message naming the value', () => {
    expect(() => run(HELM, ['template', 'x', CHART, '--kube-version', KUBE_VERSION, '--set', 'hostAccess.strategy=ssh'])).toThrow(/hostAccess.strategy must be nsenter or chroot, not "ssh"/);
    expect(() => run(HELM, ['template', 'x', CHART, '--kube-version', KUBE_VERSION, '--set', 'controller.backend=lvm'])).toThrow(/controller.backend must be tgt or static, not "lvm"/);
  });
});

describe('the iscsid nsenter prefix (hostAccess.nsenter.nodeTarget: iscsid)', () => {
  it('runs the tool through nsenter in the namespaces of a process named iscsid, and fails with 127 without one', () => {
    const prefix = configOf(helmTemplate('ci/nsenter-microk8s-metrics-values.yaml'), 'iscsi-csi-node-config', 'node').commandPrefix;
    const dir = mkdtempSync(join(tmpdir(), 'iscsid-nsenter-'));
    try {
      // a fake nsenter that prints what it was asked, and a process whose comm is "iscsid"
      writeFileSync(join(dir, 'nsenter'), '#!/bin/sh\necho "$@"\n');
      chmodSync(join(dir, 'nsenter'), 0o755);
      const env = { ...process.env, PATH: `${dir}:${process.env.PATH}` };
      const [sh, ...rest] = prefix;
      const before = spawnSync(sh!, [...rest, 'iscsiadm', '-m', 'session'], { env, encoding: 'utf8' });
      const realIscsid = before.status === 0;
      copyFileSync('/bin/sleep', join(dir, 'iscsid'));
      chmodSync(join(dir, 'iscsid'), 0o755);
      const fake = spawn(join(dir, 'iscsid'), ['30'], { stdio: 'ignore' });
      const pid = fake.pid!;
      try {
        const r = spawnSync(sh!, [...rest, 'iscsiadm', '-m', 'session'], { env, encoding: 'utf8' });
        expect(r.status, r.stderr).toBe(0);
        const m = /^--target (\d+) --mount --net -- iscsiadm -m session$/.exec(r.stdout.trim());
        expect(m, r.stdout).not.toBeNull();
        // the first iscsid in /proc: ours, or the machine's own if it runs one
        if (!realIscsid) expect(Number(m![1])).toBe(pid);
      } finally {
        fake.kill();
      }
      if (!realIscsid) {
        expect(before.status).toBe(127);
        expect(before.stderr).toMatch(/no iscsid process/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
