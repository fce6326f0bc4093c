// The metrics registry and endpoint without a driver: what a scrape shows after a few observations,
// the label values csi-lib-utils uses, the node gauges read at scrape time, the command wrapper, and
// the metricsAddress check.
import { describe, expect, it } from 'vitest';
import { request } from 'node:http';
import { status } from '@grpc/grpc-js';
import { buildConfig, ConfigError, parseListenAddress } from '../../src/config.js';
import { DeadlineExceeded, FailedPrecondition } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { DriverMetrics, grpcCodeName, type NodeStateSource } from '../../src/metrics/registry.js';
import { serveMetrics } from '../../src/metrics/endpoint.js';
import { observeCommands, type CommandRunner, type RunResult } from '../../src/runner.js';

const log = createLogger('silent');
const DRIVER = 'iscsi.csi.tsdriver.dev';

/** The sample lines of a scrape (no comments). */
function samples(text: string): string[] {
  return text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
}

const idleNode: NodeStateSource = { sessionStates: async () => [], volumePhases: async () => [] };

describe('the registry', () => {
  it('renders the CSI operations histogram as csi-lib-utils names it', async () => {
    const m = new DriverMetrics(DRIVER, log);
    m.callFinished('/csi.v1.Node/NodeStageVolume', status.OK, 0.3);
    m.callFinished('/csi.v1.Node/NodeStageVolume', status.OK, 2);
    m.callFinished('/csi.v1.Controller/CreateVolume', status.INVALID_ARGUMENT, 0.01);
    const text = await m.render();
    expect(text).toContain('# TYPE csi_plugin_operations_seconds histogram');
    expect(text).toContain('# HELP csi_plugin_operations_seconds Container Storage Interface operation duration with gRPC error code status total');
    const lines = samples(text);
    expect(lines).toContain(`csi_plugin_operations_seconds_count{driver_name="${DRIVER}",method_name="/csi.v1.Node/NodeStageVolume",grpc_status_code="OK"} 2`);
    expect(lines).toContain(`csi_plugin_operations_seconds_bucket{le="0.25",driver_name="${DRIVER}",method_name="/csi.v1.Node/NodeStageVolume",grpc_status_code="OK"} 0`);
    expect(lines).toContain(`csi_plugin_operations_seconds_bucket{le="0.5",driver_name="${DRIVER}",method_name="/csi.v1.Node/NodeStageVolume",grpc_status_code="OK"} 1`);
    expect(lines).toContain(`csi_plugin_operations_seconds_bucket{le="600",driver_name="${DRIVER}",method_name="/csi.v1.Node/NodeStageVolume",grpc_status_code="OK"} 2`);
    expect(lines).toContain(`csi_plugin_operations_seconds_count{driver_name="${DRIVER}",method_name="/csi.v1.Controller/CreateVolume",grpc_status_code="InvalidArgument"} 1`);
  });

  it('names the gRPC codes as grpc-go does', () => {
    expect([status.OK, status.CANCELLED, status.INVALID_ARGUMENT, status.DEADLINE_EXCEEDED, status.NOT_FOUND, status.ALREADY_EXISTS, status.FAILED_PRECONDITION, status.ABORTED, status.RESOURCE_EXHAUSTED, status.OUT_OF_RANGE, status.UNIMPLEMENTED, status.INTERNAL, status.UNAVAILABLE, status.UNAUTHENTICATED].map(grpcCodeName))
      .toEqual(['OK', 'Canceled', 'InvalidArgument', 'DeadlineExceeded', 'NotFound', 'AlreadyExists', 'FailedPrecondition', 'Aborted', 'ResourceExhausted', 'OutOfRange', 'Unimplemented', 'Internal', 'Unavailable', 'Unauthenticated']);
    expect(grpcCodeName(42)).toBe('Code(42)');
  });

  it('counts commands by tool and exit status, their time by tool, and timeouts', async () => {
    const m = new DriverMetrics(DRIVER, log);
    m.commandFinished('iscsiadm', { exitCode: 0 }, 0.02);
    m.commandFinished('iscsiadm', { exitCode: 21 }, 0.02);
    m.commandFinished('mount', { exitCode: 0 }, 0.2);
    m.commandFinished('mkfs.ext4', { exitCode: null, timedOut: true }, 300);
    m.commandFinished('blkid', { exitCode: null, timedOut: false }, 0.001);
    const lines = samples(await m.render());
    expect(lines).toEqual(expect.arrayContaining([
      'iscsi_csi_commands_total{tool="iscsiadm",exit_code="0"} 1',
      'iscsi_csi_commands_total{tool="iscsiadm",exit_code="21"} 1',
      'iscsi_csi_commands_total{tool="mount",exit_code="0"} 1',
      'iscsi_csi_commands_total{tool="mkfs.ext4",exit_code="none"} 1',
      'iscsi_csi_commands_total{tool="blkid",exit_code="none"} 1',
      'iscsi_csi_command_duration_seconds_count{tool="iscsiadm"} 2',
      'iscsi_csi_command_duration_seconds_bucket{le="0.25",tool="mount"} 1',
      'iscsi_csi_command_timeouts_total{tool="mkfs.ext4"} 1',
    ]));
    expect(lines.some((l) => l.startsWith('iscsi_csi_command_timeouts_total{tool="blkid"}'))).toBe(false);
  });

  it('counts the healer\'s events by action and outcome', async () => {
    const m = new DriverMetrics(DRIVER, log);
    m.healEvent('session-login', 'done');
    m.healEvent('session-login', 'done');
    m.healEvent('orphan-session', 'kept');
    const lines = samples(await m.render());
    expect(lines).toContain('iscsi_csi_heal_events_total{action="session-login",outcome="done"} 2');
    expect(lines).toContain('iscsi_csi_heal_events_total{action="orphan-session",outcome="kept"} 1');
  });

  it('has no node metrics until the node is watched, then logins, logouts and waits with their outcomes at 0', async () => {
    const m = new DriverMetrics(DRIVER, log);
    expect(await m.render()).not.toContain('iscsi_csi_logins_total');
    m.watchNode(idleNode);
    m.login('ok');
    m.login('failed');
    m.logout('already');
    m.deviceWait('found', 0.3);
    m.deviceWait('timeout', 30);
    m.lockWait(0.002);
    const lines = samples(await m.render());
    expect(lines).toEqual(expect.arrayContaining([
      'iscsi_csi_logins_total{outcome="ok"} 1',
      'iscsi_csi_logins_total{outcome="already"} 0',
      'iscsi_csi_logins_total{outcome="failed"} 1',
      'iscsi_csi_logouts_total{outcome="ok"} 0',
      'iscsi_csi_logouts_total{outcome="already"} 1',
      'iscsi_csi_device_wait_seconds_count{outcome="found"} 1',
      'iscsi_csi_device_wait_seconds_bucket{le="0.5",outcome="found"} 1',
      'iscsi_csi_device_wait_seconds_count{outcome="timeout"} 1',
      'iscsi_csi_target_lock_wait_seconds_count 1',
      'iscsi_csi_target_lock_wait_seconds_bucket{le="0.005"} 1',
    ]));
  });

  it('reads the sessions and the volume records at each scrape, once for scrapes at the same time', async () => {
    const m = new DriverMetrics(DRIVER, log);
    let states: (string | null)[] = ['LOGGED_IN', 'LOGGED_IN', 'FAILED', null, 'WEIRD'];
    let phases = ['staged', 'staged', 'attaching'];
    let reads = 0;
    m.watchNode({
      sessionStates: async () => { reads += 1; await new Promise((r) => setTimeout(r, 20)); return states; },
      volumePhases: async () => phases,
    });
    const [first] = await Promise.all([m.render(), m.render()]);
    expect(reads).toBe(1);
    expect(samples(first)).toEqual(expect.arrayContaining([
      'iscsi_csi_sessions{state="LOGGED_IN"} 2',
      'iscsi_csi_sessions{state="FAILED"} 1',
      'iscsi_csi_sessions{state="FREE"} 0',
      'iscsi_csi_sessions{state="unknown"} 1',
      'iscsi_csi_sessions{state="other"} 1',
      'iscsi_csi_node_volumes{phase="staged"} 2',
      'iscsi_csi_node_volumes{phase="attaching"} 1',
      'iscsi_csi_node_volumes{phase="detaching"} 0',
    ]));
    states = [];
    phases = [];
    const lines = samples(await m.render());
    expect(reads).toBe(2);
    expect(lines).toContain('iscsi_csi_sessions{state="LOGGED_IN"} 0');
    expect(lines).toContain('iscsi_csi_node_volumes{phase="staged"} 0');
    expect(lines.some((l) => l.includes('state="unknown"') || l.includes('state="other"'))).toBe(false);
  });

  it('shows no samples of a gauge whose source cannot be read, and still renders the rest', async () => {
    const m = new DriverMetrics(DRIVER, log);
    m.watchNode({ sessionStates: () => Promise.reject(new Error('EIO')), volumePhases: async () => ['staged'] });
    const lines = samples(await m.render());
    expect(lines.some((l) => l.startsWith('iscsi_csi_sessions'))).toBe(false);
    expect(lines).toContain('iscsi_csi_node_volumes{phase="staged"} 1');
  });

  it('includes the process metrics', async () => {
    const text = await new DriverMetrics(DRIVER, log).render();
    expect(text).toContain('process_cpu_seconds_total');
    expect(text).toContain('nodejs_eventloop_lag_seconds');
  });
});

