// Polls a probe until it answers something truthy, for at most a deadline: what the e2e tests use
// to wait for an effect that happens in the background (the node healer, a log line, a socket).
const DEFAULT_UNTIL_MS = 15_000;
const POLL_MS = 100;

export async function until<T>(what: string, probe: () => Promise<T | null | undefined | false>, deadlineMs = DEFAULT_UNTIL_MS): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`not within ${deadlineMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
