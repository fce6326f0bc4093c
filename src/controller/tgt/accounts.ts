// The target's CHAP accounts for a volume, from the CreateVolume / ControllerPublishVolume secrets
// (the contract's CHAP keys and parser), plus what tgt itself needs of them.
import type { StringMap } from '../../csi/types.js';
import { InvalidArgument } from '../../errors.js';
import { chapFromSecrets, SESSION_CHAP_KEYS, type ChapCredentials } from '../../contract/chap.js';

// tgtadm sends account parameters to tgtd as one comma-separated "key=value" string: a comma or
// whitespace in a value would split it, so such values are refused instead of mangled.
const USER_RE = /^[A-Za-z0-9][A-Za-z0-9._@:+=-]{0,127}$/;
const PASSWORD_RE = /^[\x21-\x2b\x2d-\x7e]{1,255}$/;

/** The session CHAP credentials a secrets map carries, as tgt accounts; undefined when it carries none. */
export function tgtChapFromSecrets(secrets: StringMap, what: string): ChapCredentials | undefined {
  const creds = chapFromSecrets(secrets, SESSION_CHAP_KEYS, what);
  if (!creds) return undefined;
  checkAccount(creds.username, creds.password.reveal(), SESSION_CHAP_KEYS.username, SESSION_CHAP_KEYS.password, what);
  if (creds.usernameIn !== undefined && creds.passwordIn !== undefined) {
    checkAccount(creds.usernameIn, creds.passwordIn.reveal(), SESSION_CHAP_KEYS.usernameIn, SESSION_CHAP_KEYS.passwordIn, what);
    if (creds.usernameIn === creds.username) throw new InvalidArgument(`${what}: ${SESSION_CHAP_KEYS.usernameIn} must differ from ${SESSION_CHAP_KEYS.username} (tgt keeps one account per name)`);
  }
  return creds;
}

function checkAccount(user: string, password: string, userKey: string, passwordKey: string, what: string): void {
  if (!USER_RE.test(user)) throw new InvalidArgument(`${what}: ${userKey} ${JSON.stringify(user.slice(0, 64))} must be 1..128 characters of A-Z a-z 0-9 . _ @ : + = - starting with a letter or digit`);
  if (!PASSWORD_RE.test(password)) throw new InvalidArgument(`${what}: ${passwordKey} must be 1..255 printable ASCII characters without spaces or commas`);
}
