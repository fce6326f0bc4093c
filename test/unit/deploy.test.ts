// The deployment artefacts (deploy/, Dockerfile, .dockerignore) checked against the driver's own code:
// what an operator would otherwise find out only on a cluster — a manifest that does not parse, a
// driver name that does not match, a config key kubelet's pod would crash on, a StorageClass parameter
// the controller refuses, a tool the image lacks, paths and sockets that do not line up.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { buildConfig, DEFAULT_DRIVER_NAME, socketPathOf, type CommandName, type Config } from '../../src/config.js';
import { tgtChapFromSecrets as chapFromSecrets } from '../../src/controller/tgt/accounts.js';
import { TgtBackend } from '../../src/controller/tgt/backend.js';
import { volumeIdFor } from '../../src/controller/names.js';
import { snapshotHandlers } from '../../src/controller/snapshots.js';
import { createLogger } from '../../src/log.js';
import { CONTEXT_KEYS, parseTargetSpec } from '../../src/contract/volume-context.js';
import { SESSION_CHAP_KEYS } from '../../src/contract/chap.js';
import type { CommandRunner } from '../../src/runner.js';
import { checkSidecarArgs, checkSidecarContainer, releasedTags, sidecarFlags, SIDECAR_REGISTRY } from './sidecar-help.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const DEPLOY = join(REPO, 'deploy');

// Manifests are plain data of many shapes: navigated dynamically, checked by the assertions.
type K8s = Record<string, any>;

interface Doc {
  where: string; // file#index, for messages
  obj: K8s;
}

function yamlFilesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return yamlFilesUnder(path);
    return /\.ya?ml$/.test(e.name) ? [path] : [];
  });
}

const FILES = yamlFilesUnder(DEPLOY);
const PARSED = FILES.map((file) => ({ file: relative(REPO, file), docs: parseAllDocuments(readFileSync(file, 'utf8')) }));
const DOCS: Doc[] = PARSED.flatMap(({ file, docs }) => docs.map((d, i) => ({ where: `${file}#${i}`, obj: d.toJS() as K8s })));

function objects(kind: string): K8s[] {
  return DOCS.map((d) => d.obj).filter((o) => o?.kind === kind);
}

