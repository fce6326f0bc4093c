// The Prometheus endpoint: plain HTTP on `metricsAddress`, `GET /metrics` only (anything else 404,
// another method 405). It serves what the registry renders and nothing from a request reaches it.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseListenAddress } from '../config.js';
import type { Logger } from '../log.js';

export const METRICS_PATH = '/metrics';

/** What the endpoint serves (DriverMetrics). */
export interface MetricsSource {
  readonly contentType: string;
  render(): Promise<string>;
}

export interface MetricsEndpoint {
  /** the address it listens on, `HOST:PORT` (the port chosen when 0 was asked for) */
  address: string;
  close(): Promise<void>;
}

/** Listens on `address` (validated by the config); rejects when it cannot (e.g. the port is taken). */
export async function serveMetrics(address: string, source: MetricsSource, log: Logger): Promise<MetricsEndpoint> {
  const { host, port } = parseListenAddress(address, 'metricsAddress');
  const server = createServer((req, res) => void answer(req, res, source, log));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot serve metrics on ${address}: ${e.code ?? e.message}`)));
    // no host: every interface (`:PORT`), as Go's net.Listen
    server.listen({ port, ...(host ? { host } : {}) }, () => resolve());
  });
  server.on('error', (e) => log.warn({ err: e.message }, 'metrics endpoint error'));
  const bound = server.address() as AddressInfo;
  return {
    address: bound.family === 'IPv6' ? `[${bound.address}]:${bound.port}` : `${bound.address}:${bound.port}`,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

async function answer(req: IncomingMessage, res: ServerResponse, source: MetricsSource, log: Logger): Promise<void> {
  const path = (req.url ?? '').split('?')[0];
  if (path !== METRICS_PATH) return reply(res, 404, 'not found; metrics are at /metrics\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return reply(res, 405, 'method not allowed\n');
  }
  let body: string;
  try {
    body = await source.render();
  } catch (e) {
    log.warn({ err: (e as Error).message }, 'cannot render the metrics');
    return reply(res, 500, 'cannot render the metrics\n');
  }
  res.writeHead(200, { 'Content-Type': source.contentType, 'Content-Length': Buffer.byteLength(body) });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function reply(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
