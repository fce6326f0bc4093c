// The sessions this driver logged in, marked in its own state directory: one small crash-safe file per
// session (target, portal, iface), written under the target lock before the node record and the login,
// removed after the logout and the node record's delete. The node healer reaps only marked sessions
// that no volume record uses: an operator's own sessions, or another plugin's, are never marked, so
// never touched. A mark without a session (a crash between the mark and the login) is harmless: the
// healer clears it.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { errnoCode, Internal, ResourceExhausted } from '../errors.js';
import { fsyncDirectory, PRIVATE_DIR_MODE, readVersionedJson, writeJsonDurably } from '../common/durable-json.js';
import { parseIfaceName, parsePortal, parseTargetIqn } from '../common/validate.js';

const MARK_VERSION = 1;
const MARK_SUFFIX = '.json';

/** One iSCSI session as open-iscsi names it: target, `addr:port`, iface. */
export interface SessionRef {
  iqn: string;
  portal: string;
  iface: string;
}

interface MarkDoc extends SessionRef {
  version: typeof MARK_VERSION;
  /** ISO 8601 */
  markedAt: string;
}

export function sessionKey(ref: SessionRef): string {
  return `${ref.iqn} ${ref.portal} ${ref.iface}`;
}

export class SessionMarks {
  constructor(readonly stateDir: string) {}

  private dir(): string {
    return join(this.stateDir, 'sessions');
  }

  private file(ref: SessionRef): string {
    return join(this.dir(), `${createHash('sha256').update(sessionKey(ref)).digest('hex').slice(0, 32)}${MARK_SUFFIX}`);
  }

  /** Marks the session as this driver's (idempotent). A full state directory is RESOURCE_EXHAUSTED: no login without its mark. */
  async mark(ref: SessionRef): Promise<void> {
    const doc: MarkDoc = { version: MARK_VERSION, iqn: ref.iqn, portal: ref.portal, iface: ref.iface, markedAt: new Date().toISOString() };
    try {
      await fs.mkdir(this.dir(), { recursive: true, mode: PRIVATE_DIR_MODE });
      await writeJsonDurably(this.file(ref), doc);
    } catch (e) {
      const code = errnoCode(e);
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        throw new ResourceExhausted(`the state directory ${this.stateDir} is full: cannot mark the session to ${ref.portal} ${ref.iqn} as this driver's (${(e as Error).message}); free space on that filesystem and retry`);
      }
      throw e;
    }
  }

  /** Removes the mark; none is success. */
  async unmark(ref: SessionRef): Promise<void> {
    await fs.rm(this.file(ref), { force: true });
    await fsyncDirectory(this.dir()).catch(() => undefined);
  }

  /** Every marked session. A mark that cannot be read is an error: the healer then reaps nothing this pass. */
  async list(): Promise<SessionRef[]> {
    let names: string[];
    try {
      names = (await fs.readdir(this.dir())).filter((n) => n.endsWith(MARK_SUFFIX) && !n.startsWith('.'));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return [];
      throw e;
    }
    const marks = await Promise.all(names.map(async (name) => {
      const path = join(this.dir(), name);
      const doc = await readVersionedJson<MarkDoc>(path, { what: 'session mark', version: MARK_VERSION });
      return doc === undefined ? null : checkedRef(doc, path);
    }));
    return marks.filter((m): m is SessionRef => m !== null);
  }
}

function checkedRef(doc: MarkDoc, path: string): SessionRef {
  try {
    if (typeof doc.iqn !== 'string' || typeof doc.portal !== 'string' || typeof doc.iface !== 'string') throw new Error('iqn, portal and iface must be strings');
    parseTargetIqn(doc.iqn);
    parsePortal(doc.portal);
    parseIfaceName(doc.iface);
    return { iqn: doc.iqn, portal: doc.portal, iface: doc.iface };
  } catch (e) {
    throw new Internal(`session mark ${path} is not valid: ${(e as Error).message}`);
  }
}