function object(kind: string, name: string): K8s {
  const found = objects(kind).filter((o) => o.metadata?.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name} under deploy/, found ${found.length}`);
  return found[0]!;
}

function podSpec(kind: 'Deployment' | 'DaemonSet', name: string): K8s {
  return object(kind, name).spec.template.spec;
}

function container(pod: K8s, name: string): K8s {
  const c = (pod.containers as K8s[]).find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
}

/** `--flag value` or `--flag=value` from a container's args. */
function flag(c: K8s, name: string): string | undefined {
  const args = (c.args ?? []) as string[];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) return args[i + 1];
    if (args[i]!.startsWith(`--${name}=`)) return args[i]!.slice(name.length + 3);
  }
  return undefined;
}

/** The volume mounted at (or above) `path` in container `c`, with the sub-path below its mount point. */
function volumeAt(pod: K8s, c: K8s, path: string): { volume: K8s; mount: K8s; rest: string } {
  const mounts = ((c.volumeMounts ?? []) as K8s[])
    .filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length);
  const mount = mounts[0];
  if (!mount) throw new Error(`container ${c.name} mounts nothing at ${path}`);
  const volume = (pod.volumes as K8s[]).find((v) => v.name === mount.name);
  if (!volume) throw new Error(`volume ${mount.name} of container ${c.name} is not declared`);
  return { volume, mount, rest: path.slice(mount.mountPath.length) };
}

/** The driver config a Deployment/DaemonSet's driver container reads, built as the driver would. */
function driverConfigOf(kind: 'Deployment' | 'DaemonSet', name: string): Config {
  const pod = podSpec(kind, name);
  const driver = container(pod, 'driver');
  const file = flag(driver, 'config');
  expect(file, `${name}: driver --config`).toBeDefined();
  const { volume, rest } = volumeAt(pod, driver, file!);
  expect(volume.configMap?.name, `${name}: --config ${file} comes from a ConfigMap`).toBeDefined();
  const cm = object('ConfigMap', volume.configMap.name);
  const key = rest.replace(/^\//, '');
  expect(typeof cm.data?.[key], `ConfigMap ${cm.metadata.name} has key ${key}`).toBe('string');
  return buildConfig(parseYaml(cm.data[key]), { mode: flag(driver, 'mode') as Config['mode'] });
}

function effectivePrefix(cfg: Config, name: CommandName): string[] {
  return cfg.commands[name].prefix ?? cfg.commandPrefix;
}

const NO_COMMANDS: CommandRunner = {
  run: () => Promise.reject(new Error('the parameter check must not run commands')),
  stats: { commands: 0, commandMs: 0, byName: {} },
};

function tgtBackend(): TgtBackend {
  return new TgtBackend({ cfg: driverConfigOf('Deployment', 'iscsi-csi-controller'), runner: NO_COMMANDS, logger: createLogger('silent'), reconcileIntervalMs: 0 });
}

function secretData(name: string, namespace: string): Record<string, string> {
  const s = objects('Secret').find((o) => o.metadata.name === name && o.metadata.namespace === namespace);
  if (!s) throw new Error(`Secret ${namespace}/${name} is not defined under deploy/`);
  return { ...(s.stringData ?? {}) };
}

describe('deploy/ manifests', () => {
  it('has every expected file, and every YAML document parses into an object with apiVersion, kind and metadata.name', () => {
    for (const f of ['csidriver.yaml', 'rbac.yaml', 'controller.yaml', 'node.yaml', 'config-node.yaml', 'config-controller.yaml',
      'storageclass-tgt.yaml', 'storageclass-chap.yaml', 'pv-static.yaml', 'pvc-examples.yaml', 'snapshot-examples.yaml', 'README.md']) {
      expect(existsSync(join(DEPLOY, f)), `deploy/${f}`).toBe(true);
    }
    for (const { file, docs } of PARSED) {
      expect(docs.length, `${file} holds no document`).toBeGreaterThan(0);
      for (const d of docs) expect([...d.errors, ...d.warnings].map((e) => `${file}: ${e.message}`)).toEqual([]);
    }
    for (const { where, obj } of DOCS) {
      expect(obj, `${where} is empty`).toBeTypeOf('object');
      expect(obj?.apiVersion, `${where} apiVersion`).toBeTypeOf('string');
      expect(obj?.kind, `${where} kind`).toBeTypeOf('string');
      expect(obj?.metadata?.name, `${where} metadata.name`).toBeTypeOf('string');
    }
  });

  it('names every object once per kind and namespace (a duplicate would silently replace the other)', () => {
    const keys = DOCS.map(({ obj }) => `${obj.kind}/${obj.metadata.namespace ?? ''}/${obj.metadata.name}`);
    expect(keys.filter((k, i) => keys.indexOf(k) !== i)).toEqual([]);
  });

  it('registers the driver under its default name everywhere: CSIDriver, StorageClasses, PVs, kubelet registration', () => {
    const driver = object('CSIDriver', DEFAULT_DRIVER_NAME);
    expect(driver.spec).toMatchObject({ attachRequired: true, podInfoOnMount: false, volumeLifecycleModes: ['Persistent'], fsGroupPolicy: 'File' });
    for (const sc of objects('StorageClass')) expect(sc.provisioner, sc.metadata.name).toBe(DEFAULT_DRIVER_NAME);
    for (const pv of objects('PersistentVolume')) expect(pv.spec.csi.driver, pv.metadata.name).toBe(DEFAULT_DRIVER_NAME);
    const pod = podSpec('DaemonSet', 'iscsi-csi-node');
    const registrationPath = flag(container(pod, 'node-driver-registrar'), 'kubelet-registration-path')!;
    expect(registrationPath).toBe(`/var/lib/kubelet/plugins/${DEFAULT_DRIVER_NAME}/csi.sock`);
    // the path kubelet is told is where the driver's socket really is on the host
    const driver0 = container(pod, 'driver');
    const { volume, rest } = volumeAt(pod, driver0, socketPathOf(flag(driver0, 'endpoint')!));
    expect(`${volume.hostPath.path}${rest}`).toBe(registrationPath);
  });

  it('points every sidecar at the driver socket, on the same volume', () => {
    for (const [kind, name] of [['Deployment', 'iscsi-csi-controller'], ['DaemonSet', 'iscsi-csi-node']] as const) {
      const pod = podSpec(kind, name);
      const driver = container(pod, 'driver');
      const socket = socketPathOf(flag(driver, 'endpoint')!);
      const driverVolume = volumeAt(pod, driver, socket).volume.name;
      const sidecars = (pod.containers as K8s[]).filter((c) => c.name !== 'driver');
      expect(sidecars.length).toBeGreaterThan(0);
      for (const c of sidecars) {
        expect(flag(c, 'csi-address'), `${name}/${c.name}`).toBe(socket);
        expect(volumeAt(pod, c, socket).volume.name, `${name}/${c.name} socket volume`).toBe(driverVolume);
      }
    }
  });

  it('checks liveness through the livenessprobe sidecar on the port the driver container declares', () => {
    for (const [kind, name] of [['Deployment', 'iscsi-csi-controller'], ['DaemonSet', 'iscsi-csi-node']] as const) {
      const pod = podSpec(kind, name);
      const driver = container(pod, 'driver');
      const probePort = driver.livenessProbe.httpGet.port;
      const declared = (driver.ports as K8s[]).find((p) => p.name === probePort || p.containerPort === probePort);
      expect(declared, `${name}: probe port ${probePort} declared on the driver container`).toBeDefined();
      const endpoint = flag(container(pod, 'liveness-probe'), 'http-endpoint')!;
      expect(Number(endpoint.split(':').pop()), `${name}: livenessprobe --http-endpoint`).toBe(declared!.containerPort);
      expect(container(pod, 'liveness-probe').image).toMatch(/^registry\.k8s\.io\/sig-storage\/livenessprobe:v\d+\.\d+\.\d+$/);
    }
  });

  it('runs the controller with the four sidecars, leader-elected, one replica that is gone before the next starts', () => {
    const deploy = object('Deployment', 'iscsi-csi-controller');
    expect(deploy.spec.replicas).toBe(1);
    expect(deploy.spec.strategy.type).toBe('Recreate');
    const pod = deploy.spec.template.spec;
    expect(flag(container(pod, 'driver'), 'mode')).toBe('controller');
    for (const [c, image] of [['csi-provisioner', 'csi-provisioner'], ['csi-attacher', 'csi-attacher'], ['csi-resizer', 'csi-resizer'], ['csi-snapshotter', 'csi-snapshotter']]) {
      const sidecar = container(pod, c!);
      expect(sidecar.image).toMatch(new RegExp(`^registry\\.k8s\\.io/sig-storage/${image}:v\\d+\\.\\d+\\.\\d+$`));
      expect(sidecar.args, c).toContain('--leader-election');
    }
  });

  it('gives the node plugin what host attach needs: privileged, hostPID, hostNetwork, Bidirectional kubelet dir, host paths', () => {
    const pod = podSpec('DaemonSet', 'iscsi-csi-node');
    const driver = container(pod, 'driver');
    expect(flag(driver, 'mode')).toBe('node');
    expect(driver.securityContext.privileged).toBe(true);
    expect(pod.hostPID).toBe(true);
    expect(pod.hostNetwork).toBe(true);
    expect(volumeAt(pod, driver, '/var/lib/kubelet').mount.mountPropagation).toBe('Bidirectional');
    for (const path of ['/dev', '/sys', '/etc/iscsi', '/var/lib/iscsi', '/run/lock/iscsi', '/var/lib/iscsi-csi']) {
      const { volume, mount } = volumeAt(pod, driver, path);
      expect(mount.mountPath, `${path} is its own mount`).toBe(path);
      expect(volume.hostPath?.path, `${path} is the host's`).toBe(path);
    }
    expect(container(pod, 'node-driver-registrar').image).toMatch(/^registry\.k8s\.io\/sig-storage\/csi-node-driver-registrar:v\d+\.\d+\.\d+$/);
  });
});

