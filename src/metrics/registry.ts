// Every metric the driver exports, in one registry per driver: names, help, labels and buckets are
// defined here and nowhere else. The CSI call histogram follows kubernetes-csi/csi-lib-utils (the
// `csi_plugin` subsystem, its buckets and label values) so that dashboards made for other CSI drivers
// work; the driver's own metrics are prefixed `iscsi_csi_`. The rest of the driver reports through
// narrow observer interfaces (the server, the runner, the node flows, the healer), which this class
// satisfies; nothing else imports prom-client. No label carries a volume id, a path or a secret: every
// label value comes from a small fixed set (methods, codes, tools, outcomes, phases, states).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../log.js';
import { SingleFlight } from '../common/single-flight.js';

export const CSI_OPERATIONS = {
  name: 'csi_plugin_operations_seconds',
  help: 'Container Storage Interface operation duration with gRPC error code status total',
  labels: ['driver_name', 'method_name', 'grpc_status_code'],
  buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 25, 50, 120, 300, 600],
} as const;

export const COMMANDS = {
  name: 'iscsi_csi_commands_total',
  help: 'External commands run, by tool (the configured command name) and exit status ("none": killed at its timeout, by a signal, or not started)',
  labels: ['tool', 'exit_code'],
} as const;

export const COMMAND_DURATION = {
  name: 'iscsi_csi_command_duration_seconds',
  help: 'Time an external command took, by tool',
  labels: ['tool'],
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
} as const;

export const COMMAND_TIMEOUTS = {
  name: 'iscsi_csi_command_timeouts_total',
  help: 'External commands killed at their timeout (commands.<tool>.timeoutMs), by tool',
  labels: ['tool'],
} as const;

export const LOGINS = {
  name: 'iscsi_csi_logins_total',
  help: 'iSCSI logins (iscsiadm --login), by outcome: ok, already (the session existed), failed',
  labels: ['outcome'],
} as const;

export const LOGOUTS = {
  name: 'iscsi_csi_logouts_total',
  help: 'iSCSI session logouts, by outcome: ok, already (the session was gone), failed',
  labels: ['outcome'],
} as const;

export const LOCK_WAIT = {
  name: 'iscsi_csi_target_lock_wait_seconds',
  help: 'Time from asking for a target lock (or a portal\'s discovery lock) to holding it',
  buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120],
} as const;

export const DEVICE_WAIT = {
  name: 'iscsi_csi_device_wait_seconds',
  help: 'Wait for a LUN\'s block device after a login or scan, by outcome: found, timeout, aborted',
  labels: ['outcome'],
  buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
} as const;

export const HEAL_EVENTS = {
  name: 'iscsi_csi_heal_events_total',
  help: 'Events of the node healer, by action and outcome',
  labels: ['action', 'outcome'],
} as const;

export const SESSIONS = {
  name: 'iscsi_csi_sessions',
  help: 'iSCSI sessions the kernel has on this node (sysfs, read at scrape time), by state',
  labels: ['state'],
} as const;

export const NODE_VOLUMES = {
  name: 'iscsi_csi_node_volumes',
  help: 'Volumes recorded on this node (read at scrape time), by the phase of their record: attaching, staged, detaching',
  labels: ['phase'],
} as const;

/** grpc-go's names of the status codes (codes.Code.String()), which csi-lib-utils puts in grpc_status_code. */
const GRPC_CODE_NAMES = [
  'OK', 'Canceled', 'Unknown', 'InvalidArgument', 'DeadlineExceeded', 'NotFound', 'AlreadyExists',
  'PermissionDenied', 'ResourceExhausted', 'FailedPrecondition', 'Aborted', 'OutOfRange', 'Unimplemented',
  'Internal', 'Unavailable', 'DataLoss', 'Unauthenticated',
] as const;

export function grpcCodeName(code: number): string {
  return GRPC_CODE_NAMES[code] ?? `Code(${code})`;
}

/** csi-lib-utils' driver_name when none is known. */
const UNKNOWN_DRIVER_NAME = 'unknown-driver';

const SESSION_STATES = ['LOGGED_IN', 'FAILED', 'FREE'] as const;
const RECORD_PHASES = ['attaching', 'staged', 'detaching'] as const;
const SESSION_OUTCOMES = ['ok', 'already', 'failed'] as const;

/** What the node gauges are read from at scrape time: one sysfs walk and one read of the volume records. */
export interface NodeStateSource {
  /** the state of every iSCSI session in sysfs (`LOGGED_IN`, `FAILED`, `FREE`; null when unreadable) */
  sessionStates(): Promise<(string | null)[]>;
  /** the phase of every readable volume record */
  volumePhases(): Promise<string[]>;
}

/** How a command ended (the runner's CommandEnd). */
type CommandEnd = { exitCode: number } | { exitCode: null; timedOut: boolean };

