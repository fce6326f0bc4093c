// Wires one driver process: runner, services of the configured mode, and the gRPC server.
import type { Config } from './config.js';
import { socketPathOf } from './config.js';
import { createIdentityService, type ReadinessCheck } from './identity/service.js';
import type { Logger } from './log.js';
import { ProcessRunner, observeCommands, type CommandRunner } from './runner.js';
import { CsiServer, type ServedService } from './server/server.js';
import { loadCsiPackage } from './server/proto.js';
import { readInitiatorName } from './node-host/initiator.js';
import { VERSION } from './version.js';
import { createNodeHost, forRequest } from './flows/host.js';
import { NodeHealer } from './node/healer.js';
import { OperationGuard } from './common/operation-guard.js';
import { createNodeService } from './node/service.js';
import type { ControllerService } from './controller/service.js';
import { Sysfs } from './node-host/sysfs.js';
import type { MetricsEndpoint } from './metrics/endpoint.js';
import { logNodeChecks } from './doctor/startup.js';

export interface DriverHandle {
  socketPath: string;
  runner: CommandRunner;
  /** where the Prometheus endpoint listens (`HOST:PORT`); absent when metricsAddress is empty */
  metricsAddress?: string;
  stop(): Promise<void>;
}

const PROBE_COMMAND_TIMEOUT_MS = 800;

/** Node readiness: iscsiadm runs and the initiator name is readable. */
function nodeChecks(cfg: Config, runner: CommandRunner): ReadinessCheck[] {
  return [
    async () => {
      const r = await runner.run('iscsiadm', ['--version'], { timeoutMs: PROBE_COMMAND_TIMEOUT_MS });
      return r.exitCode === 0 ? null : `iscsiadm --version exited ${r.exitCode}`;
    },
    async () => {
      await readInitiatorName(cfg.host.initiatorNameFile);
      return null;
    },
  ];
}

export async function startDriver(cfg: Config, logger: Logger, commandRunner: CommandRunner = new ProcessRunner(cfg.commands, cfg.commandPrefix, logger)): Promise<DriverHandle> {
  const csi = loadCsiPackage();
  // no metrics address: no registry, no observers, no port (and prom-client is never loaded)
  const metricsModule = cfg.metricsAddress ? await import('./metrics/registry.js') : undefined;
  const metrics = metricsModule ? new metricsModule.DriverMetrics(cfg.driverName, logger.child({ component: 'metrics' })) : undefined;
  const runner = metrics ? observeCommands(commandRunner, metrics) : commandRunner;
  const serveNode = cfg.mode === 'node' || cfg.mode === 'all';
  const serveController = cfg.mode === 'controller' || cfg.mode === 'all';
  const checks: ReadinessCheck[] = [];
  const services: ServedService[] = [];

  // one guard per volume for the CSI calls and the node healer: never two at work on one volume
  const guard = new OperationGuard();
  let healer: NodeHealer | undefined;
  if (serveNode) {
    checks.push(...nodeChecks(cfg, runner));
    const nodeId = cfg.nodeId ?? (await readInitiatorName(cfg.host.initiatorNameFile));
    const host = createNodeHost(cfg, runner, logger, metrics);
    services.push({ name: 'Node', definition: csi.Node.service, impl: createNodeService(host, runner, nodeId) });
    const healerLog = logger.child({ component: 'healer' });
    healer = new NodeHealer(forRequest(host, runner, healerLog), cfg.node.healing, guard, healerLog, metrics);
    const sysfs = new Sysfs(cfg.host.sysRoot);
    metrics?.watchNode({
      sessionStates: async () => (await sysfs.topology()).sessions.map((s) => s.state),
      volumePhases: async () => (await host.metadata.survey()).records.map((r) => r.phase),
    });
  }
  let controller: ControllerService | undefined;
  // a node plugin never loads the controller's modules (backends, tgtadm, YAML inventory)
  const controllerModules = serveController
    ? await Promise.all([import('./controller/service.js'), import('./controller/backend.js')])
    : undefined;
  if (controllerModules) {
    const [{ createControllerService }] = controllerModules;
    controller = createControllerService({ cfg, runner, logger });
    await controller.start();
    const svc = controller;
    checks.push(() => svc.probe());
    services.push({ name: 'Controller', definition: csi.Controller.service, impl: controller });
  }
  services.unshift({
    name: 'Identity',
    definition: csi.Identity.service,
    impl: createIdentityService({ cfg, version: VERSION, checks, controllerServed: serveController, ...(controllerModules ? { expansion: controllerModules[1].EXPANSION_BY_BACKEND[cfg.controller.backend] } : {}) }),
  });

  const socketPath = socketPathOf(cfg.endpoint);
  const server = new CsiServer({ socketPath, socketMode: cfg.socketMode, shutdownGraceMs: cfg.timeouts.shutdownGraceMs, logger, guard, ...(metrics ? { calls: metrics } : {}) }, services);
  let endpoint: MetricsEndpoint | undefined;
  try {
    if (metrics) endpoint = await (await import('./metrics/endpoint.js')).serveMetrics(cfg.metricsAddress, metrics, logger);
    await server.listen();
  } catch (e) {
    await endpoint?.close();
    await controller?.stop();
    throw e;
  }
  if (endpoint) logger.info({ address: endpoint.address, path: '/metrics' }, 'serving metrics');
  healer?.start();
  logger.info({ endpoint: cfg.endpoint, mode: cfg.mode, driver: cfg.driverName, version: VERSION, services: services.map((s) => s.name) }, 'serving');
  // the doctor's node checks, logged once the socket listens: serving never waits for them
  if (serveNode) void logNodeChecks(cfg, logger, cfg.node.kubeletDir);
  return {
    socketPath,
    runner: commandRunner,
    ...(endpoint ? { metricsAddress: endpoint.address } : {}),
    stop: async () => {
      await healer?.stop(cfg.timeouts.shutdownGraceMs);
      await server.stop();
      await controller?.stop();
      await endpoint?.close();
    },
  };
}
