// A CHAP volume provisioned by the controller on the simulated host's tgtd stages on the simulated
// node with the right node-stage secret only; the volume context never carries the credentials.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { Writable } from 'node:stream';
import { createLogger } from '../../src/log.js';
import { blockCapability, startSimDriver, type SimDriver } from '../helpers/sim-driver.js';

class Capture extends Writable {
  lines: string[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.lines.push(...chunk.toString().split('\n').filter(Boolean));
    cb();
  }
}
const logs = new Capture();

let sd: SimDriver;
beforeAll(async () => { sd = await startSimDriver({ mode: 'all', logger: createLogger('debug', logs) }); });
afterAll(async () => { await sd?.stop(); });

const secrets = { 'node.session.auth.username': 'chapuser1', 'node.session.auth.password': 'Chap-Secret-0123' };

describe('provisioned CHAP volume', () => {
  it('stages with the right secret only', async () => {
    const cap = blockCapability();
    const { volume } = await sd.client.call<{ volume: { volume_id: string; volume_context: Record<string, string> } }>('Controller', 'CreateVolume', {
      name: 'chap-vol', capacity_range: { required_bytes: 16 * 1024 * 1024 }, volume_capabilities: [cap], parameters: { chap: 'true' }, secrets,
    });
    expect(JSON.stringify(volume.volume_context)).not.toContain('Chap-Secret-0123');
    expect(volume.volume_context.sessionCHAPAuth).toBe('true');
    const nodeId = sd.cfg.nodeId!;
    const { publish_context } = await sd.client.call<{ publish_context: Record<string, string> }>('Controller', 'ControllerPublishVolume', { volume_id: volume.volume_id, node_id: nodeId, volume_capability: cap, volume_context: volume.volume_context });
    const staging = join(sd.stateDir, 'chap-staging');
    const stageReq = (s: Record<string, string>) => ({ volume_id: volume.volume_id, staging_target_path: staging, volume_capability: cap, volume_context: volume.volume_context, publish_context, secrets: s });

    const wrong = await sd.client.call('Node', 'NodeStageVolume', stageReq({ ...secrets, 'node.session.auth.password': 'Not-The-Secret-9' })).catch((e: { code: number }) => e);
    expect((wrong as { code: number }).code).toBe(status.FAILED_PRECONDITION);
    const missing = await sd.client.call('Node', 'NodeStageVolume', stageReq({})).catch((e: { code: number }) => e);
    expect((missing as { code: number }).code).toBe(status.INVALID_ARGUMENT);
    expect(await sd.host.sessions()).toEqual([]);

    await sd.client.call('Node', 'NodeStageVolume', stageReq(secrets));
    expect(await sd.host.sessions()).toHaveLength(1);
    await sd.client.call('Node', 'NodeUnstageVolume', { volume_id: volume.volume_id, staging_target_path: staging });
    await sd.client.call('Controller', 'ControllerUnpublishVolume', { volume_id: volume.volume_id, node_id: nodeId });
    await sd.client.call('Controller', 'DeleteVolume', { volume_id: volume.volume_id });
    expect(await sd.host.sessions()).toEqual([]);

    // every command line of a call carries the call's request id; no line carries the password,
    // although it went to iscsiadm (`-o update … -v <password>`) and tgtadm as an argument
    const stageCalls = logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.method === 'NodeStageVolume' && l.msg === 'call' && l.code === 'OK');
    expect(stageCalls).toHaveLength(1);
    const commands = logs.lines.map((l) => JSON.parse(l) as { requestId?: string; msg: string; cmd?: string[] }).filter((l) => l.msg === 'command' && l.requestId === stageCalls[0]!.requestId);
    expect(commands.some((c) => c.cmd!.includes('--login'))).toBe(true);
    expect(commands.some((c) => c.cmd!.includes('node.session.auth.password'))).toBe(true);
    for (const line of logs.lines) {
      expect(line).not.toContain('Chap-Secret-0123');
      expect(line).not.toContain('Not-The-Secret-9');
    }
  });
});
