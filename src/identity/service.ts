// Identity service: plugin name and version, capabilities, and a readiness Probe that runs the served
// mode's checks (cached briefly so a Probe never takes more than about a second).
import type { Config } from '../config.js';
import { FailedPrecondition } from '../errors.js';
import type { ServiceImpl } from '../server/service.js';
import type {
  GetPluginInfoResponse, GetPluginCapabilitiesResponse, PluginCapability, ProbeResponse,
  VolumeExpansionType,
} from '../csi/types.js';

/** A readiness check: resolves null when healthy, or a message naming what is missing. */
export type ReadinessCheck = () => Promise<string | null>;

export interface IdentityDeps {
  cfg: Config;
  version: string;
  checks: ReadinessCheck[];
  controllerServed: boolean;
  /** the controller backend's kind of volume expansion; none advertised without a controller */
  expansion?: VolumeExpansionType;
  now?: () => number;
}

export const PROBE_CHECK_BUDGET_MS = 900;

export function createIdentityService(deps: IdentityDeps): ServiceImpl {
  const now = deps.now ?? Date.now;
  let cached: { at: number; problems: string[] } | undefined;
  let running: Promise<string[]> | undefined;

  const runChecks = async (): Promise<string[]> => {
    const results = await Promise.all(deps.checks.map((check) => withBudget(check(), PROBE_CHECK_BUDGET_MS)));
    return results.filter((r): r is string => r !== null);
  };
  /** one run of the checks at a time; its result is the cached one */
  const refresh = (): Promise<string[]> => {
    running ??= runChecks()
      .then((problems) => { cached = { at: now(), problems }; return problems; })
      .finally(() => { running = undefined; });
    return running;
  };
  // the first run starts with the service, while the server is still starting: the first Probe
  // (the CO's readiness check at start) finds it done or under way
  if (deps.checks.length > 0) void refresh();

  return {
    GetPluginInfo: async (): Promise<GetPluginInfoResponse> => ({
      name: deps.cfg.driverName,
      vendor_version: deps.version,
      manifest: {},
    }),

    GetPluginCapabilities: async (): Promise<GetPluginCapabilitiesResponse> => {
      const capabilities: PluginCapability[] = [];
      if (deps.controllerServed) capabilities.push({ service: { type: 'CONTROLLER_SERVICE' }, type: 'service' });
      if (deps.expansion) capabilities.push({ volume_expansion: { type: deps.expansion }, type: 'volume_expansion' });
      return { capabilities };
    },

    Probe: async (): Promise<ProbeResponse> => {
      let problems = cached?.problems;
      if (!cached || now() - cached.at > deps.cfg.timeouts.probeCacheMs) problems = await refresh();
      if (problems && problems.length > 0) throw new FailedPrecondition(`not ready: ${problems.join('; ')}`);
      return { ready: { value: true } };
    },
  };
}

async function withBudget(p: Promise<string | null>, ms: number): Promise<string | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<string>((resolve) => { timer = setTimeout(() => resolve(`a readiness check did not answer within ${ms} ms`), ms); });
  try {
    return await Promise.race([p.catch((e: Error) => e.message), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