describe('the command wrapper', () => {
  const result = (exitCode: number): RunResult => ({ argv: [], exitCode, stdout: '', stderr: '', durationMs: 0 });

  it('reports the exit status, a timeout (DeadlineExceeded) and a command that did not run, and passes the result or error on', async () => {
    const ended: unknown[] = [];
    const inner: CommandRunner = {
      stats: { commands: 0, commandMs: 0, byName: {} },
      run: async (name, args) => {
        if (args[0] === 'timeout') throw new DeadlineExceeded('killed');
        if (args[0] === 'missing') throw new FailedPrecondition('cannot run');
        return result(name === 'iscsiadm' ? 21 : 0);
      },
    };
    const runner = observeCommands(inner, { commandFinished: (name, end, seconds) => { ended.push([name, end]); expect(seconds).toBeGreaterThanOrEqual(0); } });
    expect(runner.stats).toBe(inner.stats);
    expect((await runner.run('iscsiadm', ['-m', 'session'])).exitCode).toBe(21);
    expect((await runner.run('mount', [])).exitCode).toBe(0);
    await expect(runner.run('mkfs.ext4', ['timeout'])).rejects.toBeInstanceOf(DeadlineExceeded);
    await expect(runner.run('blkid', ['missing'])).rejects.toBeInstanceOf(FailedPrecondition);
    expect(ended).toEqual([
      ['iscsiadm', { exitCode: 21 }],
      ['mount', { exitCode: 0 }],
      ['mkfs.ext4', { exitCode: null, timedOut: true }],
      ['blkid', { exitCode: null, timedOut: false }],
    ]);
  });

  it('calls the inner runner\'s run as it is at each call (a recorder put on it later sees every command)', async () => {
    const inner: CommandRunner = { stats: { commands: 0, commandMs: 0, byName: {} }, run: async () => result(0) };
    const runner = observeCommands(inner, { commandFinished: () => undefined });
    let recorded = 0;
    const orig = inner.run;
    (inner as { run: CommandRunner['run'] }).run = (...a) => { recorded += 1; return orig(...a); };
    await runner.run('mount', []);
    expect(recorded).toBe(1);
  });
});

