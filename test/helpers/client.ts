// A typed-enough gRPC client for tests: calls a CSI method on a Unix socket and resolves the response
// or rejects with the gRPC error (code + details).
import * as grpc from '@grpc/grpc-js';
import { loadCsiPackage, type CsiServiceName } from '../../src/server/proto.js';

export interface CallError extends Error { code: grpc.status; details: string }

export class CsiClient {
  readonly #clients = new Map<string, grpc.Client>();
  constructor(private readonly endpoint: string) {}

  #client(service: CsiServiceName): grpc.Client {
    let c = this.#clients.get(service);
    if (!c) {
      const Ctor = loadCsiPackage()[service];
      c = new Ctor(this.endpoint, grpc.credentials.createInsecure());
      this.#clients.set(service, c);
    }
    return c;
  }

  call<Res = Record<string, unknown>>(service: CsiServiceName, method: string, req: object, timeoutMs = 120_000): Promise<Res> {
    const client = this.#client(service) as unknown as Record<string, (r: object, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, res: Res) => void) => void>;
    const fn = client[method];
    if (!fn) throw new Error(`no method ${service}.${method}`);
    return new Promise((resolve, reject) => {
      fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  }

  close(): void {
    for (const c of this.#clients.values()) c.close();
    this.#clients.clear();
  }
}

/** Resolves the gRPC status of a call (over gRPC, or a handler's CsiError) that is expected to fail, or OK. */
export async function codeOf(p: Promise<unknown>): Promise<grpc.status> {
  try {
    await p;
    return grpc.status.OK;
  } catch (e) {
    const code = (e as { code?: grpc.status }).code;
    if (code === undefined) throw e;
    return code;
  }
}
