// Loads the CSI wire format (proto/csi.proto, spec v1.12.0) at run time with @grpc/proto-loader.
// The same code runs from the TypeScript sources (vitest) and from dist/src/server/proto.js, so the
// proto directory is found by walking up from this module rather than by a fixed relative path.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const CSI_SPEC_VERSION = '1.12.0';
export const CSI_PACKAGE = 'csi.v1';
const PROTO_DIR_NAME = 'proto';
const CSI_PROTO_FILE = 'csi.proto';

/**
 * Decoding conventions every handler relies on (see src/csi/types.ts): field names as in the .proto,
 * int64 as JS numbers (sizes stay far below 2^53), enums as their names, every absent field filled
 * with its proto3 default (messages as null), and a virtual field naming the member set in each oneof.
 */
export const CSI_LOADER_OPTIONS = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
} as const satisfies protoLoader.Options;

export const CSI_SERVICE_NAMES = ['Identity', 'Controller', 'Node', 'GroupController', 'SnapshotMetadata'] as const;
export type CsiServiceName = (typeof CSI_SERVICE_NAMES)[number];

/** A loaded CSI service: a client constructor whose `service` is the server-side definition. */
export type CsiService = grpc.ServiceClientConstructor & { service: grpc.ServiceDefinition };
export type CsiPackage = Record<CsiServiceName, CsiService>;

/**
 * Finds the directory holding csi.proto: the nearest `proto/` above `startDir` (default: this
 * module's directory) that contains csi.proto. Throws with the directories searched if none does.
 */
export function locateProtoDir(startDir: string = dirname(fileURLToPath(import.meta.url))): string {
  const searched: string[] = [];
  let dir = startDir;
  for (;;) {
    const candidate = join(dir, PROTO_DIR_NAME);
    if (existsSync(join(candidate, CSI_PROTO_FILE))) return candidate;
    searched.push(candidate);
    const parent = dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  throw new Error(`${CSI_PROTO_FILE} not found: looked in ${searched.join(', ')}; ship the proto/ directory beside dist/`);
}

let cachedDefinition: protoLoader.PackageDefinition | undefined;
let cachedPackage: CsiPackage | undefined;

/** The raw package definition (message types by full name, e.g. `csi.v1.Volume`), loaded once. */
export function loadCsiDefinition(): protoLoader.PackageDefinition {
  if (cachedDefinition === undefined) {
    // google/protobuf/{descriptor,timestamp,wrappers}.proto are bundled with protobufjs/proto-loader
    // and resolved before the include path, so the proto directory is the only include needed.
    cachedDefinition = protoLoader.loadSync(CSI_PROTO_FILE, { ...CSI_LOADER_OPTIONS, includeDirs: [locateProtoDir()] });
  }
  return cachedDefinition;
}

/** The CSI services, loaded once per process. */
export function loadCsiPackage(): CsiPackage {
  if (cachedPackage === undefined) {
    const root = grpc.loadPackageDefinition(loadCsiDefinition());
    const namespace = lookupNamespace(root, CSI_PACKAGE);
    const loaded: Partial<CsiPackage> = {};
    for (const name of CSI_SERVICE_NAMES) loaded[name] = lookupService(namespace, name);
    cachedPackage = loaded as CsiPackage;
  }
  return cachedPackage;
}

/** The RPC names of a service in .proto order, e.g. `['GetPluginInfo', 'GetPluginCapabilities', 'Probe']`. */
export function methodNames(service: CsiService | grpc.ServiceDefinition): string[] {
  const definition = typeof service === 'function' ? service.service : service;
  return Object.keys(definition);
}

function lookupNamespace(root: grpc.GrpcObject, dottedName: string): grpc.GrpcObject {
  let node: grpc.GrpcObject = root;
  for (const part of dottedName.split('.')) {
    const next = node[part];
    if (next === undefined || typeof next === 'function' || isProtobufTypeDefinition(next)) {
      throw new Error(`package ${dottedName} missing from ${CSI_PROTO_FILE}`);
    }
    node = next;
  }
  return node;
}

function lookupService(namespace: grpc.GrpcObject, name: CsiServiceName): CsiService {
  const candidate = namespace[name];
  if (typeof candidate !== 'function' || !('service' in candidate)) {
    throw new Error(`service ${CSI_PACKAGE}.${name} missing from ${CSI_PROTO_FILE}`);
  }
  return candidate;
}

function isProtobufTypeDefinition(value: grpc.GrpcObject[string]): value is grpc.ProtobufTypeDefinition {
  return typeof value === 'object' && value !== null && 'format' in value && 'type' in value;
}
