// CHAP credentials from CSI `secrets` maps, under the in-tree plugin's key names, so one Kubernetes
// Secret can serve as provisioner/attacher secret (the target side) and node-stage secret (the
// initiator side). Values are wrapped in Secret at once and never appear in a message.
import type { StringMap } from '../csi/types.js';
import { InvalidArgument } from '../errors.js';
import { Secret } from '../log.js';
import { CHAP_KEYS } from './backend.js';

export interface ChapCredentials {
  user: string;
  password: Secret;
  /** mutual CHAP: the target authenticates itself to the initiator with this account */
  mutualUser?: string;
  mutualPassword?: Secret;
}

// tgtadm sends account parameters to tgtd as one comma-separated "key=value" string: a comma or
// whitespace in a value would split it, so such values are refused instead of mangled.
const USER_RE = /^[A-Za-z0-9][A-Za-z0-9._@:+=-]{0,127}$/;
const PASSWORD_RE = /^[\x21-\x2b\x2d-\x7e]{1,255}$/;

function pair(secrets: StringMap, userKey: string, passwordKey: string, what: string): { user: string; password: Secret } | undefined {
  const user = secrets[userKey];
  const password = secrets[passwordKey];
  if (!user && !password) return undefined;
  if (!user) throw new InvalidArgument(`${what} carry ${passwordKey} but not ${userKey}`);
  if (!password) throw new InvalidArgument(`${what} carry ${userKey} but not ${passwordKey}`);
  if (!USER_RE.test(user)) throw new InvalidArgument(`${what}: ${userKey} ${JSON.stringify(user.slice(0, 64))} must be 1..128 characters of A-Z a-z 0-9 . _ @ : + = - starting with a letter or digit`);
  if (!PASSWORD_RE.test(password)) throw new InvalidArgument(`${what}: ${passwordKey} must be 1..255 printable ASCII characters without spaces or commas`);
  return { user, password: new Secret(password) };
}

/** The CHAP credentials a secrets map carries, undefined when it carries none. `what` names the map in messages. */
export function chapFromSecrets(secrets: StringMap, what: string): ChapCredentials | undefined {
  const session = pair(secrets, CHAP_KEYS.user, CHAP_KEYS.password, what);
  const mutual = pair(secrets, CHAP_KEYS.userIn, CHAP_KEYS.passwordIn, what);
  if (!session) {
    if (mutual) throw new InvalidArgument(`${what} carry ${CHAP_KEYS.userIn} (mutual CHAP) but not ${CHAP_KEYS.user}/${CHAP_KEYS.password}`);
    return undefined;
  }
  if (!mutual) return session;
  if (mutual.user === session.user) throw new InvalidArgument(`${what}: ${CHAP_KEYS.userIn} must differ from ${CHAP_KEYS.user} (tgt keeps one account per name)`);
  return { ...session, mutualUser: mutual.user, mutualPassword: mutual.password };
}

/** Whether two credential sets are the same (compares secret values without exposing them). */
export function sameCredentials(a: ChapCredentials, b: ChapCredentials): boolean {
  return a.user === b.user && a.password.reveal() === b.password.reveal()
    && a.mutualUser === b.mutualUser && a.mutualPassword?.reveal() === b.mutualPassword?.reveal();
}
