// The documented entry points, `npm start` and `npm run sim`, run through npm as a user runs them:
// SIGTERM to the process that was started (npm) stops the driver cleanly — npm exits 0, the socket is
// removed, no driver process is left, and `npm run sim` tears its simulated host down (its tgtd, its
// root). Each runs in a copy of the package, so the build npm runs first writes that copy's dist/ and
// never the one other test files are using.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { createInterface } from 'node:readline';

const exec = promisify(execFile);
const REPO = resolve('.');
/** npm builds first (tsc), then the driver starts: a cold tsc on a busy 2-CPU machine takes a while */
const START_TIMEOUT_MS = 180_000;
const STOP_TIMEOUT_MS = 30_000;

function pidsMatching(pattern: string): Promise<string[]> {
  return exec('pgrep', ['-f', pattern]).then((r) => r.stdout.split('\n').filter(Boolean), () => []);
}

async function waitFor(what: string, ms: number, probe: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(process.getuid?.() !== 0)('npm entry points stop cleanly on SIGTERM', () => {
  let pkg: string;
  const started: ChildProcess[] = [];

  beforeAll(() => {
    pkg = mkdtempSync('/tmp/iscsi-csi-pkg-');
    for (const entry of ['package.json', 'tsconfig.json', 'src', 'test', 'bench', 'scripts', 'proto']) cpSync(join(REPO, entry), join(pkg, entry), { recursive: true });
    symlinkSync(join(REPO, 'node_modules'), join(pkg, 'node_modules'));
    // the node plugin's state in the copy, never the machine's /var/lib/iscsi-csi
    writeFileSync(join(pkg, 'node.json'), JSON.stringify({ stateDir: join(pkg, 'state') }));
  });
  afterAll(async () => {
    for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
    for (const pid of await pidsMatching(pkg)) process.kill(Number(pid), 'SIGKILL');
    rmSync(pkg, { recursive: true, force: true });
  });

  function npm(args: string[]): { child: ChildProcess; exited: Promise<number | null>; stderr: () => string } {
    const child = spawn('npm', args, { cwd: pkg, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, npm_config_update_notifier: 'false' } });
    started.push(child);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    return { child, exited: new Promise((r) => child.once('exit', (code) => r(code))), stderr: () => err.slice(-2000) };
  }

  it('npm start: the driver exits 0 and removes its socket', async () => {
    const socket = join(pkg, 'start.sock');
    const run = npm(['start', '-s', '--', '--mode', 'node', '--node-id', 'iqn.2026-12.dev.test:entry', '--endpoint', `unix://${socket}`,
      '--log-level', 'warn', '--config', join(pkg, 'node.json')]);
    await waitFor(`the socket of npm start (${run.stderr()})`, START_TIMEOUT_MS, () => existsSync(socket) || run.child.exitCode !== null);
    expect(run.child.exitCode).toBeNull();
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    await waitFor('no driver process left', STOP_TIMEOUT_MS, async () => (await pidsMatching(socket)).length === 0);
    expect(existsSync(socket)).toBe(false);
  }, START_TIMEOUT_MS + 2 * STOP_TIMEOUT_MS);

  it('npm run sim: the driver and the whole simulated host are gone', async () => {
    const socket = join(pkg, 'sim.sock');
    const run = npm(['run', '-s', 'sim', '--', '--endpoint', `unix://${socket}`, '--log-level', 'warn']);
    const line = await Promise.race([
      new Promise<string>((r) => createInterface({ input: run.child.stdout! }).once('line', r)),
      run.exited.then((code) => { throw new Error(`npm run sim exited (${code}) before serving: ${run.stderr()}`); }),
      new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`not serving within ${START_TIMEOUT_MS} ms: ${run.stderr()}`)), START_TIMEOUT_MS)),
    ]);
    const ready = JSON.parse(line) as { tgtControlPort: number; root: string };
    expect(await pidsMatching(`tgtd -f -C ${ready.tgtControlPort} `)).toHaveLength(1);
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    await waitFor('no driver or simulated kernel left', STOP_TIMEOUT_MS, async () => (await pidsMatching(socket)).length === 0 && (await pidsMatching(`kernel-main.js --root ${ready.root} `)).length === 0);
    expect(await pidsMatching(`tgtd -f -C ${ready.tgtControlPort} `)).toEqual([]);
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(ready.root)).toBe(false);
  }, START_TIMEOUT_MS + 2 * STOP_TIMEOUT_MS);
});
