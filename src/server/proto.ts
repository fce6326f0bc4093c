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
 * enums as their names, every absent field filled with its proto3 default (messages as null), and a
 * virtual field naming the member set in each oneof. int64 is decoded exactly: `longs` is left unset,
 * so protobufjs yields Long objects, which exactInt64s() turns into a number when it is a safe integer
 * and a bigint otherwise (`longs: Number` would round 2^60 + 1 and print 2^60 as 1152921504606847000).
 */
export const CSI_LOADER_OPTIONS = {
  keepCase: true,
  enums: String,
  defaults: true,
  oneofs: true,
} as const satisfies protoLoader.Options;

/** What protobufjs decodes an int64 into when `longs` is unset (long.js's Long). */
interface LongLike { __isLong__: true; toString(radix?: number): string }

function isLong(value: object): value is LongLike {
  return (value as { __isLong__?: unknown }).__isLong__ === true;
}

/** A decoded message with every Long replaced: a number when safe, else the exact bigint. */
export function exactInt64s(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (isLong(value)) {
    const exact = BigInt(value.toString());
    return exact >= BigInt(Number.MIN_SAFE_INTEGER) && exact <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(exact) : exact;
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = exactInt64s(value[i]);
    return value;
  }
  if (value instanceof Uint8Array) return value;
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) record[key] = exactInt64s(record[key]);
  return value;
}

/** Every method's deserializers (requests for the server, responses for a client) return exact int64s. */
function withExactInt64s(definition: protoLoader.PackageDefinition): protoLoader.PackageDefinition {
  for (const entry of Object.values(definition)) {
    if ('format' in entry) continue; // a message or enum type, not a service
    for (const method of Object.values(entry)) {
      const { requestDeserialize, responseDeserialize } = method;
      method.requestDeserialize = (buf: Buffer) => exactInt64s(requestDeserialize(buf)) as object;
      method.responseDeserialize = (buf: Buffer) => exactInt64s(responseDeserialize(buf)) as object;
    }
  }
  return definition;
}

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
    cachedDefinition = withExactInt64s(protoLoader.loadSync(CSI_PROTO_FILE, { ...CSI_LOADER_OPTIONS, includeDirs: [locateProtoDir()] }));
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
