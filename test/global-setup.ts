// The simulated host's executables (fake iscsiadm, simulated kernel) run as compiled JavaScript:
// build once before any test file runs.
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
}
