// `npm run sim` (node dist/test/sim/main.js): serves, prints one JSON line, and on SIGTERM leaves
// nothing behind — no tgtd of its own, no loop device on its files, no mount under its root, no root.
import { afterAll, describe, expect, it } from 'vitest';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createInterface } from 'node:readline';
import { distDir, unmountUnder, detachLoopsUnder } from './host.js';

const exec = promisify(execFile);
const START_TIMEOUT_MS = 60_000;
const MiB = 1 << 20;

interface Ready { endpoint: string; portal: string; tgtControlPort: number; root: string }

function pidsMatching(pattern: string): Promise<string[]> {
  return exec('pgrep', ['-f', pattern]).then((r) => r.stdout.split('\n').filter(Boolean), () => []);
}

describe.skipIf(process.getuid?.() !== 0)('npm run sim', () => {
  const dir = mkdtempSync('/tmp/sim-main-test-');
  let child: ChildProcess | undefined;
  let ready: Ready | undefined;
  let stderr = '';

  afterAll(async () => {
    // only if the test failed half-way: do what the process should have done
    if (child && child.exitCode === null) child.kill('SIGKILL');
    if (ready) {
      await unmountUnder(ready.root);
      await detachLoopsUnder(ready.root);
      for (const pid of await pidsMatching(`tgtd -f -C ${ready.tgtControlPort} `)) process.kill(Number(pid), 'SIGKILL');
      rmSync(ready.root, { recursive: true, force: true });
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the driver on the endpoint and cleans up everything on SIGTERM', async () => {
    const endpoint = `unix://${join(dir, 'csi.sock')}`;
    child = spawn(process.execPath, [join(distDir(), 'test/sim/main.js'), '--endpoint', endpoint, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = new Promise<number | null>((r) => child!.once('exit', (code) => r(code)));
    const lines: string[] = [];
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (l) => lines.push(l));
    const first = await Promise.race([
      new Promise<string>((r) => rl.once('line', r)),
      exited.then((code) => { throw new Error(`sim exited (${code}) before serving: ${stderr.slice(-2000)}`); }),
      new Promise<never>((_, rej) => setTimeout(() => rej(new Error(`sim did not serve within ${START_TIMEOUT_MS} ms: ${stderr.slice(-2000)}`)), START_TIMEOUT_MS)),
    ]);
    ready = JSON.parse(first) as Ready;
    expect(Object.keys(ready)).toEqual(['endpoint', 'portal', 'tgtControlPort', 'root']);
    expect(ready.endpoint).toBe(endpoint);
    expect(ready.portal).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(existsSync(join(dir, 'csi.sock'))).toBe(true);
    expect(await pidsMatching(`tgtd -f -C ${ready.tgtControlPort} `)).toHaveLength(1);

    // a static target on that tgtd, attached and mounted through the simulated host
    const tgtadm = (...a: string[]) => exec('tgtadm', ['-C', String(ready!.tgtControlPort), '--lld', 'iscsi', ...a]);
    const iqn = 'iqn.2026-11.io.example:static1';
    const backing = join(ready.root, 'static1.img');
    await exec('truncate', ['-s', String(32 * MiB), backing]);
    await tgtadm('--op', 'new', '--mode', 'target', '--tid', '100', '-T', iqn);
    await tgtadm('--op', 'new', '--mode', 'logicalunit', '--tid', '100', '--lun', '1', '-b', backing);
    await tgtadm('--op', 'bind', '--mode', 'target', '--tid', '100', '-I', 'ALL');
    const iscsiadm = join(ready.root, 'bin/iscsiadm');
    await exec(iscsiadm, ['-m', 'discovery', '-t', 'st', '-p', ready.portal]);
    await exec(iscsiadm, ['-m', 'node', '-T', iqn, '-p', ready.portal, '--login']);
    const dev = join(ready.root, 'dev/disk/by-path', `ip-${ready.portal}-iscsi-${iqn}-lun-1`);
    await exec('mkfs.ext4', ['-q', '-F', dev]);
    mkdirSync(join(ready.root, 'mnt'));
    await exec('mount', [dev, join(ready.root, 'mnt')]);
    expect((await exec('losetup', ['-j', backing])).stdout).not.toBe('');

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(lines).toHaveLength(1); // exactly one line on stdout
    expect(await pidsMatching(`tgtd -f -C ${ready.tgtControlPort} `)).toEqual([]);
    expect(await pidsMatching(`kernel-main.js --root ${ready.root} `)).toEqual([]);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(ready.root);
    expect((await exec('losetup', ['-a'])).stdout).not.toContain(ready.root);
    expect(existsSync(ready.root)).toBe(false);
  });

  it('when the process owning a simulated host is killed, its kernel still logs out and detaches its loops', async () => {
    const script = join(dir, 'owner.mjs');
    writeFileSync(script, `
      import { SimulatedHost } from ${JSON.stringify(join(distDir(), 'test/sim/host.js'))};
      const host = await SimulatedHost.create();
      await host.createTarget('iqn.2026-11.io.example:crash', [{ lun: 1, sizeBytes: ${8 * MiB} }]);
      await host.run('iscsiadm', ['-m', 'discovery', '-t', 'st', '-p', host.tgtd.portal]);
      await host.run('iscsiadm', ['-m', 'node', '-T', 'iqn.2026-11.io.example:crash', '-p', host.tgtd.portal, '--login']);
      console.log(JSON.stringify({ root: host.root, ctl: host.tgtd.controlPort, state: await host.state() }));
      setInterval(() => {}, 1000);
    `);
    const owner = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((r) => createInterface({ input: owner.stdout! }).once('line', r));
    const info = JSON.parse(line) as { root: string; ctl: number; state: { loops: string[] } };
    ready = { endpoint: '', portal: '', tgtControlPort: info.ctl, root: info.root }; // afterAll cleans tgtd and root
    expect(info.state.loops).toHaveLength(1);
    owner.kill('SIGKILL');
    const deadline = Date.now() + 20_000;
    while ((await pidsMatching(`kernel-main.js --root ${info.root} `)).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(await pidsMatching(`kernel-main.js --root ${info.root} `)).toEqual([]);
    expect((await exec('losetup', ['-a'])).stdout).not.toContain(info.root);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(info.root);
  });
});
