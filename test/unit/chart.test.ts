// The Helm chart (charts/iscsi-csi) against the plain manifests: `helm template` with the default
// values must render the driver `kustomize build deploy/` renders (pod specs: images, args, ports,
// probes, mounts, volumes, host settings; RBAC; CSIDriver; the driver configs as buildConfig() reads
// them), and the other values files (charts/iscsi-csi/ci/) must render what they ask for. Runs the
// real helm and kustomize: `make deps` installs them into $(go env GOPATH)/bin (or set HELM and
// KUSTOMIZE); without them this file fails, saying so.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { buildConfig, DEFAULT_DRIVER_NAME, parseListenAddress, type Config } from '../../src/config.js';
import { parseInventory } from '../../src/controller/static-backend.js';
import { METRICS_PATH } from '../../src/metrics/endpoint.js';
import { checkSidecarContainer, parseSidecarImage, SIDECAR_FIXTURES } from './sidecar-help.js';

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

/** `--name=value` (or `--name value`) of a container's args. */
function argOf(c: K8s, name: string): string | undefined {
  const args = (c.args ?? []) as string[];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) return args[i + 1];
    if (args[i]!.startsWith(`--${name}=`)) return args[i]!.slice(name.length + 3);
  }
  return undefined;
}

/** The path a sidecar serves its metrics at: its --metrics-path, else that version's default as its --help prints it. */
function sidecarMetricsPath(c: K8s): string {
  const given = argOf(c, 'metrics-path');
  if (given !== undefined) return given;
  const img = parseSidecarImage(c.image as string);
  if (!img) throw new Error(`${c.name}: ${c.image} is not a sidecar image`);
  const lines = readFileSync(join(SIDECAR_FIXTURES, `${img.name}-${img.tag}.help.txt`), 'utf8').split('\n');
  const at = lines.findIndex((l) => /^\s+(?:-[A-Za-z], )?--?metrics-path\b/.test(l));
  if (at < 0) throw new Error(`${img.name}:${img.tag} has no --metrics-path flag`);
  const m = /\(default "([^"]+)"\)/.exec(`${lines[at]} ${lines[at + 1] ?? ''}`);
  if (!m) throw new Error(`${img.name}:${img.tag} --metrics-path has no default in its --help`);
  return m[1]!;
}

/** Whether every label of `selector` is on `labels`. */
function selects(selector: Record<string, string> | undefined, labels: Record<string, string> | undefined): boolean {
  return Object.keys(selector ?? {}).length > 0 && Object.entries(selector!).every(([k, v]) => labels?.[k] === v);
}

/**
 * What a Prometheus would scrape of a render, against what the pods serve: every ServiceMonitor
 * endpoint and Service port must reach a container port of a selected pod, the driver's port must be
 * its --metrics-address port at METRICS_PATH, a sidecar's its --http-endpoint port at its metrics
 * path, and the prometheus.io annotations must name the driver's port and path. [] when all agree.
 */
