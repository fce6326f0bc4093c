// Benchmark-only instrumentation of the in-process driver: every command the driver runs, every hold
// of a target (IQN) lock, every wait for a by-path link, and the driver-side steps that cost time
// (metadata files, sysfs walks, scan writes). It patches prototypes and wraps the runner instance in
// this process only; nothing under src/ knows about it. All times are performance.now() milliseconds,
// one clock for the bench, the gRPC server and the driver (they share the process).
import { AsyncLocalStorage } from 'node:async_hooks';
import { promises as fs } from 'node:fs';
import { Devices } from '../src/node-host/devices.js';
import { KeyedMutex } from '../src/common/keyed-mutex.js';
import { TargetLock } from '../src/node-host/target-lock.js';
import { MetadataStore } from '../src/node-host/metadata.js';
import { Sysfs } from '../src/node-host/sysfs.js';
import { safeArgv, type CommandRunner } from '../src/runner.js';

export interface Interval {
  start: number;
  end: number;
}

export interface CommandEvent extends Interval {
  name: string;
  /** argv after the configured command (secrets rendered as the placeholder) */
  args: string[];
  exitCode: number | null;
  /** run while this process held a target lock */
  underLock: boolean;
}

/** One hold of a target lock: asked for, got the in-process mutex, inside the caller's function, released. */
export interface LockEvent {
  iqn: string;
  requested: number;
  /** the in-process mutex granted (the lock file is taken after this) */
  acquired: number;
  /** the caller's function starts (lock file taken) */
  fnStart: number;
  /** the caller's function returned */
  fnEnd: number;
  /** lock file released, mutex handed on */
  released: number;
  /** LUNs scanned while holding it: which volumes this hold served */
  luns: number[];
}

export interface WaitEvent extends Interval {
  iqn: string;
  lun: number;
  ok: boolean;
}

/** A driver-side step worth timing (metadata write, sysfs walk, …). */
export interface SpanEvent extends Interval {
  label: string;
  /** part of another span (an fsync inside a metadata save): not to be added to the others */
  nested?: boolean;
}

export class Recorder {
  readonly commands: CommandEvent[] = [];
  readonly locks: LockEvent[] = [];
  readonly waits: WaitEvent[] = [];
  readonly spans: SpanEvent[] = [];

  /** Everything that started and ended inside [from, to]. */
  window(from: number, to: number): { commands: CommandEvent[]; locks: LockEvent[]; waits: WaitEvent[]; spans: SpanEvent[] } {
    const inside = (s: number, e: number): boolean => s >= from && e <= to;
    return {
      commands: this.commands.filter((c) => inside(c.start, c.end)),
      locks: this.locks.filter((l) => inside(l.requested, l.released)),
      waits: this.waits.filter((w) => inside(w.start, w.end)),
      spans: this.spans.filter((s) => inside(s.start, s.end)),
    };
  }
}

interface LockStore {
  iqn: string;
  event: Partial<LockEvent> & { iqn: string; requested: number; luns: number[] };
}

const lockContext = new AsyncLocalStorage<LockStore>();
const now = (): number => performance.now();

type AnyMethod = (this: unknown, ...args: unknown[]) => unknown;

function patch(proto: object, method: string, wrap: (orig: AnyMethod) => AnyMethod): void {
  const target = proto as Record<string, AnyMethod>;
  const orig = target[method];
  if (typeof orig !== 'function') throw new Error(`bench instrumentation: no method ${method} to patch`);
  target[method] = wrap(orig);
}

/** Records the duration of every call of an async method under `label`. */
function timeMethod(rec: Recorder, proto: object, method: string, label: string): void {
  patch(proto, method, (orig) => async function (this: unknown, ...args: unknown[]) {
    const start = now();
    try {
      return await orig.apply(this, args);
    } finally {
      rec.spans.push({ label, start, end: now() });
    }
  });
}

let installed = false;