describe('metricsAddress', () => {
  it('is off by default', () => {
    expect(buildConfig(undefined).metricsAddress).toBe('');
  });

  it('takes HOST:PORT, [IPv6]:PORT and :PORT', () => {
    expect(parseListenAddress('127.0.0.1:9808', 'k')).toEqual({ host: '127.0.0.1', port: 9808 });
    expect(parseListenAddress('[::1]:9808', 'k')).toEqual({ host: '::1', port: 9808 });
    expect(parseListenAddress(':9808', 'k')).toEqual({ host: '', port: 9808 });
    expect(parseListenAddress('localhost:0', 'k')).toEqual({ host: 'localhost', port: 0 });
    expect(buildConfig({ metricsAddress: '0.0.0.0:9808' }).metricsAddress).toBe('0.0.0.0:9808');
    expect(buildConfig(undefined, { metricsAddress: 'node-1.example.com:8080' }).metricsAddress).toBe('node-1.example.com:8080');
  });

  it('is a config error when it is no address to listen on', () => {
    for (const bad of ['9808', '127.0.0.1', '127.0.0.1:', '127.0.0.1:65536', '127.0.0.1:99999', '127.0.0.1:-1', '::1:9808', '[127.0.0.1]:9808', '[::1]9808', '300.1.2.3:9808', 'bad host:9808', 'http://127.0.0.1:9808', '127.0.0.1:9808/metrics', 'a_b:80']) {
      expect(() => buildConfig({ metricsAddress: bad }), bad).toThrow(ConfigError);
      expect(() => buildConfig(undefined, { metricsAddress: bad }), bad).toThrow(/metricsAddress/);
    }
    expect(() => buildConfig({ metricsAddress: 9808 })).toThrow(/metricsAddress must be a string/);
  });
});

describe('the endpoint', () => {
  function get(address: string, path: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
    const [, host, port] = /^\[?(.*?)\]?:(\d+)$/.exec(address)!;
    return new Promise((resolve, reject) => {
      const req = request({ host, port: Number(port), path, method }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => { body += d; });
        res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body }));
      });
      req.on('error', reject);
      req.end();
    });
  }

  it('serves /metrics on the loopback address it was given, and nothing else', async () => {
    const m = new DriverMetrics(DRIVER, log);
    m.callFinished('/csi.v1.Identity/Probe', status.OK, 0.001);
    const ep = await serveMetrics('127.0.0.1:0', m, log);
    try {
      expect(ep.address).toMatch(/^127\.0\.0\.1:\d+$/);
      const r = await get(ep.address, '/metrics');
      expect(r.status).toBe(200);
      expect(r.type).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(r.body).toContain(`csi_plugin_operations_seconds_count{driver_name="${DRIVER}",method_name="/csi.v1.Identity/Probe",grpc_status_code="OK"} 1`);
      expect((await get(ep.address, '/metrics?x=1')).status).toBe(200);
      expect((await get(ep.address, '/')).status).toBe(404);
      expect((await get(ep.address, '/metrics/../x')).status).toBe(404);
      expect((await get(ep.address, '/metrics', 'POST')).status).toBe(405);
    } finally {
      await ep.close();
    }
  });

  it('refuses to start on a port that is taken', async () => {
    const m = new DriverMetrics(DRIVER, log);
    const first = await serveMetrics('127.0.0.1:0', m, log);
    try {
      await expect(serveMetrics(first.address, m, log)).rejects.toThrow(/cannot serve metrics on 127\.0\.0\.1:\d+: EADDRINUSE/);
    } finally {
      await first.close();
    }
  });
});
