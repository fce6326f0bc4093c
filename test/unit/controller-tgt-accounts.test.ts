import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { sameCredentials } from '../../src/contract/chap.js';
import { tgtChapFromSecrets as chapFromSecrets } from '../../src/controller/tgt/accounts.js';

const U = 'node.session.auth.username';
const P = 'node.session.auth.password';

function failure(fn: () => unknown): { code: number; message: string } {
  try {
    fn();
  } catch (e) {
    return e as { code: number; message: string };
  }
  throw new Error('did not throw');
}

describe('CHAP credentials from CSI secrets', () => {
  it('reads session and mutual credentials under the in-tree keys', () => {
    expect(chapFromSecrets({}, 's')).toBeUndefined();
    const c = chapFromSecrets({ [U]: 'alice', [P]: 'secretpass123', 'node.session.auth.username_in': 'target', 'node.session.auth.password_in': 'mutualpass12' }, 's')!;
    expect(c.username).toBe('alice');
    expect(c.password.reveal()).toBe('secretpass123');
    expect(c.usernameIn).toBe('target');
    expect(String(c.password)).not.toContain('secretpass123');
  });

  it('refuses half-given pairs and values tgtadm would split, without echoing the password', () => {
    const cases: Record<string, string>[] = [{ [U]: 'alice' }, { [P]: 'x' }, { [U]: 'alice', [P]: 'has,comma' }, { [U]: 'alice', [P]: 'has space' }, { [U]: '-opt', [P]: 'ok' }, { 'node.session.auth.username_in': 'a', 'node.session.auth.password_in': 'b' }];
    for (const secrets of cases) {
      const e = failure(() => chapFromSecrets(secrets, 'CreateVolume secrets'));
      expect(e.code).toBe(status.INVALID_ARGUMENT);
      expect(e.message).not.toMatch(/has,comma|has space/);
    }
    expect(failure(() => chapFromSecrets({ [U]: 'a', [P]: 'p', 'node.session.auth.username_in': 'a', 'node.session.auth.password_in': 'q' }, 's')).message).toMatch(/must differ/);
  });

  it('compares credentials by value', () => {
    const a = chapFromSecrets({ [U]: 'alice', [P]: 'one' }, 's')!;
    expect(sameCredentials(a, chapFromSecrets({ [U]: 'alice', [P]: 'one' }, 's')!)).toBe(true);
    expect(sameCredentials(a, chapFromSecrets({ [U]: 'alice', [P]: 'two' }, 's')!)).toBe(false);
  });
});
