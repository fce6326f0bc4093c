// I/O on a volume's own path (statfs, reading its directory) can block for as long as the device does:
// a dead target with `replacement_timeout`, or forever under multipath `queue_if_no_path`. kubelet asks
// for every volume's stats on a timer, so such a probe runs as a command (its own process, killed at
// its timeout), the caller waits for it only so long, and a path whose last probe is still stuck gets
// no second one: a dead volume costs one stuck process, never the driver's own threads.

export type ProbeOutcome<T> =
  | { status: 'done'; value: T }
  /** still running after the caller's deadline (it goes on, and is what the next caller finds) */
  | { status: 'late'; waitedMs: number }
  /** an earlier probe of the same thing has not finished: none was started */
  | { status: 'busy'; sinceMs: number };

export class ProbeGuard {
  private readonly inFlight = new Map<string, { started: number; settled: Promise<unknown> }>();

  /**
   * Runs `probe` and waits for it at most `deadlineMs`. When one for `key` is already running (another
   * caller's, or one stuck since an earlier call), it first waits for that one within the same deadline
   * and starts its own only if it finished: never two at once for one key.
   */
  async run<T>(key: string, probe: () => Promise<T>, deadlineMs: number): Promise<ProbeOutcome<T>> {
    const started = performance.now();
    const running = this.inFlight.get(key);
    if (running) {
      const finished = await withDeadline(running.settled.then(() => true), deadlineMs, false);
      if (!finished || this.inFlight.has(key)) return { status: 'busy', sinceMs: Math.round(performance.now() - running.started) };
    }
    const result = probe();
    const settled = result.then(() => undefined, () => undefined).finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, { started: performance.now(), settled });
    const left = Math.max(0, deadlineMs - (performance.now() - started));
    return withDeadline(result.then((value): ProbeOutcome<T> => ({ status: 'done', value })), left, { status: 'late', waitedMs: deadlineMs });
  }
}

/** `promise`'s value, or `fallback` once `ms` have passed (the promise itself goes on). */
async function withDeadline<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}
