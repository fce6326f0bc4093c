// The CSI wire format (proto/csi.proto, spec v1.12.0), read at start from proto/csi.json: csi.proto
// compiled by scripts/csi-proto-json.mjs (a unit test fails while the two disagree), loaded with
// protobufjs's light build. Parsing the .proto and building its descriptor protos at every start, as
// @grpc/proto-loader does, cost ~120 ms of each driver start. The same code runs from the TypeScript
// sources (vitest) and from dist/src/server/proto.js, so the proto directory is found by walking up
// from this module rather than by a fixed relative path.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs/light.js';

export const CSI_SPEC_VERSION = '1.12.0';
export const CSI_PACKAGE = 'csi.v1';
const PROTO_DIR_NAME = 'proto';
const CSI_PROTO_FILE = 'csi.proto';
/** csi.proto compiled (scripts/csi-proto-json.mjs) */
const CSI_DESCRIPTOR_FILE = 'csi.json';

/**
 * Decoding conventions every handler relies on (see src/csi/types.ts): field names as in the .proto
 * (the descriptor keeps them), enums as their names, every absent field filled with its proto3 default
 * (messages as null), and a virtual field naming the member set in each oneof. int64 is decoded
 * exactly: `longs` is left unset, so protobufjs yields Long objects, which exactInt64s() turns into a
 * number when it is a safe integer and a bigint otherwise (`longs: Number` would round 2^60 + 1 and
 * print 2^60 as 1152921504606847000).
 */
export const CSI_DECODE_OPTIONS = {
  enums: String,
  defaults: true,
  oneofs: true,
} as const satisfies protobuf.IConversionOptions;

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

/**
 * A method's request or response type: decoded with exact int64s, encoded from a plain object. The
 * type is resolved at the method's first call: a node plugin never calls most of the ~50 methods, and
 * resolving them all (with their fields' features) took ~15 ms of every start.
 */
function coder(method: protobuf.Method, side: 'request' | 'response'): { serialize: (value: object) => Buffer; deserialize: (buf: Buffer) => object } {
  let resolved: protobuf.Type | undefined;
  const type = (): protobuf.Type => {
    if (!resolved) {
      method.resolve();
      resolved = (side === 'request' ? method.resolvedRequestType : method.resolvedResponseType) ?? undefined;
    }
    if (!resolved) throw new Error(`${method.fullName.slice(1)}: its ${side} type is missing from ${CSI_DESCRIPTOR_FILE}`);
    return resolved;
  };
  return {
    serialize: (value: object) => {
      const t = type();
      if (Array.isArray(value)) throw new TypeError(`a ${t.fullName.slice(1)} cannot be an array`);
      return Buffer.from(t.encode(t.fromObject(value as Record<string, unknown>)).finish());
    },
    deserialize: (buf: Buffer) => {
      const t = type();
      return exactInt64s(t.toObject(t.decode(buf), CSI_DECODE_OPTIONS)) as object;
    },
  };
}

/** The gRPC definition of one service: its methods in .proto order, by name. */
function serviceDefinition(service: protobuf.Service): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const method of service.methodsArray) {
    const request = coder(method, 'request');
    const response = coder(method, 'response');
    definition[method.name] = {
      path: `/${service.fullName.slice(1)}/${method.name}`,
      requestStream: method.requestStream === true,
      responseStream: method.responseStream === true,
      requestSerialize: request.serialize,
      requestDeserialize: request.deserialize,
      responseSerialize: response.serialize,
      responseDeserialize: response.deserialize,
      originalName: method.name.charAt(0).toLowerCase() + method.name.slice(1),
    };
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

let cachedRoot: protobuf.Root | undefined;
let cachedPackage: CsiPackage | undefined;

/** The CSI message types and services (e.g. `csi.v1.Volume`), loaded once. */
function loadCsiRoot(): protobuf.Root {
  cachedRoot ??= protobuf.Root.fromJSON(JSON.parse(readFileSync(join(locateProtoDir(), CSI_DESCRIPTOR_FILE), 'utf8')) as protobuf.INamespace);
  return cachedRoot;
}

/** The CSI services, loaded once per process. */
export function loadCsiPackage(): CsiPackage {
  if (cachedPackage === undefined) {
    const loaded: Partial<CsiPackage> = {};
    for (const name of CSI_SERVICE_NAMES) loaded[name] = lookupService(loadCsiRoot(), name);
    cachedPackage = loaded as CsiPackage;
  }
  return cachedPackage;
}

/** The RPC names of a service in .proto order, e.g. `['GetPluginInfo', 'GetPluginCapabilities', 'Probe']`. */
export function methodNames(service: CsiService | grpc.ServiceDefinition): string[] {
  const definition = typeof service === 'function' ? service.service : service;
  return Object.keys(definition);
}

function lookupService(root: protobuf.Root, name: CsiServiceName): CsiService {
  const service = root.lookup(`${CSI_PACKAGE}.${name}`);
  if (!(service instanceof protobuf.Service)) throw new Error(`service ${CSI_PACKAGE}.${name} missing from ${CSI_DESCRIPTOR_FILE}`);
  return grpc.makeClientConstructor(serviceDefinition(service), name) as CsiService;
}
