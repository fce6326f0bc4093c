// Stage requests as the node handler hands them to the flows (already validated), for the fake host.
import { parsePortal } from '../../src/common/validate.js';
import type { ChapCredentials } from '../../src/contract/chap.js';
import type { TargetSpec } from '../../src/contract/volume-context.js';
import type { StageSpec } from '../../src/flows/stage.js';
import { Secret } from '../../src/log.js';

export const IQN = 'iqn.2026-12.dev.fake:target-1';
export const P1 = '10.0.0.1:3260';
export const P2 = '10.0.0.2:3260';
export const OWN_INITIATOR = 'iqn.2026-12.dev.fake:volume-initiator';

export interface SpecOptions {
  lun?: number;
  portals?: string[];
  iqn?: string;
  block?: boolean;
  fsType?: 'ext4' | 'xfs';
  readonly?: boolean;
  initiatorName?: string;
  iface?: string;
  sessionChap?: ChapCredentials;
  discoveryChap?: ChapCredentials;
}

export function chap(username: string, password: string): ChapCredentials {
  return { username, password: new Secret(password) };
}

export function stagingPathOf(volumeId: string): string {
  return `/var/lib/kubelet/plugins/kubernetes.io/csi/iscsi/${volumeId}/globalmount`;
}

export function targetOf(o: SpecOptions = {}): TargetSpec {
  return {
    portals: (o.portals ?? [P1]).map((p) => parsePortal(p)),
    iqn: o.iqn ?? IQN,
    lun: o.lun ?? 0,
    iface: o.iface ?? 'default',
    ...(o.initiatorName ? { initiatorName: o.initiatorName } : {}),
    ...(o.sessionChap ? { sessionChap: o.sessionChap } : {}),
    ...(o.discoveryChap ? { discoveryChap: o.discoveryChap } : {}),
  };
}

export function stageSpec(volumeId: string, o: SpecOptions = {}): StageSpec {
  return {
    volumeId,
    stagingPath: stagingPathOf(volumeId),
    target: targetOf(o),
    access: o.block ? { kind: 'block' } : { kind: 'mount', fsType: o.fsType ?? 'ext4', mountFlags: [] },
    accessMode: 'SINGLE_NODE_WRITER',
    readonly: o.readonly ?? false,
  };
}
