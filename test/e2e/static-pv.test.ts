// A static PV (volumeAttributes with the in-tree keys, on a target this driver did not create) goes
// through external-attacher's ControllerPublish and the node's stage like a provisioned one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { codeOf } from '../helpers/client.js';
import { blockCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';

let sd: SimDriver;
beforeAll(async () => { sd = await startSimDriver({ mode: 'all' }); });
afterAll(async () => { await sd?.stop(); });

describe('static PV', () => {
  it('publishes, stages and unstages a LUN created outside the driver', async () => {
    const iqn = 'iqn.2026-11.dev.test:static-san';
    await sd.host.createTarget(iqn, [{ lun: 3, sizeBytes: 16 * 1024 * 1024 }]);
    const ctx = { targetPortal: sd.host.portals[0]!, iqn, lun: '3' };
    const nodeId = sd.cfg.nodeId!;
    // unknown volume id and no static context → NOT_FOUND (csi-sanity checks this)
    expect(await codeOf(sd.client.call('Controller', 'ControllerPublishVolume', { volume_id: 'pv-static-1', node_id: nodeId, volume_capability: blockCapability() }))).toBe(status.NOT_FOUND);
    // a static context with a bad IQN → INVALID_ARGUMENT
    expect(await codeOf(sd.client.call('Controller', 'ControllerPublishVolume', { volume_id: 'pv-static-1', node_id: nodeId, volume_capability: blockCapability(), volume_context: { ...ctx, iqn: 'nope' } }))).toBe(status.INVALID_ARGUMENT);
    const res = await sd.client.call<{ publish_context: Record<string, string> }>('Controller', 'ControllerPublishVolume', { volume_id: 'pv-static-1', node_id: nodeId, volume_capability: blockCapability(), volume_context: ctx });
    expect(res.publish_context).toEqual({});
    const staging = join(sd.stateDir, 'static-staging');
    await sd.client.call('Node', 'NodeStageVolume', { volume_id: 'pv-static-1', staging_target_path: staging, volume_capability: blockCapability(), volume_context: ctx, publish_context: res.publish_context });
    expect((await sd.host.sessions()).filter((s) => s.target === iqn)).toHaveLength(1);
    await sd.client.call('Node', 'NodeUnstageVolume', { volume_id: 'pv-static-1', staging_target_path: staging });
    await sd.client.call('Controller', 'ControllerUnpublishVolume', { volume_id: 'pv-static-1', node_id: nodeId });
    expect(await sd.host.sessions()).toEqual([]);
  });
});
