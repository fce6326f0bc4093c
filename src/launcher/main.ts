#!/usr/bin/env node
// The image's entry point (dist/bundle/cli.js): runs the driver's bundle, dist/bundle/driver.js, with
// its code cache (see code-cache.ts).
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runBundleScript } from './code-cache.js';

runBundleScript(join(dirname(fileURLToPath(import.meta.url)), 'driver.js'));
