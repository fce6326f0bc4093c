// Portals given by host name. open-iscsi keys node records by the address it connected to, sysfs
// reports that address (`persistent_address`) and udev names the by-path link after it, so a name
// would match none of them: it is resolved once, before anything is recorded, and the address is
// what the node records, the session lookup, the device link and the volume's metadata use.
import { lookup } from 'node:dns/promises';
import { FailedPrecondition, Unavailable } from '../errors.js';
import { canonicalIPv6, formatPortal, type Portal } from '../common/validate.js';

/** A name that does not exist (rather than a resolver that did not answer): no retry will help. */
const NO_SUCH_NAME = new Set(['ENOTFOUND', 'ENODATA', 'EAI_NONAME', 'EAI_NODATA']);

/** The portal with its host name replaced by an address (IPv4 first); addresses pass through. */
export async function resolvePortal(portal: Portal, timeoutMs: number): Promise<Portal> {
  if (portal.family !== 'hostname') return portal;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Unavailable(`portal ${formatPortal(portal)}: host name ${portal.host} did not resolve within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const addresses = await Promise.race([lookup(portal.host, { all: true }), deadline]);
    const v4 = addresses.find((a) => a.family === 4);
    const v6 = addresses.find((a) => a.family === 6);
    if (v4) return { host: v4.address, port: portal.port, family: 'ipv4' };
    if (v6) return { host: canonicalIPv6(v6.address), port: portal.port, family: 'ipv6' };
    throw new FailedPrecondition(`portal ${formatPortal(portal)}: host name ${portal.host} has no address`);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code && NO_SUCH_NAME.has(code)) throw new FailedPrecondition(`portal ${formatPortal(portal)}: host name ${portal.host} does not resolve on this node (${code})`);
    if (code) throw new Unavailable(`portal ${formatPortal(portal)}: resolving ${portal.host} failed (${code}); retry later`);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

/** Every portal resolved; the same address reached through two names counts once. */
export async function resolvePortals(portals: Portal[], timeoutMs: number): Promise<Portal[]> {
  const resolved = await Promise.all(portals.map((p) => resolvePortal(p, timeoutMs)));
  const seen = new Set<string>();
  return resolved.filter((p) => {
    const key = formatPortal(p);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