describe('sidecars against their releases (test/fixtures/sidecars/)', () => {
  const LEADER_ELECTED = ['csi-provisioner', 'csi-attacher', 'csi-resizer', 'csi-snapshotter'];

  it('every sidecar image is a released tag, and every argument a flag of that version as its own --help prints them', () => {
    const pods = [...objects('Deployment'), ...objects('DaemonSet')].map((o) => ({ name: o.metadata.name as string, spec: o.spec.template.spec as K8s }));
    expect(pods.length).toBeGreaterThan(0);
    const problems: string[] = [];
    let sidecars = 0;
    for (const { name, spec } of pods) {
      for (const c of spec.containers as K8s[]) {
        if (c.name === 'driver') continue;
        // every other container is a Kubernetes CSI sidecar, so none escapes the check
        expect(c.image, `${name}/${c.name}`).toMatch(new RegExp(`^${SIDECAR_REGISTRY.replace(/\./g, '\\.')}`));
        problems.push(...checkSidecarContainer(c as { name: string; image: string; args?: string[] }).map((p) => `${name}/${p}`));
        sidecars++;
      }
    }
    expect(sidecars).toBe(7);
    expect(problems).toEqual([]);
  });

  it('the check is real: a misspelt flag, a bool given a separate value, a positional and an unreleased tag are refused', () => {
    const resizer = sidecarFlags({ name: 'csi-resizer', tag: 'v2.3.0' });
    if (typeof resizer === 'string') throw new Error(resizer);
    expect(checkSidecarArgs(['--handle-volume-inuse-error=false'], resizer)).toEqual([]);
    expect(checkSidecarArgs(['--handle-volume-in-use-error=false'], resizer)).toEqual([expect.stringMatching(/no flag --handle-volume-in-use-error/)]);
    expect(checkSidecarArgs(['--leader-election', 'false'], resizer)).toEqual([expect.stringMatching(/is not a flag/)]);
    expect(checkSidecarArgs(['--leader-election=maybe'], resizer)).toEqual([expect.stringMatching(/is a bool/)]);
    expect(checkSidecarArgs(['--timeout'], resizer)).toEqual([expect.stringMatching(/needs a value/)]);
    expect(releasedTags('csi-attacher')).not.toContain('v4.99.0');
    expect(checkSidecarContainer({ name: 'x', image: `${SIDECAR_REGISTRY}csi-attacher:v4.99.0`, args: [] }))
      .toEqual(expect.arrayContaining([expect.stringMatching(/csi-attacher:v4\.99\.0 is not a released tag/), expect.stringMatching(/no --help fixture/)]));
  });

  it('provisioner, attacher, resizer, snapshotter: leader election, their own --http-endpoint port (off the driver\'s), probed on /healthz/leader-election through a named port', () => {
    const pod = podSpec('Deployment', 'iscsi-csi-controller');
    const taken = new Map<number, string>();
    for (const c of pod.containers as K8s[]) {
      for (const p of (c.ports ?? []) as K8s[]) if (!LEADER_ELECTED.includes(c.name)) taken.set(p.containerPort, `${c.name}/${p.name}`);
      const endpoint = flag(c, 'http-endpoint');
      if (endpoint && !LEADER_ELECTED.includes(c.name)) taken.set(Number(endpoint.split(':').pop()), `${c.name} --http-endpoint`);
    }
    expect([...taken.keys()], 'the driver\'s healthz port').toContain(9808);
    for (const name of LEADER_ELECTED) {
      const c = container(pod, name);
      expect(c.args, name).toContain('--leader-election');
      const endpoint = flag(c, 'http-endpoint');
      expect(endpoint, `${name} --http-endpoint`).toMatch(/^:\d+$/);
      const port = Number(endpoint!.slice(1));
      expect(taken.get(port), `${name}: port ${port} is free`).toBeUndefined();
      taken.set(port, name);
      const declared = ((c.ports ?? []) as K8s[]).find((p) => p.containerPort === port);
      expect(declared?.name, `${name}: containerPort ${port} has a name`).toMatch(/^[a-z][a-z0-9-]{0,14}$/);
      expect(c.livenessProbe?.httpGet, name).toEqual({ path: '/healthz/leader-election', port: declared!.name });
    }
    expect(container(pod, 'csi-provisioner').args).toContain('--extra-create-metadata');
    expect(container(pod, 'csi-snapshotter').args).toContain('--extra-create-metadata');
  });
});