function scrapeProblems(objs: K8s[]): string[] {
  const problems: string[] = [];
  const services = objs.filter((o) => o.kind === 'Service');
  const monitors = objs.filter((o) => o.kind === 'ServiceMonitor');
  /** the container behind a Service port, and the port it listens on */
  const target = (svc: K8s, portName: string): { pod: string; c: K8s; port: number } | string => {
    const sp = ((svc.spec.ports ?? []) as K8s[]).find((p) => p.name === portName);
    if (!sp) return `Service ${svc.metadata.name} has no port named ${portName}`;
    const workload = objs.find((o) => ['Deployment', 'DaemonSet'].includes(o.kind) && selects(svc.spec.selector, o.spec.template.metadata.labels));
    if (!workload) return `Service ${svc.metadata.name} selects no pod`;
    for (const c of workload.spec.template.spec.containers as K8s[]) {
      const cp = ((c.ports ?? []) as K8s[]).find((p) => p.name === sp.targetPort || p.containerPort === sp.targetPort);
      if (cp) return { pod: workload.metadata.name, c, port: cp.containerPort };
    }
    return `Service ${svc.metadata.name} port ${portName}: targetPort ${sp.targetPort} is no container port of ${workload.metadata.name}`;
  };
  /** what container c serves metrics on: [port, path] */
  const served = (c: K8s): [number, string] | undefined => {
    if (c.name === 'driver') {
      const address = argOf(c, 'metrics-address');
      return address === undefined ? undefined : [parseListenAddress(address, '--metrics-address').port, METRICS_PATH];
    }
    const endpoint = argOf(c, 'http-endpoint');
    return endpoint === undefined ? undefined : [Number(endpoint.split(':').pop()), sidecarMetricsPath(c)];
  };
  for (const svc of services) {
    if (svc.spec.clusterIP !== 'None') problems.push(`Service ${svc.metadata.name} is not headless`);
    for (const sp of svc.spec.ports as K8s[]) {
      const t = target(svc, sp.name);
      if (typeof t === 'string') { problems.push(t); continue; }
      const s = served(t.c);
      if (!s) problems.push(`Service ${svc.metadata.name} port ${sp.name}: ${t.pod}/${t.c.name} serves no metrics`);
      else if (s[0] !== t.port) problems.push(`Service ${svc.metadata.name} port ${sp.name}: ${t.pod}/${t.c.name} serves metrics on ${s[0]}, not ${t.port}`);
    }
  }
  for (const sm of monitors) {
    const selected = services.filter((svc) => selects(sm.spec.selector?.matchLabels, svc.metadata.labels) && (sm.spec.namespaceSelector?.matchNames ?? []).includes(svc.metadata.namespace));
    if (selected.length === 0) problems.push(`ServiceMonitor ${sm.metadata.name} selects no Service`);
    for (const ep of sm.spec.endpoints as K8s[]) {
      const reached = selected.map((svc) => ({ svc, t: target(svc, ep.port) })).filter((x) => typeof x.t !== 'string');
      if (reached.length === 0) problems.push(`ServiceMonitor ${sm.metadata.name} endpoint port ${ep.port}: no selected Service has it`);
      for (const { svc, t } of reached as { svc: K8s; t: { pod: string; c: K8s; port: number } }[]) {
        const s = served(t.c);
        if (!s) problems.push(`ServiceMonitor ${sm.metadata.name} port ${ep.port} (${svc.metadata.name}): ${t.pod}/${t.c.name} serves no metrics`);
        else if (s[0] !== t.port || s[1] !== ep.path) problems.push(`ServiceMonitor ${sm.metadata.name} port ${ep.port} (${svc.metadata.name}): scrapes ${t.port}${ep.path}, ${t.pod}/${t.c.name} serves ${s[0]}${s[1]}`);
      }
    }
  }
  for (const w of objs.filter((o) => ['Deployment', 'DaemonSet'].includes(o.kind))) {
    const ann = (w.spec.template.metadata.annotations ?? {}) as Record<string, string>;
    if (ann['prometheus.io/scrape'] === undefined) continue;
    const driver = (w.spec.template.spec.containers as K8s[]).find((c) => c.name === 'driver')!;
    const s = served(driver);
    if (!s) problems.push(`${w.metadata.name}: prometheus.io/scrape but the driver serves no metrics`);
    else if (ann['prometheus.io/port'] !== String(s[0]) || ann['prometheus.io/path'] !== s[1]) {
      problems.push(`${w.metadata.name}: prometheus.io annotations say ${ann['prometheus.io/port']}${ann['prometheus.io/path']}, the driver serves ${s[0]}${s[1]}`);
    }
  }
  return problems;
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
    // the start-up checks look at the kubelet dir the pods mount, not /var/lib/kubelet
    expect(nodeCfg.node.kubeletDir).toBe(kubelet);
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
    for (const files of [[], ['ci/nsenter-microk8s-metrics-values.yaml'], ['ci/chroot-values.yaml'], ['ci/servicemonitor-snapshots-values.yaml']]) {
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
    for (const files of [[], ['ci/nsenter-microk8s-metrics-values.yaml'], ['ci/chroot-values.yaml'], ['ci/servicemonitor-snapshots-values.yaml']]) {
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

describe('metrics scraping: ServiceMonitor, headless Services, prometheus.io annotations', () => {
  it('off by default: no Service, no ServiceMonitor, no annotation', () => {
    expect(chart.filter((o) => ['Service', 'ServiceMonitor'].includes(o.kind))).toEqual([]);
    for (const [kind, name] of WORKLOADS) expect(find(chart, kind, name).spec.template.metadata.annotations?.['prometheus.io/scrape'], name).toBeUndefined();
  });

  it('ci/servicemonitor-snapshots-values.yaml: the ServiceMonitor scrapes the driver\'s --metrics-address port at its metrics path on both pods, and the sidecars\' --http-endpoint ports', () => {
    const objs = helmTemplate('ci/servicemonitor-snapshots-values.yaml');
    expect(scrapeProblems(objs)).toEqual([]);
    const sm = find(objs, 'ServiceMonitor', 'iscsi-csi');
    expect(sm.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(sm.metadata.labels).toMatchObject({ release: 'kube-prometheus-stack' });
    expect(sm.spec.endpoints.map((e: K8s) => e.port)).toEqual(['metrics', 'provisioner', 'attacher', 'resizer', 'snapshotter']);
    for (const e of sm.spec.endpoints as K8s[]) expect(e, e.port).toMatchObject({ interval: '15s', scrapeTimeout: '5s' });
    for (const [kind, name] of WORKLOADS) {
      const svc = find(objs, 'Service', `${name}-metrics`);
      expect(svc.spec.ports.find((p: K8s) => p.name === 'metrics'), name).toEqual({ name: 'metrics', port: 29700, targetPort: 'metrics', protocol: 'TCP' });
      expect(containerOf(podSpec(objs, kind, name), 'driver').args, name).toContain('--metrics-address=:29700');
    }
    // the snapshotter's moved port reaches the Service
    expect(find(objs, 'Service', 'iscsi-csi-controller-metrics').spec.ports.find((p: K8s) => p.name === 'snapshotter').port).toBe(9822);
  });

  it('ci/nsenter-microk8s-metrics-values.yaml: prometheus.io annotations naming the driver\'s port and path, Services without a ServiceMonitor', () => {
    const objs = helmTemplate('ci/nsenter-microk8s-metrics-values.yaml');
    expect(scrapeProblems(objs)).toEqual([]);
    for (const [kind, name] of WORKLOADS) {
      expect(find(objs, kind, name).spec.template.metadata.annotations, name).toMatchObject({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': '29655', 'prometheus.io/path': '/metrics' });
      expect(find(objs, 'Service', `${name}-metrics`).spec.clusterIP).toBe('None');
    }
    expect(objs.filter((o) => o.kind === 'ServiceMonitor')).toEqual([]);
    // the static backend: no snapshotter, so none of its ports either
    expect(find(objs, 'Service', 'iscsi-csi-controller-metrics').spec.ports.map((p: K8s) => p.name)).toEqual(['metrics', 'provisioner', 'attacher', 'resizer']);
  });

  it('the check is real: a ServiceMonitor port, path or Service targetPort off the driver\'s, or an annotation off its port, is reported', () => {
    const objs = helmTemplate('ci/servicemonitor-snapshots-values.yaml');
    const mutate = (f: (o: K8s[]) => void): string[] => {
      const copy = structuredClone(objs);
      f(copy);
      return scrapeProblems(copy);
    };
    const sm = (o: K8s[]) => find(o, 'ServiceMonitor', 'iscsi-csi').spec.endpoints[0] as K8s;
    expect(mutate((o) => { sm(o).path = '/metrics/'; })).toEqual([expect.stringMatching(/scrapes 29700\/metrics\/, .*driver serves 29700\/metrics/), expect.stringMatching(/scrapes 29700\/metrics\//)]);
    expect(mutate((o) => { sm(o).port = 'http-metrics'; })).toEqual([expect.stringMatching(/endpoint port http-metrics: no selected Service has it/)]);
    // the node's driver moved to another port: both its Service port and the ServiceMonitor miss it
    expect(mutate((o) => {
      const driver = containerOf(podSpec(o, 'DaemonSet', 'iscsi-csi-node'), 'driver');
      driver.args = (driver.args as string[]).map((x) => (x === '--metrics-address=:29700' ? '--metrics-address=:29701' : x));
    })).toEqual([
      expect.stringMatching(/node-metrics port metrics: iscsi-csi-node\/driver serves metrics on 29701, not 29700/),
      expect.stringMatching(/scrapes 29700\/metrics, iscsi-csi-node\/driver serves 29701\/metrics/),
    ]);
    expect(mutate((o) => { find(o, 'Service', 'iscsi-csi-node-metrics').spec.ports[0].targetPort = 'healthz'; })).toEqual([
      expect.stringMatching(/node-metrics port metrics: iscsi-csi-node\/driver serves metrics on 29700, not 29653/),
      expect.stringMatching(/scrapes 29653\/metrics, iscsi-csi-node\/driver serves 29700\/metrics/),
    ]);
    expect(mutate((o) => { find(o, 'Service', 'iscsi-csi-controller-metrics').spec.ports.find((p: K8s) => p.name === 'resizer').targetPort = 9899; })).toEqual(expect.arrayContaining([expect.stringMatching(/targetPort 9899 is no container port/)]));
    const annotated = helmTemplate('ci/nsenter-microk8s-metrics-values.yaml');
    find(annotated, 'DaemonSet', 'iscsi-csi-node').spec.template.metadata.annotations['prometheus.io/port'] = '29654';
    expect(scrapeProblems(annotated)).toEqual([expect.stringMatching(/iscsi-csi-node: prometheus.io annotations say 29654\/metrics, the driver serves 29655\/metrics/)]);
  });

  it('a ServiceMonitor or annotations without metrics.enabled fail the render', () => {
    for (const set of ['metrics.serviceMonitor.enabled=true', 'metrics.scrapeAnnotations=true']) {
      expect(() => run(HELM, ['template', 'x', CHART, '--kube-version', KUBE_VERSION, '--set', set]), set).toThrow(/need metrics.enabled/);
    }
  });
});

describe('snapshots: the csi-snapshotter sidecar and VolumeSnapshotClasses', () => {
  it('with the tgt backend: the snapshotter (leader election, --extra-create-metadata, its own health port) and its RBAC; the static backend renders neither', () => {
    const snapshotter = containerOf(podSpec(chart, 'Deployment', 'iscsi-csi-controller'), 'csi-snapshotter');
    expect(snapshotter.args).toEqual(expect.arrayContaining(['--leader-election', '--extra-create-metadata', '--http-endpoint=:9812']));
    expect(snapshotter.livenessProbe.httpGet).toEqual({ path: '/healthz/leader-election', port: 'snapshotter' });
    expect(find(chart, 'ClusterRole', 'iscsi-csi-external-snapshotter').rules.length).toBeGreaterThan(0);
    const objs = helmTemplate('ci/nsenter-microk8s-metrics-values.yaml');
    expect((podSpec(objs, 'Deployment', 'iscsi-csi-controller').containers as K8s[]).map((c) => c.name)).not.toContain('csi-snapshotter');
    expect(objs.filter((o) => o.metadata?.name === 'iscsi-csi-external-snapshotter')).toEqual([]);
    expect(JSON.stringify(find(objs, 'ClusterRole', 'iscsi-csi-external-provisioner').rules)).not.toContain('snapshot.storage.k8s.io');
  });

  it('ci/servicemonitor-snapshots-values.yaml: VolumeSnapshotClasses of this driver, the default one annotated', () => {
    const objs = helmTemplate('ci/servicemonitor-snapshots-values.yaml');
    const classes = objs.filter((o) => o.kind === 'VolumeSnapshotClass');
    expect(classes.map((c) => [c.apiVersion, c.metadata.name, c.driver, c.deletionPolicy])).toEqual([
      ['snapshot.storage.k8s.io/v1', 'iscsi-tgt', DEFAULT_DRIVER_NAME, 'Delete'],
      ['snapshot.storage.k8s.io/v1', 'iscsi-tgt-retain', DEFAULT_DRIVER_NAME, 'Retain'],
    ]);
    expect(classes[0]!.metadata.annotations).toEqual({ 'snapshot.storage.kubernetes.io/is-default-class': 'true' });
    expect(classes[1]!.metadata.annotations).toBeUndefined();
  });

  it('VolumeSnapshotClasses without the snapshotter, or with an unknown deletionPolicy, fail the render', () => {
    expect(() => run(HELM, ['template', 'x', CHART, '--kube-version', KUBE_VERSION, '--set', 'controller.backend=static', '--set', 'volumeSnapshotClasses[0].name=a']))
      .toThrow(/volumeSnapshotClasses need the csi-snapshotter.*"static"/);
    expect(() => run(HELM, ['template', 'x', CHART, '--kube-version', KUBE_VERSION, '--set', 'volumeSnapshotClasses[0].name=a', '--set', 'volumeSnapshotClasses[0].deletionPolicy=Keep']))
      .toThrow(/deletionPolicy must be Delete or Retain, not "Keep"/);
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
