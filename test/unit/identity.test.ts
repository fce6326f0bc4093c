// The plugin capabilities the identity service advertises: the resizer decides from the
// VOLUME_EXPANSION type whether it may expand a volume that is in use.
import { describe, expect, it } from 'vitest';
import { buildConfig } from '../../src/config.js';
import { EXPANSION_BY_BACKEND } from '../../src/controller/backend.js';
import { createIdentityService } from '../../src/identity/service.js';
import type { VolumeExpansionType } from '../../src/csi/types.js';

async function capabilities(deps: { controllerServed: boolean; expansion?: VolumeExpansionType }): Promise<unknown[]> {
  const svc = createIdentityService({ cfg: buildConfig(undefined), version: 'test', checks: [], ...deps });
  const r = (await svc.GetPluginCapabilities!({}, {} as never)) as { capabilities: unknown[] };
  return r.capabilities;
}

describe('GetPluginCapabilities', () => {
  it('advertises OFFLINE expansion for the tgt backend: tgtd cannot grow a LUN an initiator uses', async () => {
    expect(EXPANSION_BY_BACKEND.tgt).toBe('OFFLINE');
    expect(await capabilities({ controllerServed: true, expansion: EXPANSION_BY_BACKEND.tgt })).toContainEqual({ volume_expansion: { type: 'OFFLINE' }, type: 'volume_expansion' });
  });

  it('advertises ONLINE expansion for the static backend (the SAN grows the LUN) and none without a controller', async () => {
    expect(await capabilities({ controllerServed: true, expansion: EXPANSION_BY_BACKEND.static })).toContainEqual({ volume_expansion: { type: 'ONLINE' }, type: 'volume_expansion' });
    expect(JSON.stringify(await capabilities({ controllerServed: false }))).not.toContain('volume_expansion');
  });
});
