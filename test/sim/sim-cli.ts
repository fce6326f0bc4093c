// The fake host commands (iscsiadm, multipath, multipathd) as one thin client: it hands its argv to
// the simulated kernel and prints the reply's stdout/stderr and exits with its code. R/bin/<tool>
// runs `node <abs>/dist/test/sim/sim-cli.js --sim-root R --tool <tool> "$@"` when the native client
// (sim-cli.c, the same behaviour without a Node start) cannot be built, or on request (SIM_CLI=node).
// Kept to node:net only so a call costs little more than Node's startup.
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

const sock = connect(join(root, 'run/kernel.sock'));
let buf = '';
sock.setEncoding('utf8');
sock.on('connect', () => sock.write(JSON.stringify({ tool, argv: rest }) + '\n'));
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
  if (reply.hang) {
    // fault switch: behave like a command stuck in the kernel until the caller kills it
    setInterval(() => undefined, 1 << 30);
    return;
  }
  if (reply.stdout) process.stdout.write(reply.stdout);
  if (reply.stderr) process.stderr.write(reply.stderr);
  process.exitCode = reply.code;
});
