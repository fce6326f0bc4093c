import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type {
  CreateVolumeRequest,
  Encodable,
  GetCapacityResponse,
  GetPluginCapabilitiesResponse,
  NodeStageVolumeRequest,
  ProbeResponse,
} from '../../src/csi/types.js';
import { CSI_SERVICE_NAMES, loadCsiPackage, locateProtoDir, methodNames } from '../../src/server/proto.js';
import { status } from '@grpc/grpc-js';
import { buildConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { ProcessRunner } from '../../src/runner.js';
import { CsiServer } from '../../src/server/server.js';
import { createControllerService } from '../../src/controller/service.js';
import type { VolumeBackend } from '../../src/controller/backend.js';
import { CsiClient } from '../helpers/client.js';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

const CONTROLLER_METHODS_V1_12 = [
  'CreateVolume',
  'DeleteVolume',
  'ControllerPublishVolume',
  'ControllerUnpublishVolume',
  'ValidateVolumeCapabilities',
  'ListVolumes',
  'GetCapacity',
  'ControllerGetCapabilities',
  'CreateSnapshot',
  'DeleteSnapshot',
  'ListSnapshots',
  'GetSnapshot',
  'ControllerExpandVolume',
  'ControllerGetVolume',
  'ControllerModifyVolume',
];

const NODE_METHODS_V1_12 = [
  'NodeStageVolume',
  'NodeUnstageVolume',
  'NodePublishVolume',
  'NodeUnpublishVolume',
  'NodeGetVolumeStats',
  'NodeExpandVolume',
  'NodeGetCapabilities',
  'NodeGetInfo',
];

// Larger than 2^32, so a 32-bit truncation or a Long/string decoding would show.
const TWENTY_GIB_PLUS_ONE = 20 * 1024 ** 3 + 1;
const FORTY_GIB = 40 * 1024 ** 3;

describe('CSI proto loading', () => {
  it('loads proto/csi.json, which is csi.proto compiled (npm run proto after changing csi.proto)', async () => {
    // @ts-expect-error a plain .mjs script without types
    const { compileCsiProto } = (await import('../../scripts/csi-proto-json.mjs')) as { compileCsiProto: () => string };
    expect(readFileSync(join(REPO_ROOT, 'proto', 'csi.json'), 'utf8')).toBe(compileCsiProto());
  });


  it('loads every CSI v1.12 service once and serves them from a cache', () => {
    const csi = loadCsiPackage();
    for (const name of CSI_SERVICE_NAMES) {
      expect(typeof csi[name], name).toBe('function');
      expect(Object.keys(csi[name].service).length, name).toBeGreaterThan(0);
    }
    expect(loadCsiPackage()).toBe(csi);
  });

  it('exposes the Identity, Controller and Node method sets of v1.12, in .proto order', () => {
    const csi = loadCsiPackage();
    expect(methodNames(csi.Identity)).toEqual(['GetPluginInfo', 'GetPluginCapabilities', 'Probe']);
    expect(methodNames(csi.Controller)).toEqual(CONTROLLER_METHODS_V1_12);
    expect(methodNames(csi.Node)).toEqual(NODE_METHODS_V1_12);
    expect(methodNames(csi.Node.service)).toEqual(NODE_METHODS_V1_12);
    expect(methodNames(csi.GroupController)).toEqual([
      'GroupControllerGetCapabilities',
      'CreateVolumeGroupSnapshot',
      'DeleteVolumeGroupSnapshot',
      'GetVolumeGroupSnapshot',
    ]);
    expect(methodNames(csi.SnapshotMetadata)).toEqual(['GetMetadataAllocated', 'GetMetadataDelta']);
  });

  it('uses the gRPC paths a CO calls, server-streaming only for SnapshotMetadata', () => {
    const csi = loadCsiPackage();
    expect(csi.Node.service['NodeStageVolume']?.path).toBe('/csi.v1.Node/NodeStageVolume');
    expect(csi.Identity.service['Probe']?.path).toBe('/csi.v1.Identity/Probe');
    expect(csi.Controller.service['CreateVolume']?.responseStream).toBe(false);
    expect(csi.SnapshotMetadata.service['GetMetadataDelta']?.responseStream).toBe(true);
  });

  it('finds proto/ from the compiled location dist/src/server as well', () => {
    expect(locateProtoDir(join(REPO_ROOT, 'dist', 'src', 'server'))).toBe(join(REPO_ROOT, 'proto'));
  });

  it('says where it looked when proto/csi.proto cannot be found', () => {
    const outside = mkdtempSync(join(tmpdir(), 'no-proto-'));
    try {
      expect(() => locateProtoDir(outside)).toThrow(/csi\.proto not found: looked in .*no-proto-/);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });
});

describe('CSI wire round trip', () => {
  it('encodes NodeStageVolumeRequest with the spec field numbers', () => {
    const stage = loadCsiPackage().Node.service['NodeStageVolume']!;
    const bytes = stage.requestSerialize({ volume_id: 'v', staging_target_path: '/s' });
    // field 1 (volume_id) and field 3 (staging_target_path), both length-delimited
    expect([...bytes]).toEqual([0x0a, 1, 0x76, 0x1a, 2, 0x2f, 0x73]);
  });

  it('round-trips a NodeStageVolumeRequest with a mount capability', () => {
    const stage = loadCsiPackage().Node.service['NodeStageVolume']!;
    const sent: Encodable<NodeStageVolumeRequest> = {
      volume_id: 'pvc-1234',
      publish_context: { targetPortal: '127.0.0.1:3260', lun: '1' },
      staging_target_path: '/var/lib/kubelet/plugins/kubernetes.io/csi/iscsi/abc/globalmount',
      volume_capability: {
        mount: { fs_type: 'ext4', mount_flags: ['noatime', 'discard'] },
        access_mode: { mode: 'SINGLE_NODE_WRITER' },
      },
      secrets: { 'node.session.auth.password': 'not-logged' },
    };
    const received: NodeStageVolumeRequest = stage.requestDeserialize(stage.requestSerialize(sent));

    expect(received.volume_id).toBe('pvc-1234');
    expect(received.staging_target_path).toBe('/var/lib/kubelet/plugins/kubernetes.io/csi/iscsi/abc/globalmount');
    expect(received.publish_context).toEqual({ targetPortal: '127.0.0.1:3260', lun: '1' });
    expect(received.secrets).toEqual({ 'node.session.auth.password': 'not-logged' });
    expect(received.volume_context).toEqual({}); // unset map decodes as {}
    const capability = received.volume_capability;
    expect(capability?.access_type).toBe('mount');
    expect(capability?.block).toBeUndefined();
    expect(capability?.mount).toEqual({ fs_type: 'ext4', mount_flags: ['noatime', 'discard'], volume_mount_group: '' });
    expect(capability?.access_mode).toEqual({ mode: 'SINGLE_NODE_WRITER' });
  });

  it('decodes an empty NodeStageVolumeRequest with proto3 defaults and a null capability', () => {
    const stage = loadCsiPackage().Node.service['NodeStageVolume']!;
    const received: NodeStageVolumeRequest = stage.requestDeserialize(Buffer.alloc(0));
    expect(received).toEqual({
      volume_id: '',
      publish_context: {},
      staging_target_path: '',
      volume_capability: null,
      secrets: {},
      volume_context: {},
    });
  });

  it('decodes int64 CapacityRange as plain numbers and a block capability by its discriminator', () => {
    const create = loadCsiPackage().Controller.service['CreateVolume']!;
    const sent: Encodable<CreateVolumeRequest> = {
      name: 'pvc-5678',
      capacity_range: { required_bytes: TWENTY_GIB_PLUS_ONE, limit_bytes: FORTY_GIB },
      volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_MULTI_WRITER' } }],
      accessibility_requirements: { requisite: [{ segments: { 'topology.iscsi.csi/node': 'n1' } }] },
    };
    const received: CreateVolumeRequest = create.requestDeserialize(create.requestSerialize(sent));

    expect(received.capacity_range).toEqual({ required_bytes: TWENTY_GIB_PLUS_ONE, limit_bytes: FORTY_GIB });
    expect(typeof received.capacity_range?.required_bytes).toBe('number');
    const [capability] = received.volume_capabilities;
    expect(capability?.access_type).toBe('block');
    expect(capability?.block).toEqual({});
    expect(capability?.mount).toBeUndefined();
    expect(capability?.access_mode?.mode).toBe('SINGLE_NODE_MULTI_WRITER');
    expect(received.volume_content_source).toBeNull();
    expect(received.accessibility_requirements).toEqual({
      requisite: [{ segments: { 'topology.iscsi.csi/node': 'n1' } }],
      preferred: [],
    });
  });

  it('carries wrapper types as {value} or null in responses', () => {
    const csi = loadCsiPackage();
    const capacity = csi.Controller.service['GetCapacity']!;
    const withMax: GetCapacityResponse = capacity.responseDeserialize(
      capacity.responseSerialize({ available_capacity: FORTY_GIB, maximum_volume_size: { value: TWENTY_GIB_PLUS_ONE } }),
    );
    expect(withMax).toEqual({
      available_capacity: FORTY_GIB,
      maximum_volume_size: { value: TWENTY_GIB_PLUS_ONE },
      minimum_volume_size: null,
    });

    const probe = csi.Identity.service['Probe']!;
    const notReady: ProbeResponse = probe.responseDeserialize(probe.responseSerialize({ ready: { value: false } }));
    expect(notReady.ready).toEqual({ value: false });
    const unset: ProbeResponse = probe.responseDeserialize(probe.responseSerialize({}));
    expect(unset.ready).toBeNull();
  });

  it('names the plugin capability oneof member that is set', () => {
    const caps = loadCsiPackage().Identity.service['GetPluginCapabilities']!;
    const sent: Encodable<GetPluginCapabilitiesResponse> = {
      capabilities: [{ service: { type: 'CONTROLLER_SERVICE' } }, { volume_expansion: { type: 'ONLINE' } }],
    };
    const received: GetPluginCapabilitiesResponse = caps.responseDeserialize(caps.responseSerialize(sent));
    expect(received.capabilities).toEqual([
      { type: 'service', service: { type: 'CONTROLLER_SERVICE' } },
      { type: 'volume_expansion', volume_expansion: { type: 'ONLINE' } },
    ]);
  });
});

describe('int64 on the wire', () => {
  const EiB = 2n ** 60n;
  const INT64_MAX = 2n ** 63n - 1n;

  it('decodes sizes beyond 2^53 exactly (as bigint) and safe ones as numbers', () => {
    const create = loadCsiPackage().Controller.service['CreateVolume']!;
    const sent = { name: 'pvc-big', capacity_range: { required_bytes: EiB.toString(), limit_bytes: INT64_MAX.toString() } };
    const received: CreateVolumeRequest = create.requestDeserialize(create.requestSerialize(sent));
    expect(received.capacity_range).toEqual({ required_bytes: EiB, limit_bytes: INT64_MAX });
    const small: CreateVolumeRequest = create.requestDeserialize(create.requestSerialize({ name: 'p', capacity_range: { required_bytes: TWENTY_GIB_PLUS_ONE } }));
    expect(small.capacity_range).toEqual({ required_bytes: TWENTY_GIB_PLUS_ONE, limit_bytes: 0 });
  });

  it('a gRPC round trip: 1 EiB and 2^63-1 come back OUT_OF_RANGE with the exact digits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'proto-int64-'));
    const socketPath = join(dir, 'csi.sock');
    const cfg = buildConfig(undefined);
    const logger = createLogger('silent');
    const backend = { kind: 'tgt' } as unknown as VolumeBackend; // the range is refused before the backend is asked
    const controller = createControllerService({ cfg, runner: new ProcessRunner(cfg.commands, cfg.commandPrefix, logger), logger, backend });
    const server = new CsiServer({ socketPath, socketMode: 0o600, shutdownGraceMs: 1000, logger }, [
      { name: 'Controller', definition: loadCsiPackage().Controller.service, impl: controller },
    ]);
    await server.listen();
    const client = new CsiClient(`unix://${socketPath}`);
    try {
      const cap = [{ mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } }];
      for (const [bytes, digits] of [[EiB, '1152921504606846976'], [INT64_MAX, '9223372036854775807']] as const) {
        const e = await client.call('Controller', 'CreateVolume', { name: 'pvc-huge', capacity_range: { required_bytes: bytes.toString() }, volume_capabilities: cap })
          .then(() => undefined, (err: { code: number; details: string }) => err);
        expect(e?.code).toBe(status.OUT_OF_RANGE);
        expect(e?.details).toContain(`capacity_range.required_bytes ${digits} is larger than`);
        const x = await client.call('Controller', 'ControllerExpandVolume', { volume_id: 'tgt-x', capacity_range: { required_bytes: bytes.toString() } })
          .then(() => undefined, (err: { code: number; details: string }) => err);
        expect(x?.code).toBe(status.OUT_OF_RANGE);
        expect(x?.details).toContain(digits);
      }
    } finally {
      client.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
