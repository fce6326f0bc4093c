// CHAP credentials as CSI carries them: `secrets` maps under the in-tree plugin's key names, so one
// Kubernetes Secret serves as the provisioner/attacher secret (the target's accounts) and as the
// node-stage secret (the initiator's login). One type and one parser for both sides; values are wrapped
// in Secret at once and never appear in a message.
import type { StringMap } from '../csi/types.js';
import { InvalidArgument } from '../errors.js';
import { Secret } from '../log.js';

/** Session CHAP (the initiator logs in with username/password; mutual: the target answers with *_in). */
export const SESSION_CHAP_KEYS = {
  username: 'node.session.auth.username',
  password: 'node.session.auth.password',
  usernameIn: 'node.session.auth.username_in',
  passwordIn: 'node.session.auth.password_in',
} as const;

/** Discovery CHAP (SendTargets), node-stage secret only. */
export const DISCOVERY_CHAP_KEYS = {
  username: 'discovery.sendtargets.auth.username',
  password: 'discovery.sendtargets.auth.password',
  usernameIn: 'discovery.sendtargets.auth.username_in',
  passwordIn: 'discovery.sendtargets.auth.password_in',
} as const;

export type ChapKeys = typeof SESSION_CHAP_KEYS | typeof DISCOVERY_CHAP_KEYS;

/** CHAP credentials; passwords only as Secret so they never reach a log line or an error message. */
export interface ChapCredentials {
  username: string;
  password: Secret;
  /** mutual CHAP: the target authenticates itself to the initiator with this account */
  usernameIn?: string;
  passwordIn?: Secret;
}

/** open-iscsi keeps each value on one `key = value` line of a record file; tgtd's limit is close. */
export const MAX_CHAP_VALUE_CHARS = 256;

/**
 * The credentials a secrets map carries under `keys`, undefined when it carries none. Both halves of a
 * pair or neither; mutual only with session. `what` names the map in messages ("node-stage secret").
 */
export function chapFromSecrets(secrets: StringMap, keys: ChapKeys, what: string): ChapCredentials | undefined {
  const session = pair(secrets, keys.username, keys.password, what);
  const mutual = pair(secrets, keys.usernameIn, keys.passwordIn, what);
  if (!session) {
    if (mutual) throw new InvalidArgument(`${what} carries ${keys.usernameIn} (mutual CHAP) but not ${keys.username} / ${keys.password}`);
    return undefined;
  }
  return mutual ? { ...session, usernameIn: mutual.username, passwordIn: mutual.password } : session;
}

/** Whether two credential sets are the same (compares secret values without exposing them). */
export function sameCredentials(a: ChapCredentials, b: ChapCredentials): boolean {
  return a.username === b.username && a.password.reveal() === b.password.reveal()
    && a.usernameIn === b.usernameIn && a.passwordIn?.reveal() === b.passwordIn?.reveal();
}

function pair(secrets: StringMap, userKey: string, passwordKey: string, what: string): { username: string; password: Secret } | undefined {
  const username = secrets[userKey];
  const password = secrets[passwordKey];
  if (!username && !password) return undefined;
  if (!username || !password) throw new InvalidArgument(`CHAP needs both ${userKey} and ${passwordKey} in the ${what}`);
  return { username: checkValue(username, userKey), password: new Secret(checkValue(password, passwordKey)) };
}

/**
 * No line break (in a record file it would add lines of its own, e.g. `node.startup = automatic`) and no
 * NUL. The message names the key, never the value.
 */
function checkValue(value: string, key: string): string {
  if (value.length > MAX_CHAP_VALUE_CHARS || /[\0\n\r]/.test(value)) throw new InvalidArgument(`${key} must be at most ${MAX_CHAP_VALUE_CHARS} characters without line breaks`);
  return value;
}