describe('driver configs in the ConfigMaps', () => {
  it('node: valid for buildConfig(); iscsiadm, multipath, multipathd run on the host through nsenter, filesystem tools in the container', () => {
    const cfg = driverConfigOf('DaemonSet', 'iscsi-csi-node');
    expect(cfg.mode).toBe('node');
    expect(cfg.driverName).toBe(DEFAULT_DRIVER_NAME);
    expect(cfg.commandPrefix).toEqual(['nsenter', '--target', '1', '--mount', '--net', '--']);
    for (const name of ['iscsiadm', 'multipath', 'multipathd'] as const) expect(effectivePrefix(cfg, name), name).toEqual(cfg.commandPrefix);
    for (const name of ['blkid', 'blockdev', 'fsck', 'mount', 'umount', 'mkfs.ext4', 'mkfs.ext3', 'mkfs.xfs', 'mkfs.btrfs', 'resize2fs', 'xfs_growfs', 'btrfs', 'stat', 'find'] as const) {
      expect(effectivePrefix(cfg, name), name).toEqual([]);
    }
  });

  it('node: the state dir and host roots are the host paths mounted into the pod at the same place', () => {
    const cfg = driverConfigOf('DaemonSet', 'iscsi-csi-node');
    const pod = podSpec('DaemonSet', 'iscsi-csi-node');
    const driver = container(pod, 'driver');
    for (const path of [cfg.stateDir, cfg.host.sysRoot, cfg.host.devRoot, cfg.host.initiatorNameFile, cfg.host.udevDataDir, cfg.host.iscsiLockDir]) {
      const { volume, mount, rest } = volumeAt(pod, driver, path);
      expect(`${volume.hostPath?.path}${rest}`, `${path} (mounted at ${mount.mountPath})`).toBe(path);
    }
  });

  it('controller: valid for buildConfig() and for the tgt backend (portals, iqnPrefix, shared target name)', () => {
    const cfg = driverConfigOf('Deployment', 'iscsi-csi-controller');
    expect(cfg.mode).toBe('controller');
    expect(cfg.controller.backend).toBe('tgt');
    expect(cfg.controller.tgt.portals.length).toBeGreaterThan(0);
    expect(() => tgtBackend()).not.toThrow();
    // tgtadm is the host's (the image has no tgt)
    expect(effectivePrefix(cfg, 'tgtadm')[0]).toBe('nsenter');
  });

  it('controller: the pool and the state are on a hostPath at the same path, where the host tgtd opens the files', () => {
    const cfg = driverConfigOf('Deployment', 'iscsi-csi-controller');
    const pod = podSpec('Deployment', 'iscsi-csi-controller');
    expect(pod.hostPID, 'nsenter --target 1 needs the host PID namespace').toBe(true);
    const driver = container(pod, 'driver');
    for (const path of [cfg.stateDir, cfg.controller.tgt.poolDir]) {
      const { volume, rest } = volumeAt(pod, driver, path);
      expect(`${volume.hostPath?.path}${rest}`, path).toBe(path);
    }
  });

  it('a typo in a config key is caught (the check above can fail)', () => {
    const cm = object('ConfigMap', 'iscsi-csi-node-config');
    const typo = (cm.data['config.yaml'] as string).replace('commandPrefix:', 'commandPrefx:');
    expect(() => buildConfig(parseYaml(typo))).toThrow(/unknown key commandPrefx/);
  });
});

