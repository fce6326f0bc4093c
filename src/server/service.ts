// The contract between the gRPC surface and the CSI services: a service is a map from the proto's
// method name to an async handler. The server builds every gRPC handler from the proto's method list;
// a method the service does not implement answers UNIMPLEMENTED.
import type { Logger } from '../log.js';

export interface CallContext {
  logger: Logger;
  requestId: string;
  method: string;
}

// Handlers take the decoded request message; each service narrows it to its own typed messages.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Handler<Req = any, Res = unknown> = (req: Req, ctx: CallContext) => Promise<Res>;

export type ServiceImpl = Partial<Record<string, Handler>>;

/** Volume ids (or names) a method operates on, for the per-volume operation guard and the call log. */
export function volumeKeyOf(method: string, req: Record<string, unknown>): string | undefined {
  if (method === 'CreateVolume' && typeof req.name === 'string' && req.name) return `name:${req.name}`;
  // a snapshot's name and id are keys of their own: a snapshot of a volume runs beside the volume's other calls
  if (method === 'CreateSnapshot' && typeof req.name === 'string' && req.name) return `snapshot-name:${req.name}`;
  if (typeof req.snapshot_id === 'string' && req.snapshot_id && method !== 'ListSnapshots') return `snapshot:${req.snapshot_id}`;
  const id = req.volume_id;
  return typeof id === 'string' && id ? id : undefined;
}

/** Methods that only read state: never rejected by the operation guard. */
export const READ_ONLY_METHODS = new Set([
  'NodeGetVolumeStats', 'ControllerGetVolume', 'ValidateVolumeCapabilities', 'ListVolumes', 'GetCapacity',
  'NodeGetCapabilities', 'NodeGetInfo', 'ControllerGetCapabilities', 'GetPluginInfo', 'GetPluginCapabilities', 'Probe',
  'ListSnapshots', 'GetSnapshot',
]);
