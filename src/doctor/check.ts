// The doctor's result type: one Check per thing an operator would look at before installing, with what
// was found and, for anything not ok, what to do about it.

export type CheckStatus = 'ok' | 'warn' | 'fail';

export interface Check {
  /** stable, short: the table's first column and the JSON key machines match on */
  name: string;
  status: CheckStatus;
  /** what was found, in one or two sentences */
  detail: string;
  /** what to do; present exactly when status is not ok */
  fix?: string;
}

/** The checks' names, in the order the table shows them. */
export const CHECK = {
  iscsiadm: 'iscsiadm',
  iscsid: 'iscsid',
  initiatorName: 'initiator name',
  iscsiTcp: 'iscsi_tcp module',
  multipathd: 'multipathd',
  kubeletDir: 'kubelet dir',
  stateDir: 'state dir',
  tgtd: 'tgtd',
  tgtPool: 'tgt pool dir',
  inventory: 'static inventory',
} as const;

export function ok(name: string, detail: string): Check {
  return { name, status: 'ok', detail };
}

export function warn(name: string, detail: string, fix: string): Check {
  return { name, status: 'warn', detail, fix };
}

export function fail(name: string, detail: string, fix: string): Check {
  return { name, status: 'fail', detail, fix };
}

/** A check that threw (a bug or an unexpected host state) is reported as failed, never as a stack trace. */
export async function guarded(name: string, run: () => Promise<Check>): Promise<Check> {
  try {
    return await run();
  } catch (e) {
    return fail(name, `the check itself failed: ${(e as Error).message.split('\n')[0]}`, 'run the doctor again with the same --config; if it keeps failing, report this line');
  }
}

export interface Summary {
  ok: number;
  warn: number;
  fail: number;
}

export function summarize(checks: readonly Check[]): Summary {
  const s: Summary = { ok: 0, warn: 0, fail: 0 };
  for (const c of checks) s[c.status] += 1;
  return s;
}

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;

/** 0 when nothing failed (warnings included), 1 otherwise. */
export function exitCodeOf(checks: readonly Check[]): number {
  return checks.some((c) => c.status === 'fail') ? EXIT_FAILED : EXIT_OK;
}
