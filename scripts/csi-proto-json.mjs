#!/usr/bin/env node
// Compiles proto/csi.proto (and the google/protobuf files it imports, as protobufjs ships them) into
// proto/csi.json, the descriptor the driver loads at start with protobufjs's light build (no parser).
// Field names are kept as in the .proto. Run after updating csi.proto: `npm run proto`; a unit test
// fails while the two disagree. `--check` prints whether they do and exits 1 when not.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const protobuf = require('protobufjs');
const protoDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'proto');

/** csi.proto as protobufjs's JSON descriptor, serialised the way proto/csi.json is stored. */
export function compileCsiProto() {
  const root = new protobuf.Root();
  const shipped = join(dirname(require.resolve('protobufjs/package.json')));
  root.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? join(shipped, target) : join(protoDir, target));
  root.loadSync('csi.proto', { keepCase: true });
  return `${JSON.stringify(root.toJSON(), null, 1)}\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = join(protoDir, 'csi.json');
  const compiled = compileCsiProto();
  if (process.argv.includes('--check')) {
    const same = readFileSync(file, 'utf8') === compiled;
    console.log(same ? `${file} matches csi.proto` : `${file} differs from csi.proto: run npm run proto`);
    process.exit(same ? 0 : 1);
  }
  writeFileSync(file, compiled);
  console.log(`wrote ${file}`);
}
