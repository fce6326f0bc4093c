// The CHAP accounts of the tgt backend's volumes. tgtd keeps accounts only in memory, so their
// passwords must be kept to re-create them after a tgtd restart: in their own 0600 file
// (<stateDir>/controller/tgt/chap-secrets.json), never in the volume state, a volume_context, a log
// line or an error message. tgt has one account per user name for all its targets: accounts are
// created and deleted here (under a lock per user name), and bound to targets by the reconciler.
import { DurableJsonFile, PRIVATE_FILE_MODE, RESTORE_HINT } from '../../common/durable-json.js';
import { KeyedMutex } from '../../common/keyed-mutex.js';
import type { ChapCredentials } from '../../contract/chap.js';
import { FailedPrecondition, Internal } from '../../errors.js';
import { Secret } from '../../log.js';
import type { Tgtadm } from './tgtadm.js';

const CHAP_DOC_VERSION = 1;

/** A volume's account names: `user` logs in, `mutualUser` answers for the target (mutual CHAP). */
export interface ChapAccountNames {
  user: string;
  mutualUser?: string;
}

interface ChapDoc {
  version: number;
  accounts: Record<string, { password: string }>;
}

export class ChapStore {
  #doc: ChapDoc = { version: CHAP_DOC_VERSION, accounts: {} };
  readonly #file: DurableJsonFile<ChapDoc>;
  readonly #locks = new KeyedMutex();

  constructor(path: string, private readonly tgtadm: Tgtadm) {
    this.#file = new DurableJsonFile(path, { what: 'CHAP secrets file', version: CHAP_DOC_VERSION, hint: RESTORE_HINT, mode: PRIVATE_FILE_MODE }, () => this.#doc);
  }

  get path(): string {
    return this.#file.path;
  }

  async load(): Promise<void> {
    const doc = await this.#file.load();
    if (doc) this.#doc = doc;
  }

  /**
   * Records a volume's accounts. A user name already known with another password is refused (its
   * volumes would be locked out); nothing is recorded when the file cannot be written.
   */
  async store(creds: ChapCredentials): Promise<ChapAccountNames> {
    const pairs: [string, Secret][] = [[creds.username, creds.password]];
    if (creds.usernameIn && creds.passwordIn) pairs.push([creds.usernameIn, creds.passwordIn]);
    for (const [user, pw] of pairs) {
      const known = this.#doc.accounts[user];
      if (known && known.password !== pw.reveal()) {
        throw new FailedPrecondition(`CHAP user ${user} is already used by other volumes with a different password; tgt has one account per user name, so use another user name or the same password`);
      }
    }
    const added = pairs.filter(([user]) => !this.#doc.accounts[user]).map(([user]) => user);
    for (const [user, pw] of pairs) this.#doc.accounts[user] = { password: pw.reveal() };
    try {
      await this.#file.save();
    } catch (e) {
      for (const user of added) delete this.#doc.accounts[user];
      throw e;
    }
    return creds.usernameIn ? { user: creds.username, mutualUser: creds.usernameIn } : { user: creds.username };
  }

  /** A volume's credentials, or undefined when a password is missing from the file. */
  credentialsOf(names: ChapAccountNames): ChapCredentials | undefined {
    const password = this.#doc.accounts[names.user]?.password;
    if (password === undefined) return undefined;
    const creds: ChapCredentials = { username: names.user, password: new Secret(password) };
    if (names.mutualUser) {
      const mutual = this.#doc.accounts[names.mutualUser]?.password;
      if (mutual === undefined) return undefined;
      creds.usernameIn = names.mutualUser;
      creds.passwordIn = new Secret(mutual);
    }
    return creds;
  }

  /** Creates the account in tgtd (an existing one is fine). `volumeId` only names who needs it in the error. */
  async createInTgtd(user: string, volumeId: string): Promise<void> {
    await this.#locks.withLock(user, async () => {
      const password = this.#doc.accounts[user]?.password;
      if (password === undefined) {
        throw new Internal(`CHAP password of account ${user} (volume ${volumeId}) is missing from ${this.path}; create the volume's account again with tgtadm or restore that file`);
      }
      await this.tgtadm.newAccount(user, new Secret(password));
    });
  }

  /** Deletes the account from tgtd and the file unless `inUse()` says a volume still needs it. */
  async dropIfUnused(user: string, inUse: () => boolean): Promise<void> {
    await this.#locks.withLock(user, async () => {
      if (inUse()) return;
      await this.tgtadm.deleteAccount(user);
      delete this.#doc.accounts[user];
      await this.#file.save();
    });
  }
}