/** Patches the driver's lock, device-wait, sysfs and metadata classes and FileHandle.sync (once per process). */
export async function installInstrumentation(rec: Recorder): Promise<void> {
  if (installed) throw new Error('bench instrumentation installed twice');
  installed = true;

  // fsync: the metadata store's durability cost, on whatever disk the state directory is
  const probe = await fs.open(process.cwd(), 'r');
  const fileHandleProto = Object.getPrototypeOf(probe) as object;
  await probe.close();
  patch(fileHandleProto, 'sync', (orig) => async function (this: unknown, ...args: unknown[]) {
    const start = now();
    try {
      return await orig.apply(this, args);
    } finally {
      rec.spans.push({ label: 'of which fsync', start, end: now(), nested: true });
    }
  });

  patch(TargetLock.prototype, 'withLock', (orig) => function (this: unknown, ...args: unknown[]) {
    const [iqn, fn] = args as [string, () => Promise<unknown>];
    const store: LockStore = { iqn, event: { iqn, requested: now(), luns: [] } };
    const inner = async (): Promise<unknown> => {
      store.event.fnStart = now();
      try {
        return await fn();
      } finally {
        store.event.fnEnd = now();
      }
    };
    const done = (): void => {
      const e = store.event;
      e.released = now();
      // a hold that failed before its function ran has no fnStart: not a hold worth reporting
      if (e.acquired !== undefined && e.fnStart !== undefined && e.fnEnd !== undefined) rec.locks.push(e as LockEvent);
    };
    return lockContext.run(store, async () => {
      try {
        return await orig.call(this, iqn, inner);
      } finally {
        done();
      }
    });
  });

  // TargetLock takes its in-process KeyedMutex synchronously inside withLock, in the context set above
  patch(KeyedMutex.prototype, 'withLock', (orig) => function (this: unknown, ...args: unknown[]) {
    const [key, fn] = args as [string, () => Promise<unknown>];
    const store = lockContext.getStore();
    if (!store || store.iqn !== key || store.event.acquired !== undefined) return orig.call(this, key, fn);
    return orig.call(this, key, async () => {
      store.event.acquired = now();
      return fn();
    });
  });

  patch(Sysfs.prototype, 'scanLun', (orig) => async function (this: unknown, ...args: unknown[]) {
    const store = lockContext.getStore();
    if (store && store.event.fnEnd === undefined) store.event.luns.push(args[1] as number);
    const start = now();
    try {
      return await orig.apply(this, args);
    } finally {
      rec.spans.push({ label: 'sysfs scan write', start, end: now() });
    }
  });

  patch(Devices.prototype, 'waitForLunDevice', (orig) => async function (this: unknown, ...args: unknown[]) {
    const [, lun, { iqn }] = args as [unknown, number, { iqn: string }];
    const start = now();
    let ok = false;
    try {
      const r = (await orig.apply(this, args)) as { ok: boolean };
      ok = r.ok;
      return r;
    } finally {
      rec.waits.push({ iqn, lun, ok, start, end: now() });
    }
  });

  timeMethod(rec, Sysfs.prototype, 'topology', 'sysfs topology walk');
  timeMethod(rec, Sysfs.prototype, 'multipathHolder', 'sysfs multipath holder');
  timeMethod(rec, MetadataStore.prototype, 'save', 'metadata save');
  timeMethod(rec, MetadataStore.prototype, 'load', 'metadata load');
  timeMethod(rec, MetadataStore.prototype, 'list', 'metadata list');
  timeMethod(rec, MetadataStore.prototype, 'remove', 'metadata remove');
}

/** Records every command run through `runner` (the instance the driver was started with). */
export function recordCommands(runner: CommandRunner, rec: Recorder): void {
  const orig = runner.run.bind(runner);
  const wrapped: CommandRunner['run'] = async (name, args, opts) => {
    const start = now();
    const underLock = lockContext.getStore() !== undefined;
    let exitCode: number | null = null;
    try {
      const r = await orig(name, args, opts);
      exitCode = r.exitCode;
      return r;
    } finally {
      rec.commands.push({ name, args: safeArgv(args), exitCode, underLock, start, end: now() });
    }
  };
  (runner as { run: CommandRunner['run'] }).run = wrapped;
}

/** A short label for a command: `iscsiadm -m node --login`, `mkfs.ext4`, … */
export function commandLabel(c: CommandEvent): string {
  if (c.name !== 'iscsiadm') return c.name;
  const a = c.args;
  const mode = a[a.indexOf('-m') + 1] ?? '?';
  const op = a.includes('-o') ? `-o ${a[a.indexOf('-o') + 1]}` : a.find((x) => x.startsWith('--') && x !== '--version') ?? '';
  return `iscsiadm -m ${mode}${op ? ` ${op}` : ''}`;
}

export function isLogin(c: CommandEvent): boolean {
  return c.name === 'iscsiadm' && c.args.includes('--login');
}
