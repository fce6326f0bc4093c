import { describe, expect, it } from 'vitest';
import { FailedPrecondition, Unavailable } from '../../src/errors.js';
import { resolvePortal, resolvePortals } from '../../src/node-host/resolve.js';
import { parsePortal } from '../../src/common/validate.js';

describe('portal host names', () => {
  it('leaves addresses alone', async () => {
    expect(await resolvePortal(parsePortal('192.0.2.7:3261'), 1000)).toEqual({ host: '192.0.2.7', port: 3261, family: 'ipv4' });
    expect(await resolvePortal(parsePortal('[fd00::0:10]:3260'), 1000)).toEqual({ host: 'fd00::10', port: 3260, family: 'ipv6' });
  });

  it('turns a name into its IPv4 address, keeping the port', async () => {
    // /etc/hosts: localhost is 127.0.0.1 (and often ::1 too: IPv4 is preferred)
    expect(await resolvePortal(parsePortal('localhost:3262'), 5000)).toEqual({ host: '127.0.0.1', port: 3262, family: 'ipv4' });
  });

  it('merges a name and the address it resolves to', async () => {
    const portals = await resolvePortals([parsePortal('127.0.0.1:3260'), parsePortal('localhost')], 5000);
    expect(portals).toEqual([{ host: '127.0.0.1', port: 3260, family: 'ipv4' }]);
  });

  it('fails clearly, naming the portal, for a name that does not resolve', async () => {
    // .invalid never resolves (RFC 6761); without a reachable resolver the answer is "retry later"
    const err = await resolvePortal(parsePortal('no-such-portal.invalid:3260'), 5000).catch((e: unknown) => e);
    expect(err instanceof FailedPrecondition || err instanceof Unavailable).toBe(true);
    expect((err as Error).message).toContain('no-such-portal.invalid');
  });
});
