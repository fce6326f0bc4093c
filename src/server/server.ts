// gRPC server on a Unix socket: refuses to steal a live socket, removes a stale one, creates the
// socket with a restricted mode, serves only the services of the configured mode, builds every
// handler from the proto's method list (UNIMPLEMENTED for the ones a service lacks), guards
// concurrent operations per volume, logs one line per call, and shuts down gracefully.
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { chmod, lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { CsiError, toCsiError, Unavailable, Unimplemented } from '../errors.js';
import { redact, type Logger } from '../log.js';
import { READ_ONLY_METHODS, volumeKeyOf, type ServiceImpl } from './service.js';
import { OperationGuard } from '../common/operation-guard.js';
import { checkRequestMaps } from '../common/request-limits.js';

const LIVE_SOCKET_PROBE_MS = 1_000;

export interface ServedService {
  /** proto service name, e.g. "Identity" */
  name: string;
  definition: grpc.ServiceDefinition;
  impl: ServiceImpl;
}

export interface ServerOptions {
  socketPath: string;
  socketMode: number;
  shutdownGraceMs: number;
  logger: Logger;
  /** the per-volume guard, shared with whatever else works on volumes in this process (the node healer) */
  guard?: OperationGuard;
  /** told of every call as it is answered (the metrics) */
  calls?: CallObserver;
}

/** Told of every answered call; must not throw. */
export interface CallObserver {
  /** `method`: the full gRPC name, `/csi.v1.Node/NodeStageVolume` */
  callFinished(method: string, code: grpc.status, seconds: number): void;
}

export class CsiServer {
  readonly #server = new grpc.Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  readonly #guard: OperationGuard;
  #inFlight = 0;
  #stopping = false;
  #idle: (() => void) | undefined;

  constructor(private readonly opts: ServerOptions, services: ServedService[]) {
    this.#guard = opts.guard ?? new OperationGuard();
    for (const svc of services) this.#server.addService(svc.definition, this.#handlers(svc));
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  #handlers(svc: ServedService): grpc.UntypedServiceImplementation {
    const out: grpc.UntypedServiceImplementation = {};
    for (const method of Object.keys(svc.definition)) {
      const handler = svc.impl[method];
      const fullName = svc.definition[method]!.path; // `/csi.v1.Node/NodeStageVolume`
      out[method] = (call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        void this.#dispatch(method, fullName, handler, call.request, callback);
      };
    }
    return out;
  }

  async #dispatch(
    method: string,
    fullName: string,
    handler: ServiceImpl[string],
    req: Record<string, unknown>,
    callback: grpc.sendUnaryData<unknown>,
  ): Promise<void> {
    const started = performance.now();
    const requestId = randomUUID().slice(0, 8);
    const volumeKey = volumeKeyOf(method, req);
    const logger = this.opts.logger.child({ requestId, method, ...(volumeKey ? { volumeId: volumeKey } : {}) });
    let release: (() => void) | undefined;
    let code = grpc.status.OK;
    this.#inFlight += 1;
    try {
      // redact() also cuts long strings and lists: the request is logged bounded even before its check
      logger.debug({ req: redact(req) }, 'request');
      if (this.#stopping) throw new Unavailable('the driver is shutting down');
      if (!handler) throw new Unimplemented(`${method} is not implemented by this driver`);
      checkRequestMaps(req);
      if (volumeKey && !READ_ONLY_METHODS.has(method)) release = this.#guard.tryAcquire(volumeKey, method, volumeKey.replace(/^name:/, ''));
      const res = await handler(req, { logger, requestId, method });
      callback(null, res ?? {});
    } catch (err) {
      const e: CsiError = toCsiError(err);
      code = e.code;
      if (!(err instanceof CsiError)) logger.error({ err: (err as Error)?.message }, 'unexpected error');
      callback({ code: e.code, details: e.message });
    } finally {
      release?.();
      this.#inFlight -= 1;
      const elapsedMs = performance.now() - started;
      this.opts.calls?.callFinished(fullName, code, elapsedMs / 1000);
      const durationMs = Math.round(elapsedMs * 10) / 10;
      const line = { code: grpc.status[code], durationMs };
      if (code === grpc.status.OK || code === grpc.status.NOT_FOUND || code === grpc.status.ALREADY_EXISTS) logger.info(line, 'call');
      else logger.warn(line, 'call');
      if (this.#inFlight === 0) this.#idle?.();
    }
  }

  async listen(): Promise<void> {
    const { socketPath, socketMode } = this.opts;
    await removeStaleSocket(socketPath);
    // The socket file is created by bind with the process umask; narrow it so it is never briefly wider.
    const oldMask = process.umask(0o777 & ~socketMode);
    try {
      await new Promise<void>((resolve, reject) => {
        this.#server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
      });
    } finally {
      process.umask(oldMask);
    }
    await chmod(socketPath, socketMode);
  }

  /** Stops accepting calls, waits (bounded) for in-flight ones, closes, removes the socket. */
  async stop(): Promise<void> {
    if (this.#stopping) return;
    this.#stopping = true;
    if (this.#inFlight > 0) {
      await Promise.race([
        new Promise<void>((r) => { this.#idle = r; }),
        new Promise<void>((r) => setTimeout(r, this.opts.shutdownGraceMs).unref()),
      ]);
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { this.#server.forceShutdown(); resolve(); }, 1_000).unref();
      this.#server.tryShutdown(() => { clearTimeout(timer); resolve(); });
    });
    await unlink(this.opts.socketPath).catch(() => undefined);
  }
}

export class SocketInUse extends Error {}

/**
 * A socket file left by a crashed server is removed; one a live server still answers on is not
 * (two drivers on one socket would split kubelet's calls). Anything that is not a socket is refused.
 */
async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new SocketInUse(`${path} exists and is not a socket; refusing to replace it`);
  if (await socketAnswers(path)) throw new SocketInUse(`another server is already listening on ${path}; refusing to start`);
  await unlink(path);
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(path);
    const done = (live: boolean) => { sock.destroy(); resolve(live); };
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
    sock.setTimeout(LIVE_SOCKET_PROBE_MS, () => done(false));
  });
}