export class DriverMetrics {
  readonly registry = new Registry();
  readonly #driverName: string;
  readonly #operations = new Histogram({ ...named(CSI_OPERATIONS), labelNames: CSI_OPERATIONS.labels, buckets: [...CSI_OPERATIONS.buckets], registers: [this.registry] });
  readonly #commands = new Counter({ ...named(COMMANDS), labelNames: COMMANDS.labels, registers: [this.registry] });
  readonly #commandDuration = new Histogram({ ...named(COMMAND_DURATION), labelNames: COMMAND_DURATION.labels, buckets: [...COMMAND_DURATION.buckets], registers: [this.registry] });
  readonly #commandTimeouts = new Counter({ ...named(COMMAND_TIMEOUTS), labelNames: COMMAND_TIMEOUTS.labels, registers: [this.registry] });
  readonly #heal = new Counter({ ...named(HEAL_EVENTS), labelNames: HEAL_EVENTS.labels, registers: [this.registry] });
  // the node's metrics are registered by watchNode: a controller has no logins, locks or devices
  readonly #logins = new Counter({ ...named(LOGINS), labelNames: LOGINS.labels, registers: [] });
  readonly #logouts = new Counter({ ...named(LOGOUTS), labelNames: LOGOUTS.labels, registers: [] });
  readonly #lockWait = new Histogram({ ...named(LOCK_WAIT), buckets: [...LOCK_WAIT.buckets], registers: [] });
  readonly #deviceWait = new Histogram({ ...named(DEVICE_WAIT), labelNames: DEVICE_WAIT.labels, buckets: [...DEVICE_WAIT.buckets], registers: [] });

  constructor(driverName: string, private readonly log: Logger) {
    this.#driverName = driverName || UNKNOWN_DRIVER_NAME;
    collectDefaultMetrics({ register: this.registry });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The text exposition format, the node gauges read now. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  // --- the server (CallObserver)

  callFinished(method: string, code: number, seconds: number): void {
    this.#operations.observe({ driver_name: this.#driverName, method_name: method, grpc_status_code: grpcCodeName(code) }, seconds);
  }

  // --- the runner (CommandObserver)

  commandFinished(tool: string, end: CommandEnd, seconds: number): void {
    this.#commands.inc({ tool, exit_code: end.exitCode === null ? 'none' : String(end.exitCode) });
    this.#commandDuration.observe({ tool }, seconds);
    if (end.exitCode === null && end.timedOut) this.#commandTimeouts.inc({ tool });
  }

  // --- the node flows (NodeMetrics)

  login(outcome: string): void {
    this.#logins.inc({ outcome });
  }

  logout(outcome: string): void {
    this.#logouts.inc({ outcome });
  }

  deviceWait(outcome: string, seconds: number): void {
    this.#deviceWait.observe({ outcome }, seconds);
  }

  lockWait(seconds: number): void {
    this.#lockWait.observe(seconds);
  }

  // --- the node healer (HealObserver)

  healEvent(action: string, outcome: string): void {
    this.#heal.inc({ action, outcome });
  }

  /**
   * Registers the node's metrics: the counters and waits above (their outcomes at 0, so a rate is
   * defined before the first login), and the gauges of sessions and volumes, read from `source` at
   * each scrape. Scrapes at the same time share one read; a read that fails leaves its gauge without
   * samples for that scrape (logged), never a stale or made-up value.
   */
  watchNode(source: NodeStateSource): void {
    for (const m of [this.#logins, this.#logouts, this.#lockWait, this.#deviceWait]) this.registry.registerMetric(m);
    for (const outcome of SESSION_OUTCOMES) {
      this.#logins.inc({ outcome }, 0);
      this.#logouts.inc({ outcome }, 0);
    }
    const reads = new SingleFlight<Map<string, number>>();
    const log = this.log;
    const gauge = (def: typeof SESSIONS | typeof NODE_VOLUMES, known: readonly string[], read: () => Promise<Map<string, number>>) =>
      new Gauge({
        ...named(def),
        labelNames: def.labels,
        registers: [this.registry],
        async collect() {
          this.reset();
          try {
            const counts = await reads.run(def.name, read);
            for (const value of known) this.set({ [def.labels[0]]: value }, 0);
            for (const [value, n] of counts) this.set({ [def.labels[0]]: value }, n);
          } catch (e) {
            log.warn({ metric: def.name, err: (e as Error).message }, 'cannot read the node state for the metrics');
          }
        },
      });
    gauge(SESSIONS, SESSION_STATES, async () => tally(await source.sessionStates(), SESSION_STATES, 'unknown'));
    gauge(NODE_VOLUMES, RECORD_PHASES, async () => tally(await source.volumePhases(), RECORD_PHASES, 'unknown'));
  }
}

function named(def: { name: string; help: string }): { name: string; help: string } {
  return { name: def.name, help: def.help };
}

/** Counts of each value; a value outside `known` (none the kernel or the records define) counts as `other`. */
function tally(values: (string | null)[], known: readonly string[], unreadable: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const v of values) {
    const key = v === null ? unreadable : known.includes(v) ? v : 'other';
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}
