// The simulated host's executables (fake iscsiadm, simulated kernel) run as compiled JavaScript:
// build once before any test file runs. Type errors are reported by `npm run typecheck` (part of
// `make test`); here tsc still emits, so one broken file elsewhere does not stop unrelated tests.
import { spawnSync } from 'node:child_process';

const TSC_TIMEOUT_MS = 300_000;

export default function setup(): void {
  const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', timeout: TSC_TIMEOUT_MS, killSignal: 'SIGKILL' });
  if (r.error) throw new Error(`tsc did not run: ${r.error.message}`);
  if (r.status !== 0 && r.status !== 2) throw new Error(`tsc failed: ${r.stdout}`);
}
