// Where one stage's or unstage's wall time went, step by step, logged with its outcome ("staged",
// "unstaged"): an operator whose node is slow to bring pods back sees whether a stage waited for the
// target lock, the login, the kernel's device, mkfs or the metadata disk, and the real-kernel tier
// prints the same figures for its storms. Times are summed per step; steps of paths attached in
// parallel may overlap, so the sum can exceed the call's duration.

/** The steps a stage or unstage is timed by, in the order they run. */
export type Step =
  | 'check'        // staging path checks, and for unstage: unmounts and the foreign-mount check
  | 'plan'         // portal names resolved
  | 'record'       // volume record saves and removal
  | 'iface'        // iface lookup or clone
  | 'lockWait'     // waiting for the target lock (other volumes of the target, another driver process)
  | 'connect'      // under the target lock: discovery, node record, login, LUN scan
  | 'deviceWait'   // the LUN's block device appearing (the kernel's scan, the /dev node)
  | 'identity'     // every path checked to be the volume's LUN
  | 'multipath'    // the multipath map found or waited for
  | 'probe'        // blkid on the device and, before a format, its first and last MiB
  | 'mkfs'
  | 'mount'
  | 'stableName'   // the by-path name recorded for the device
  | 'removeDevices' // unstage: flush and delete the LUN's SCSI devices and map
  | 'logout';      // unstage, under the target lock: whether the session is still used, the logout

export class StepTimes {
  readonly #ms = new Map<Step, number>();

  /** Runs `fn`, its wall time added to `step` whether it succeeds or throws. */
  async time<T>(step: Step, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await fn();
    } finally {
      this.add(step, performance.now() - started);
    }
  }

  add(step: Step, ms: number): void {
    this.#ms.set(step, (this.#ms.get(step) ?? 0) + ms);
  }

  /** Milliseconds per step so far, to 0.1 ms, in the order the steps first ran (the log line's `steps`). */
  byStep(): Partial<Record<Step, number>> {
    const out: Partial<Record<Step, number>> = {};
    for (const [step, ms] of this.#ms) out[step] = Math.round(ms * 10) / 10;
    return out;
  }
}
