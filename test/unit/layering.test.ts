// The layers of docs/architecture.md, checked on the import statements of every module under src/: a
// module imports only from its own room and the rooms below it. The arrow that climbed back up (flows →
// node request types, controller → node's parser) must not come back.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = resolve('src');

/** The room of a module: its folder under src/ (controller/tgt is a room of its own), `base` for the top-level shared files. */
function roomOf(file: string): string {
  const rel = relative(SRC, file);
  const parts = rel.split('/');
  if (parts.length === 1) return ['cli.ts', 'driver.ts'].includes(parts[0]!) ? 'entry' : 'base';
  if (parts[0] === 'controller' && parts[1] === 'tgt' && parts.length > 2) return 'controller/tgt';
  return parts[0] === 'csi' ? 'base' : parts[0]!;
}

const BELOW: Record<string, readonly string[]> = {
  base: [],
  common: ['base'],
  contract: ['base', 'common'],
  'node-host': ['base', 'common', 'contract'],
  flows: ['base', 'common', 'contract', 'node-host'],
  server: ['base', 'common'],
  node: ['base', 'common', 'contract', 'node-host', 'flows', 'server'],
  controller: ['base', 'common', 'contract', 'server', 'controller/tgt'],
  'controller/tgt': ['base', 'common', 'contract', 'controller'],
  identity: ['base', 'server'],
  // the registry and the endpoint: the rooms above report to it through their own observer interfaces
  metrics: ['base', 'common'],
  // the doctor reads the host through the node host's readers and the controller's adapters; only the entry runs it
  doctor: ['base', 'common', 'contract', 'node-host', 'controller', 'controller/tgt'],
  // the image's entry point runs the bundle of everything else and imports none of it
  launcher: [],
  entry: ['base', 'common', 'contract', 'node-host', 'flows', 'server', 'node', 'controller', 'controller/tgt', 'identity', 'metrics', 'doctor'],
};

function modules(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return modules(path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

function relativeImports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^'";]*?from\s*['"](\.{1,2}\/[^'"]+)['"]/g)].map((m) => m[1]!);
  return specs.map((s) => resolve(dirname(file), s).replace(/\.js$/, '.ts'));
}

describe('layering', () => {
  const files = modules(SRC);

  it('knows the room of every module under src/', () => {
    const unknown = files.filter((f) => !(roomOf(f) in BELOW)).map((f) => relative(SRC, f));
    expect(unknown).toEqual([]);
  });

  it('every module imports only from its own room and the rooms below it', () => {
    const climbing: string[] = [];
    for (const file of files) {
      const room = roomOf(file);
      for (const target of relativeImports(file)) {
        const to = roomOf(target);
        if (to !== room && !BELOW[room]!.includes(to)) climbing.push(`${relative(SRC, file)} (${room}) → ${relative(SRC, target)} (${to})`);
      }
    }
    expect(climbing).toEqual([]);
  });

  it('prom-client is imported by src/metrics alone (the others report through observer interfaces)', () => {
    const importers = files.filter((f) => /from\s*['"]prom-client['"]/.test(readFileSync(f, 'utf8'))).map((f) => relative(SRC, f));
    expect(importers.length).toBeGreaterThan(0);
    expect(importers.filter((f) => roomOf(join(SRC, f)) !== 'metrics')).toEqual([]);
  });

  it('finds the imports it checks (the check is not vacuous)', () => {
    const node = join(SRC, 'node/stage.ts');
    expect(relativeImports(node).some((t) => roomOf(t) === 'flows')).toBe(true);
    // a climbing import is reported
    expect(BELOW.flows!.includes(roomOf(join(SRC, 'node/request.ts')))).toBe(false);
  });
});
