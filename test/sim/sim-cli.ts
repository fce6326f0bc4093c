// The fake host commands (iscsiadm, multipath, multipathd) as one thin client: it hands its argv to
// the simulated kernel and prints the reply's stdout/stderr and exits with its code. R/bin/<tool>
// runs `node <abs>/dist/test/sim/sim-cli.js --sim-root R --tool <tool> "$@"` when the native client
// (sim-cli.c, the same behaviour without a Node start) cannot be built, or on request (SIM_CLI=node).
// As iscsiadm it holds open-iscsi's DB lock like sim-cli.c does (see there). Kept to node:net and
// node:fs only so a call costs little more than Node's startup.
import { closeSync, existsSync, linkSync, mkdirSync, openSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';

const NO_DAEMON: Record<string, { stderr: string; code: number }> = {
  // what the real tools print when iscsid / multipathd cannot be reached
  iscsiadm: { stderr: 'iscsiadm: can not connect to iSCSI daemon (111)!\n', code: 20 },
  multipath: { stderr: 'ERROR: failed to connect to multipathd\n', code: 1 },
  multipathd: { stderr: 'ERROR: failed to connect to multipathd\n', code: 1 },
};

let root = '';
let tool = 'iscsiadm';
const argv = process.argv.slice(2);
const rest: string[] = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--sim-root' && !root) root = argv[++i] ?? '';
  else if (argv[i] === '--tool' && !rest.length) tool = argv[++i] ?? tool;
  else rest.push(argv[i]!);
}
// /proc/PID/comm, as the native client's (exec'd under the tool's name) and the real tool's
process.title = tool;

// open-iscsi's LOCK_DIR, LOCK_FILE, LOCK_WRITE_FILE (usr/idbm.h) under the root; idbm_lock's retries
const LOCK_DIR = join(root, 'run/lock/iscsi');
const LOCK_FILE = join(LOCK_DIR, 'lock');
const LOCK_WRITE_FILE = join(LOCK_DIR, 'lock.write');
const LOCK_ATTEMPTS = 3000;
const LOCK_RETRY_MS = 10;
const EXIT_IDBM = 6;
const LOCKING_MODES = new Set(['node', 'discovery', 'discoverydb', 'iface']);

/** The mode's records are read or written under the DB lock: node, discovery(db), iface. */
function takesDbLock(): boolean {
  if (tool !== 'iscsiadm') return false;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    const mode = a === '-m' || a === '--mode' ? rest[i + 1] : a.startsWith('--mode=') ? a.slice(7) : a.startsWith('-m') && a.length > 2 && !a.startsWith('--') ? a.slice(2) : undefined;
    if (mode !== undefined) return LOCKING_MODES.has(mode);
  }
  return false;
}

let lockTaken = false;

/** idbm_unlock: lock.write goes, whether this process linked it or went on after waiting. */
function dbUnlock(): void {
  if (!lockTaken) return;
  lockTaken = false;
  try {
    unlinkSync(LOCK_WRITE_FILE);
  } catch {
    // already gone
  }
}

function dbLockFail(lines: string[]): never {
  process.stderr.write(lines.map((l) => `iscsiadm: ${l}\n`).join(''));
  process.exit(EXIT_IDBM);
}

/** idbm_lock: link lock → lock.write, again every 10 ms while it exists, at most 3000 times, then go on. */
async function dbLock(): Promise<void> {
  if (!existsSync(LOCK_DIR)) {
    try {
      mkdirSync(LOCK_DIR, { mode: 0o770 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') dbLockFail([`Could not open ${LOCK_DIR}. Exiting`]);
    }
  }
  try {
    closeSync(openSync(LOCK_FILE, 'a', 0o666));
  } catch {
    // as open-iscsi: the link below reports it
  }
  for (let i = 0; i < LOCK_ATTEMPTS; i++) {
    try {
      linkSync(LOCK_FILE, LOCK_WRITE_FILE);
      break;
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code !== 'EEXIST') dbLockFail(['Maybe you are not root?', `Could not lock discovery DB: ${LOCK_WRITE_FILE}: ${err.message}`]);
    }
    await new Promise((r) => setTimeout(r, LOCK_RETRY_MS));
  }
  lockTaken = true;
}
process.on('exit', dbUnlock);

const sock = connect(join(root, 'run/kernel.sock'));
let buf = '';
sock.setEncoding('utf8');
sock.on('connect', () => {
  // with the daemon there: the DB lock, held until the answer is in
  void (takesDbLock() ? dbLock() : Promise.resolve()).then(() => sock.write(JSON.stringify({ tool, argv: rest }) + '\n'));
});
sock.on('data', (d: string) => { buf += d; });
sock.on('error', () => {
  const e = NO_DAEMON[tool] ?? NO_DAEMON.iscsiadm!;
  process.stderr.write(e.stderr);
  process.exitCode = e.code;
});
sock.on('end', () => {
  let reply: { stdout: string; stderr: string; code: number; hang?: boolean };
  try {
    reply = JSON.parse(buf) as typeof reply;
  } catch {
    process.stderr.write(`${tool}: no reply from the simulated kernel\n`);
    process.exitCode = 1;
    return;
  }
  // like the native client: the lock is released once the answer is in (a hang is outside it)
  dbUnlock();
  if (reply.hang) {
    // fault switch: behave like a command stuck in the kernel until the caller kills it
    setInterval(() => undefined, 1 << 30);
    return;
  }
  if (reply.stdout) process.stdout.write(reply.stdout);
  if (reply.stderr) process.stderr.write(reply.stderr);
  process.exitCode = reply.code;
});