describe('StorageClasses and volumes', () => {
  it('every StorageClass parameter is a string and accepted by the tgt backend, with the provisioner secret it names', () => {
    const backend = tgtBackend();
    const classes = objects('StorageClass');
    expect(classes.map((c) => c.metadata.name).sort()).toEqual(['iscsi-tgt', 'iscsi-tgt-chap', 'iscsi-tgt-shared']);
    for (const sc of classes) {
      const params = sc.parameters as Record<string, unknown>;
      for (const [k, v] of Object.entries(params)) expect(typeof v, `${sc.metadata.name}: ${k}`).toBe('string');
      const secretName = params['csi.storage.k8s.io/provisioner-secret-name'] as string | undefined;
      const secrets = secretName ? secretData(secretName, params['csi.storage.k8s.io/provisioner-secret-namespace'] as string) : {};
      expect(() => backend.checkParameters(params as Record<string, string>, secrets), sc.metadata.name).not.toThrow();
      expect(params['csi.storage.k8s.io/fstype'], `${sc.metadata.name} names a filesystem`).toMatch(/^(ext4|ext3|xfs|btrfs)$/);
      expect(sc.allowVolumeExpansion, sc.metadata.name).toBe(true);
    }
    // the check is real: a misspelt parameter is refused
    expect(() => backend.checkParameters({ targetmode: 'shared' }, {})).toThrow(/unknown StorageClass parameter/);
  });

  it('the CHAP class gets real CHAP credentials from its provisioner secret, and the node gets the same from its node-stage secret', () => {
    const params = object('StorageClass', 'iscsi-tgt-chap').parameters as Record<string, string>;
    expect(params.chap).toBe('true');
    const provisioner = secretData(params['csi.storage.k8s.io/provisioner-secret-name']!, params['csi.storage.k8s.io/provisioner-secret-namespace']!);
    const creds = chapFromSecrets(provisioner, 'provisioner secret');
    expect(creds?.username).toBe(provisioner[SESSION_CHAP_KEYS.username]);
    const nodeStage = secretData(params['csi.storage.k8s.io/node-stage-secret-name']!, params['csi.storage.k8s.io/node-stage-secret-namespace']!);
    const spec = parseTargetSpec({ targetPortal: '192.0.2.10:3260', iqn: 'iqn.2026-11.com.example.k8s:v', lun: '1', sessionCHAPAuth: 'true' }, nodeStage, 'default');
    expect(spec.sessionChap?.username).toBe(creds?.username);
  });

  it('the static PV uses only the in-tree volumeAttributes keys, and the node accepts them with its node-stage secret', () => {
    const pv = object('PersistentVolume', 'san-array1-lun3');
    const attrs = pv.spec.csi.volumeAttributes as Record<string, string>;
    const known = Object.values(CONTEXT_KEYS) as string[];
    expect(Object.keys(attrs).filter((k) => !known.includes(k))).toEqual([]);
    for (const key of ['targetPortal', 'portals', 'iqn', 'lun', 'fsType', 'sessionCHAPAuth']) expect(attrs, key).toHaveProperty(key);
    const ref = pv.spec.csi.nodeStageSecretRef;
    const spec = parseTargetSpec(attrs, secretData(ref.name, ref.namespace), 'default');
    expect(spec.portals.length).toBe(2);
    expect(spec.lun).toBe(3);
    expect(spec.sessionChap?.username).toBeTypeOf('string');
    // a claim binds exactly this PV
    expect(objects('PersistentVolumeClaim').some((c) => c.spec.volumeName === pv.metadata.name)).toBe(true);
  });

  it('the examples claim a Filesystem and a Block volume, the Block one used as a device', () => {
    const claims = objects('PersistentVolumeClaim').filter((c) => c.spec.storageClassName === 'iscsi-tgt' && !c.spec.dataSource);
    expect(claims.map((c) => c.spec.volumeMode).sort()).toEqual(['Block', 'Filesystem']);
    const block = claims.find((c) => c.spec.volumeMode === 'Block')!;
    const pod = objects('Pod').find((p) => (p.spec.volumes as K8s[]).some((v) => v.persistentVolumeClaim?.claimName === block.metadata.name))!;
    expect((pod.spec.containers as K8s[]).some((c) => (c.volumeDevices ?? []).length > 0)).toBe(true);
  });

  it('the snapshot examples: a VolumeSnapshotClass of this driver, a snapshot of an example claim, a claim restored from it', () => {
    const classes = objects('VolumeSnapshotClass');
    expect(classes.map((c) => c.metadata.name)).toEqual(['iscsi-tgt']);
    for (const c of classes) {
      expect(c.apiVersion).toBe('snapshot.storage.k8s.io/v1');
      expect(c.driver, c.metadata.name).toBe(DEFAULT_DRIVER_NAME);
      expect(['Delete', 'Retain'], `${c.metadata.name} deletionPolicy`).toContain(c.deletionPolicy);
      for (const [k, v] of Object.entries((c.parameters ?? {}) as Record<string, unknown>)) expect(typeof v, `${c.metadata.name}: ${k}`).toBe('string');
    }
    const snapshots = objects('VolumeSnapshot');
    expect(snapshots.length).toBeGreaterThan(0);
    const claims = objects('PersistentVolumeClaim');
    for (const snap of snapshots) {
      expect(classes.map((c) => c.metadata.name), snap.metadata.name).toContain(snap.spec.volumeSnapshotClassName);
      const source = claims.find((c) => c.metadata.name === snap.spec.source.persistentVolumeClaimName && c.metadata.namespace === snap.metadata.namespace);
      expect(source, `${snap.metadata.name}: its source claim is an example`).toBeDefined();
      expect(source!.spec.storageClassName, 'a claim of the tgt backend').toMatch(/^iscsi-tgt/);
    }
    const restored = claims.filter((c) => c.spec.dataSource?.kind === 'VolumeSnapshot');
    expect(restored.length).toBeGreaterThan(0);
    for (const c of restored) {
      expect(c.spec.dataSource.apiGroup).toBe('snapshot.storage.k8s.io');
      const snap = snapshots.find((x) => x.metadata.name === c.spec.dataSource.name && x.metadata.namespace === c.metadata.namespace);
      expect(snap, `${c.metadata.name}: the VolumeSnapshot it restores`).toBeDefined();
      const source = claims.find((x) => x.metadata.name === snap!.spec.source.persistentVolumeClaimName)!;
      expect(c.spec.volumeMode, c.metadata.name).toBe(source.spec.volumeMode);
    }
  });

  it('the driver\'s CreateSnapshot takes each VolumeSnapshotClass\'s parameters with the snapshotter\'s --extra-create-metadata keys', async () => {
    const create = snapshotHandlers(tgtBackend()).CreateSnapshot as (req: unknown) => Promise<unknown>;
    const missing = volumeIdFor('tgt', 'no-such-volume');
    const attempt = (parameters: Record<string, string>) => create({ name: 'snapshot-1', source_volume_id: missing, parameters, secrets: {} });
    const metadata = { 'csi.storage.k8s.io/volumesnapshot/name': 's', 'csi.storage.k8s.io/volumesnapshot/namespace': 'default', 'csi.storage.k8s.io/volumesnapshotcontent/name': 'snapcontent-1' };
    for (const c of objects('VolumeSnapshotClass')) {
      // past the parameter check: the (absent) source volume is what it refuses
      await expect(attempt({ ...(c.parameters ?? {}), ...metadata }), c.metadata.name).rejects.toThrow(/source volume .* does not exist/);
    }
    // the check is real: a parameter the driver does not know is refused before that
    await expect(attempt({ ...metadata, snapshotMode: 'reflink' })).rejects.toThrow(/unknown VolumeSnapshotClass parameter/);
  });

  it('kustomization.yaml applies only kinds every cluster has: the snapshot kinds need the CRDs of a cluster add-on', () => {
    const resources = (parseYaml(readFileSync(join(DEPLOY, 'kustomization.yaml'), 'utf8')) as { resources: string[] }).resources;
    const kinds = DOCS.filter((d) => resources.some((r) => d.where.startsWith(`deploy/${r}#`))).map((d) => `${d.obj.apiVersion} ${d.obj.kind}`);
    expect(kinds.length).toBeGreaterThan(0);
    expect(kinds.filter((k) => k.startsWith('snapshot.storage.k8s.io/'))).toEqual([]);
  });

  it('every Secret under deploy/ holds placeholders only, in readable stringData', () => {
    const secrets = objects('Secret');
    expect(secrets.length).toBeGreaterThan(0);
    for (const s of secrets) {
      expect(s.data, `${s.metadata.name}: no base64 data`).toBeUndefined();
      for (const [k, v] of Object.entries(s.stringData as Record<string, string>)) expect(v, `${s.metadata.name}: ${k}`).toMatch(/^REPLACE-ME/);
    }
  });
});

