#!/usr/bin/env node
// Bundles the compiled driver (dist/src/cli.js and what it imports, node_modules included) into
// dist/bundle/: what the image runs. A driver that loads ~300 module files at every start spends most
// of its start resolving and compiling them (and holds their module records in memory); one bundle
// with a chunk per lazily loaded part (the controller's backends, the metrics) starts about 150 ms
// sooner here. The proto/ directory and package.json are still read at run time, found by walking up
// from the bundle as from dist/src.
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist', 'bundle');
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: [join(root, 'dist', 'src', 'cli.js')],
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // CommonJS packages inside an ES module bundle still call require() for Node's own modules
  banner: { js: "import { createRequire as __bundleRequire } from 'node:module'; const require = __bundleRequire(import.meta.url);" },
  // required by grpc-js only for its channelz and ORCA services, which the driver does not serve:
  // left out, it is not parsed at every start (with the .proto parser it brings)
  external: ['@grpc/proto-loader'],
  logLevel: 'warning',
  legalComments: 'linked',
});
