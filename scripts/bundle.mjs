#!/usr/bin/env node
// Bundles the compiled driver (dist/src/cli.js and what it imports, node_modules included) into
// dist/bundle/: what the image runs.
//   driver.js           the whole driver in one CommonJS module function (a driver that loads ~300
//                       module files at every start spends most of its start resolving and
//                       compiling them), as src/launcher/code-cache.ts writes and runs it
//   driver.js.v8cache   V8's code cache of it, made here by the Node that builds it (the image's)
//   cli.js              the entry point (src/launcher/main.ts): runs driver.js with its cache
// One CommonJS file rather than ES module chunks because only a script takes a code cache in Node 20;
// the modules a node plugin never runs (the controller's backends, the metrics) are still in it but
// are neither compiled nor run until imported. The proto/ directory and package.json are still read
// at run time, found by walking up from the bundle as from dist/src.
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { writeBundleScript } from '../dist/src/launcher/code-cache.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist', 'bundle');
const commonJs = join(outdir, 'driver.cjs');
rmSync(outdir, { recursive: true, force: true });

await build({
  entryPoints: [join(root, 'dist', 'src', 'cli.js')],
  outfile: commonJs,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  // the sources find package.json and proto/ from import.meta.url, which a CommonJS file lacks; the
  // banner comes before esbuild's own "use strict", so it says it again: the sources are ES modules
  define: { 'import.meta.url': '__bundleUrl' },
  banner: { js: "'use strict'; const __bundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  // required by grpc-js only for its channelz and ORCA services, which the driver does not serve:
  // left out, it is not parsed at every start (with the .proto parser it brings)
  external: ['@grpc/proto-loader'],
  logLevel: 'warning',
  legalComments: 'linked',
});

writeBundleScript(commonJs, join(outdir, 'driver.js'));
rmSync(commonJs);

await build({
  entryPoints: [join(root, 'dist', 'src', 'launcher', 'main.js')],
  outfile: join(outdir, 'cli.js'),
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  logLevel: 'warning',
});