describe('RBAC', () => {
  const rules = (o: K8s): K8s[] => (o.rules ?? []) as K8s[];

  it('every ServiceAccount a pod uses exists; the node plugin has no token and no binding', () => {
    for (const [kind, name] of [['Deployment', 'iscsi-csi-controller'], ['DaemonSet', 'iscsi-csi-node']] as const) {
      const sa = podSpec(kind, name).serviceAccountName;
      expect(objects('ServiceAccount').map((o) => o.metadata.name), name).toContain(sa);
    }
    expect(podSpec('DaemonSet', 'iscsi-csi-node').automountServiceAccountToken).toBe(false);
    const bound = [...objects('RoleBinding'), ...objects('ClusterRoleBinding')].flatMap((b) => (b.subjects as K8s[]).map((s) => s.name));
    expect(bound).not.toContain('iscsi-csi-node');
  });

  it('grants no wildcard, and Secrets only by GET in the driver namespace', () => {
    for (const role of [...objects('Role'), ...objects('ClusterRole')]) {
      for (const r of rules(role)) {
        expect([...r.verbs, ...r.resources, ...r.apiGroups], role.metadata.name).not.toContain('*');
        if ((r.resources as string[]).includes('secrets')) {
          expect(role.kind, `${role.metadata.name} grants secrets`).toBe('Role');
          expect(role.metadata.namespace).toBe('iscsi-csi');
          expect(r.verbs).toEqual(['get']);
        }
      }
    }
    // the provisioner secrets of the StorageClasses are where that Role reaches
    for (const sc of objects('StorageClass')) {
      const ns = sc.parameters['csi.storage.k8s.io/provisioner-secret-namespace'];
      if (ns !== undefined) expect(ns, sc.metadata.name).toBe('iscsi-csi');
    }
  });

  it('snapshots: the snapshotter writes VolumeSnapshotContents and their status only, the provisioner reads VolumeSnapshots to restore one', () => {
    const grants = (name: string) => {
      const out = new Map<string, string[]>();
      for (const r of rules(object('ClusterRole', name))) for (const res of r.resources as string[]) out.set(`${r.apiGroups.join(',')}/${res}`, [...(out.get(`${r.apiGroups.join(',')}/${res}`) ?? []), ...(r.verbs as string[])].sort());
      return Object.fromEntries(out);
    };
    expect(grants('iscsi-csi-external-snapshotter')).toEqual({
      'snapshot.storage.k8s.io/volumesnapshotclasses': ['get', 'list', 'watch'],
      'snapshot.storage.k8s.io/volumesnapshotcontents': ['get', 'list', 'patch', 'update', 'watch'],
      'snapshot.storage.k8s.io/volumesnapshotcontents/status': ['patch', 'update'],
      '/events': ['create', 'patch', 'update'],
    });
    const provisioner = grants('iscsi-csi-external-provisioner');
    expect(provisioner['snapshot.storage.k8s.io/volumesnapshots']).toEqual(['get', 'list']);
    expect(provisioner['snapshot.storage.k8s.io/volumesnapshotcontents']).toEqual(['get', 'list']);
    // leader election of the snapshotter: the sidecars' Leases Role, bound to the controller's account
    const leases = rules(object('Role', 'iscsi-csi-leader-election')).find((r) => (r.resources as string[]).includes('leases'));
    expect(leases?.verbs).toEqual(expect.arrayContaining(['get', 'create', 'update']));
    const binding = object('ClusterRoleBinding', 'iscsi-csi-external-snapshotter');
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: podSpec('Deployment', 'iscsi-csi-controller').serviceAccountName, namespace: 'iscsi-csi' }]);
  });

  it('binds every role it defines, to roles that exist', () => {
    const roleNames = new Set([...objects('Role'), ...objects('ClusterRole')].map((r) => r.metadata.name));
    const bindings = [...objects('RoleBinding'), ...objects('ClusterRoleBinding')];
    for (const b of bindings) expect(roleNames.has(b.roleRef.name), b.metadata.name).toBe(true);
    const used = new Set(bindings.map((b) => b.roleRef.name));
    expect([...roleNames].filter((r) => !used.has(r))).toEqual([]);
  });
});

