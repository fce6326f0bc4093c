// The main job (`make demo` / `npm run demo`): a full volume lifecycle through the driver's gRPC API on
// the embedded default — a private tgtd on 127.0.0.1 (controller backend) and the simulated iSCSI host
// (node): create → controller-publish → stage → publish → write/read → stats → expand → teardown →
// delete, for a filesystem volume and a raw block volume, then a snapshot of a volume in use and a
// restore from it, printing each step. The tgt pool lives on an xfs with reflinks on a loop device, so
// the snapshot is a FICLONE copy.
import { execFile } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makePoolFs } from '../helpers/pool-fs.js';
import { blockCapability, mountCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';

const execFileP = promisify(execFile);
const SYNC_TIMEOUT_MS = 30_000;

const MiB = 1024 * 1024;

interface Volume { volume_id: string; capacity_bytes: number; volume_context: Record<string, string> }

let stepNo = 0;
async function step<T>(what: string, fn: () => Promise<T>, show?: (r: T) => string): Promise<T> {
  stepNo += 1;
  const started = performance.now();
  const r = await fn();
  const ms = (performance.now() - started).toFixed(1);
  process.stdout.write(`${String(stepNo).padStart(2)}. ${what.padEnd(58)} ${ms.padStart(8)} ms${show ? `  ${show(r)}` : ''}\n`);
  return r;
}

function readBack(device: string, text: string): string {
  const fd = openSync(device, 'r');
  try {
    const back = Buffer.alloc(Buffer.byteLength(text));
    readSync(fd, back, 0, back.length, MiB);
    return back.toString();
  } finally {
    closeSync(fd);
  }
}

async function lifecycle(sd: SimDriver, name: string, kind: 'mount' | 'block'): Promise<void> {
  const c = sd.client;
  const cap = kind === 'mount' ? mountCapability('xfs') : blockCapability();
  const nodeId = sd.cfg.nodeId!;
  const staging = join(sd.stateDir, 'kubelet', `${name}-staging`);
  const target = join(sd.stateDir, 'kubelet', `${name}-target`);
  process.stdout.write(`\n${kind === 'mount' ? 'Filesystem (xfs)' : 'Raw block'} volume "${name}"\n`);

  const { volume } = await step(`CreateVolume ${name} (320 MiB)`, () =>
    c.call<{ volume: Volume }>('Controller', 'CreateVolume', { name, capacity_range: { required_bytes: 320 * MiB }, volume_capabilities: [cap], parameters: kind === 'mount' ? { fsType: 'xfs' } : {} }),
  (r) => `${r.volume.volume_id} → ${r.volume.volume_context.iqn} LUN ${r.volume.volume_context.lun}`);
  const { publish_context } = await step(`ControllerPublishVolume to ${nodeId}`, () =>
    c.call<{ publish_context: Record<string, string> }>('Controller', 'ControllerPublishVolume', { volume_id: volume.volume_id, node_id: nodeId, volume_capability: cap, readonly: false, volume_context: volume.volume_context }),
  () => 'the node initiator is now in the target ACL');
  await step(kind === 'mount' ? 'NodeStageVolume (login, scan, wait for device, mkfs, mount)' : 'NodeStageVolume (login, scan, wait for device)', () =>
    c.call('Node', 'NodeStageVolume', { volume_id: volume.volume_id, staging_target_path: staging, volume_capability: cap, volume_context: volume.volume_context, publish_context }),
  () => 'staged');
  await step('NodePublishVolume (bind into the pod path)', () =>
    c.call('Node', 'NodePublishVolume', { volume_id: volume.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap, readonly: false, volume_context: volume.volume_context, publish_context }),
  () => target);

  const text = `hello from ${name} at ${new Date().toISOString()}`;
  await step('write and read back through the published path', async () => {
    if (kind === 'mount') {
      writeFileSync(join(target, 'hello.txt'), text);
      return readFileSync(join(target, 'hello.txt'), 'utf8');
    }
    const data = Buffer.from(text);
    const fd = openSync(target, 'r+');
    try {
      writeSync(fd, data, 0, data.length, MiB);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return readBack(target, text);
  }, (r) => (r === text ? `ok: "${r}"` : `MISMATCH: "${r}"`));

  await step('NodeGetVolumeStats', () =>
    c.call<{ usage: { unit: string; total: number; used: number }[]; volume_condition: { abnormal: boolean; message: string } }>('Node', 'NodeGetVolumeStats', { volume_id: volume.volume_id, volume_path: target }),
  (r) => `${r.usage.map((u) => `${u.unit} total ${u.total} used ${u.used}`).join(', ')}; condition: ${r.volume_condition.message}`);

  // the tgt backend's expansion is OFFLINE (tgtd cannot grow a LUN an initiator is logged in to):
  // the pod goes, the volume grows, the pod comes back and the node grows the mounted filesystem
  const stageReq = { volume_id: volume.volume_id, staging_target_path: staging, volume_capability: cap, volume_context: volume.volume_context, publish_context };
  const publishReq = { ...stageReq, target_path: target, readonly: false };
  await step('NodeUnpublishVolume + NodeUnstageVolume (expansion is OFFLINE)', async () => {
    await c.call('Node', 'NodeUnpublishVolume', { volume_id: volume.volume_id, target_path: target });
    await c.call('Node', 'NodeUnstageVolume', { volume_id: volume.volume_id, staging_target_path: staging });
  });
  const expanded = await step('ControllerExpandVolume to 512 MiB', () =>
    c.call<{ capacity_bytes: number; node_expansion_required: boolean }>('Controller', 'ControllerExpandVolume', { volume_id: volume.volume_id, capacity_range: { required_bytes: 512 * MiB }, volume_capability: cap }),
  (r) => `${r.capacity_bytes} bytes, node expansion ${r.node_expansion_required ? 'required' : 'not required'}`);
  await step('NodeStageVolume + NodePublishVolume again', async () => {
    await c.call('Node', 'NodeStageVolume', stageReq);
    await c.call('Node', 'NodePublishVolume', publishReq);
  });
  if (expanded.node_expansion_required || kind === 'block') {
    await step(kind === 'mount' ? 'NodeExpandVolume (rescan, grow the mounted filesystem)' : 'NodeExpandVolume (rescan the device)', () =>
      c.call<{ capacity_bytes: number }>('Node', 'NodeExpandVolume', { volume_id: volume.volume_id, volume_path: target, capacity_range: { required_bytes: 512 * MiB }, staging_target_path: staging, volume_capability: cap }),
    (r) => `${r.capacity_bytes} bytes`);
  }
  await step('the data written before the expansion is still there', async () => (kind === 'mount' ? readFileSync(join(target, 'hello.txt'), 'utf8') : readBack(target, text)),
    (r) => (r === text ? 'ok' : `MISMATCH: "${r}"`));

  await step('NodeUnpublishVolume', () => c.call('Node', 'NodeUnpublishVolume', { volume_id: volume.volume_id, target_path: target }));
  await step(kind === 'mount' ? 'NodeUnstageVolume (unmount, delete devices, logout)' : 'NodeUnstageVolume (delete devices, logout)', () => c.call('Node', 'NodeUnstageVolume', { volume_id: volume.volume_id, staging_target_path: staging }));
  const left = (await sd.host.sessions()).length;
  process.stdout.write(`    iSCSI sessions left on the node: ${left}\n`);
  await step('ControllerUnpublishVolume', () => c.call('Controller', 'ControllerUnpublishVolume', { volume_id: volume.volume_id, node_id: nodeId }));
  await step('DeleteVolume', () => c.call('Controller', 'DeleteVolume', { volume_id: volume.volume_id }));
  if (left !== 0) throw new Error(`${left} iSCSI session(s) left after unstage`);
}

/** Stages and publishes a filesystem volume on the node; returns the pod path and how to undo it. */
async function attach(sd: SimDriver, volume: Volume, name: string): Promise<{ target: string; detach: () => Promise<void> }> {
  const c = sd.client;
  const cap = mountCapability('ext4');
  const nodeId = sd.cfg.nodeId!;
  const staging = join(sd.stateDir, 'kubelet', `${name}-staging`);
  const target = join(sd.stateDir, 'kubelet', `${name}-target`);
  const { publish_context } = await c.call<{ publish_context: Record<string, string> }>('Controller', 'ControllerPublishVolume', { volume_id: volume.volume_id, node_id: nodeId, volume_capability: cap, readonly: false, volume_context: volume.volume_context });
  const stageReq = { volume_id: volume.volume_id, staging_target_path: staging, volume_capability: cap, volume_context: volume.volume_context, publish_context };
  await c.call('Node', 'NodeStageVolume', stageReq);
  await c.call('Node', 'NodePublishVolume', { ...stageReq, target_path: target, readonly: false });
  return {
    target,
    detach: async () => {
      await c.call('Node', 'NodeUnpublishVolume', { volume_id: volume.volume_id, target_path: target });
      await c.call('Node', 'NodeUnstageVolume', { volume_id: volume.volume_id, staging_target_path: staging });
      await c.call('Controller', 'ControllerUnpublishVolume', { volume_id: volume.volume_id, node_id: nodeId });
    },
  };
}

/** A file written and flushed to the LUN (syncfs of the volume's filesystem). */
async function writeFlushed(file: string, text: string): Promise<void> {
  writeFileSync(file, text);
  await execFileP('sync', ['-f', file], { timeout: SYNC_TIMEOUT_MS });
}

async function snapshotAndRestore(sd: SimDriver): Promise<void> {
  const c = sd.client;
  const cap = mountCapability('ext4');
  process.stdout.write('\nSnapshot of a volume in use, and a restore from it (pool on xfs with reflinks)\n');
  const { volume } = await step('CreateVolume demo-snap-src (128 MiB, ext4)', () =>
    c.call<{ volume: Volume }>('Controller', 'CreateVolume', { name: 'demo-snap-src', capacity_range: { required_bytes: 128 * MiB }, volume_capabilities: [cap], parameters: { fsType: 'ext4' } }),
  (r) => r.volume.volume_id);
  const src = await step('publish + stage + publish it to the pod path', () => attach(sd, volume, 'demo-snap-src'), (r) => r.target);
  await step('write before.txt (and flush it to the LUN)', () => writeFlushed(join(src.target, 'before.txt'), 'written before the snapshot'));
  const { snapshot } = await step('CreateSnapshot demo-snap (volume still mounted)', () =>
    c.call<{ snapshot: { snapshot_id: string; size_bytes: number; ready_to_use: boolean } }>('Controller', 'CreateSnapshot', { name: 'demo-snap', source_volume_id: volume.volume_id }),
  (r) => `${r.snapshot.snapshot_id}, ${r.snapshot.size_bytes} bytes, ready_to_use ${r.snapshot.ready_to_use}`);
  await step('write after.txt on the source', () => writeFlushed(join(src.target, 'after.txt'), 'written after the snapshot'));
  const { volume: restored } = await step('CreateVolume demo-restored from the snapshot (256 MiB)', () =>
    c.call<{ volume: Volume & { content_source: unknown } }>('Controller', 'CreateVolume', {
      name: 'demo-restored', capacity_range: { required_bytes: 256 * MiB }, volume_capabilities: [cap], parameters: { fsType: 'ext4' },
      volume_content_source: { snapshot: { snapshot_id: snapshot.snapshot_id } },
    }),
  (r) => `${r.volume.volume_id}, ${r.volume.capacity_bytes} bytes`);
  const dst = await step('publish + stage + publish the restored volume', () => attach(sd, restored, 'demo-restored'), (r) => r.target);
  const seen = await step('the restored volume has before.txt and not after.txt', async () => ({
    before: existsSync(join(dst.target, 'before.txt')) ? readFileSync(join(dst.target, 'before.txt'), 'utf8') : undefined,
    after: existsSync(join(dst.target, 'after.txt')),
  }), (r) => (r.before === 'written before the snapshot' && !r.after ? 'ok' : `MISMATCH: ${JSON.stringify(r)}`));
  if (seen.before !== 'written before the snapshot' || seen.after) throw new Error('the restored volume does not hold the snapshot\'s data');
  await step('tear both down; DeleteSnapshot; DeleteVolume x2', async () => {
    await dst.detach();
    await src.detach();
    await c.call('Controller', 'DeleteSnapshot', { snapshot_id: snapshot.snapshot_id });
    await c.call('Controller', 'DeleteVolume', { volume_id: restored.volume_id });
    await c.call('Controller', 'DeleteVolume', { volume_id: volume.volume_id });
  });
}

async function main(): Promise<void> {
  process.stdout.write('Making an xfs with reflinks on a loop device for the tgt pool; starting a private tgtd on 127.0.0.1, the simulated iSCSI host, and the driver (controller + node)…\n');
  const poolFs = await makePoolFs('xfs-reflink');
  const sd = await startSimDriver({ mode: 'all', configure: (cfg) => { cfg.controller.tgt.poolDir = join(poolFs.mountPoint, 'pool'); } }).catch(async (e: Error) => {
    await poolFs.destroy();
    throw e;
  });
  process.stdout.write(`  endpoint ${sd.cfg.endpoint}\n  portal   ${sd.host.portals[0]} (tgtd control port ${sd.host.tgtd.controlPort})\n  node id  ${sd.cfg.nodeId}\n  pool     ${sd.cfg.controller.tgt.poolDir} (xfs, reflink=1, on ${poolFs.device})\n`);
  let failed = false;
  try {
    await lifecycle(sd, 'demo-fs', 'mount');
    await lifecycle(sd, 'demo-block', 'block');
    await snapshotAndRestore(sd);
  } catch (e) {
    failed = true;
    process.stderr.write(`demo failed: ${(e as Error).message}\n`);
  } finally {
    await sd.stop();
    await poolFs.destroy();
  }
  process.stdout.write(failed ? '\nDemo FAILED\n' : '\nDemo finished: every step succeeded and nothing was left behind.\n');
  process.exit(failed ? 1 : 0);
}

void main();