describe('Dockerfile', () => {
  const dockerfile = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string; bin: Record<string, string> };

  /** .dockerignore semantics (enough for an allow-list): the last matching pattern wins; a pattern matches a path or a parent of it. */
  function inBuildContext(path: string): boolean {
    const patterns = readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    const prefixes = path.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
    let included = true;
    for (const p of patterns) {
      const negated = p.startsWith('!');
      const re = new RegExp(`^${(negated ? p.slice(1) : p).replace(/\/$/, '').replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`);
      if (prefixes.some((x) => re.test(x))) included = negated;
    }
    return included;
  }

  it('copies only sources that exist in the repo and are in the build context', () => {
    const sources = dockerfile.split('\n').filter((l) => /^COPY\s/.test(l) && !l.includes('--from=')).flatMap((l) => l.trim().split(/\s+/).slice(1, -1));
    expect(sources).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'tsconfig.json', 'src', 'scripts/bundle.mjs', 'proto']));
    for (const s of sources) {
      expect(existsSync(join(REPO, s)), `${s} exists`).toBe(true);
      expect(inBuildContext(s), `${s} is not excluded by .dockerignore`).toBe(true);
    }
    expect(inBuildContext('node_modules'), 'node_modules stays out of the context').toBe(false);
  });

  it('starts the bundled CLI the package declares, which the build produces', () => {
    const entry = /^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(dockerfile)?.[1];
    expect(JSON.parse(entry!)).toEqual(['node', `/app/${pkg.bin['iscsi-csi']}`]);
    expect(pkg.bin['iscsi-csi']).toBe('dist/bundle/cli.js');
    expect(dockerfile).toMatch(/^RUN npx tsc -p tsconfig.json && node scripts\/bundle.mjs$/m);
    expect(existsSync(join(REPO, 'dist/bundle/cli.js')), 'make build (tsc, then scripts/bundle.mjs) emits dist/bundle/cli.js').toBe(true);
  });

  /** End of life of Node.js release lines (nodejs.org's release schedule). */
  const NODE_END_OF_LIFE: Record<number, string> = { 18: '2025-04-30', 20: '2026-04-30', 22: '2027-04-30', 24: '2028-04-30', 26: '2029-04-30' };

  it('builds on a Node.js LTS line that is not past its end of life, pinned by digest with its tag, the same base in both stages', () => {
    const args = new Map([...dockerfile.matchAll(/^ARG (\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    const bases = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]!.replace(/^\$\{(\w+)\}$/, (_, name: string) => args.get(name) ?? name));
    expect(bases).toHaveLength(2);
    expect(new Set(bases).size, 'one base for build and runtime').toBe(1);
    const pinned = /^node:(\d+)(?:\.\d+)*-[a-z]+-slim@sha256:[0-9a-f]{64}$/.exec(bases[0]!);
    expect(pinned, `${bases[0]} is node:<major>-<debian>-slim@sha256:<digest>`).not.toBeNull();
    const major = Number(pinned![1]);
    expect(major % 2, 'an even (LTS) release line').toBe(0);
    expect(NODE_END_OF_LIFE[major], `the end of life of Node.js ${major} is known`).toBeDefined();
    expect(new Date(NODE_END_OF_LIFE[major]!).getTime(), `Node.js ${major} reached its end of life on ${NODE_END_OF_LIFE[major]}`).toBeGreaterThan(Date.now());
  });

  it('carries the OCI image labels, the version the package declares', () => {
    const labels = new Map([...dockerfile.replace(/\\\n/g, ' ').matchAll(/(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]));
    for (const key of ['title', 'description', 'version', 'revision', 'licenses', 'base.name']) expect(labels.has(`org.opencontainers.image.${key}`), key).toBe(true);
    expect(labels.get('org.opencontainers.image.licenses')).toBe((JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { license: string }).license);
    expect(/^ARG VERSION=(\S+)$/m.exec(dockerfile)?.[1], 'ARG VERSION defaults to package.json version').toBe(pkg.version);
  });

  it('installs every tool the node config runs inside the container', () => {
    const PACKAGE_OF: Record<string, string> = {
      blkid: 'util-linux', blockdev: 'util-linux', fsck: 'util-linux', nsenter: 'util-linux', mount: 'mount', umount: 'mount',
      'mkfs.ext4': 'e2fsprogs', 'mkfs.ext3': 'e2fsprogs', resize2fs: 'e2fsprogs', 'mkfs.xfs': 'xfsprogs', xfs_growfs: 'xfsprogs',
      'mkfs.btrfs': 'btrfs-progs', btrfs: 'btrfs-progs', stat: 'coreutils', find: 'findutils',
    };
    const install = /apt-get install(?:[^\n\\]|\\\n)*/.exec(dockerfile)?.[0] ?? '';
    const installed = new Set(install.replace(/\\\n/g, ' ').split(/\s+/).filter((w) => /^[a-z0-9][a-z0-9.+-]+$/.test(w)));
    const cfg = driverConfigOf('DaemonSet', 'iscsi-csi-node');
    const inContainer = (Object.keys(cfg.commands) as CommandName[]).filter((n) => effectivePrefix(cfg, n).length === 0).map((n) => cfg.commands[n].argv[0]!);
    for (const tool of [...inContainer, cfg.commandPrefix[0]!]) {
      expect(PACKAGE_OF[tool], `which Debian package provides ${tool}?`).toBeDefined();
      expect(installed.has(PACKAGE_OF[tool]!), `${PACKAGE_OF[tool]} (for ${tool}) is installed`).toBe(true);
    }
    expect(installed.has('open-iscsi'), 'iscsiadm must be the host\'s').toBe(false);
  });

  it('the pods run the image built from this version', () => {
    for (const [kind, name] of [['Deployment', 'iscsi-csi-controller'], ['DaemonSet', 'iscsi-csi-node']] as const) {
      expect(container(podSpec(kind, name), 'driver').image, name).toBe(`iscsi-csi:${pkg.version}`);
    }
  });
});
