// The one place that runs host commands: argv arrays only (never a shell), a timeout on every call,
// the configured prefix, the process tree killed on timeout, and a typed result. Secret arguments
// are passed to the process but rendered as a placeholder in every log line and error message.
import { spawn } from 'node:child_process';
import type { CommandConfig, CommandName } from './config.js';
import { DeadlineExceeded, FailedPrecondition, Internal } from './errors.js';
import { Secret, type Logger } from './log.js';

export type Arg = string | Secret;

export interface RunResult {
  /** argv as run, with secrets rendered as the placeholder (safe to log or put in messages) */
  argv: string[];
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface RunOptions {
  /** overrides the configured timeout for this one call */
  timeoutMs?: number;
  /** written to stdin */
  input?: string;
  /** extra environment for this call */
  env?: Record<string, string>;
  logger?: Logger;
}

/** Counts commands and the time spent in them; the benchmark reads this to split driver time from command time. */
export interface RunStats {
  commands: number;
  commandMs: number;
  byName: Record<string, number>;
}

export interface CommandRunner {
  run(name: CommandName, args: Arg[], opts?: RunOptions): Promise<RunResult>;
  readonly stats: RunStats;
}

/** How a command ended: its exit status, or none (killed at its timeout, by a signal, or it could not be started). */
export type CommandEnd = { exitCode: number } | { exitCode: null; timedOut: boolean };

/** Told of every command a runner ran (the metrics); must not throw. */
export interface CommandObserver {
  commandFinished(name: CommandName, end: CommandEnd, seconds: number): void;
}

/**
 * The runner with every command reported to `observer`. `inner.run` is looked up at each call, so a
 * wrapper put around `inner` later (the benchmark's recorder) still sees every command. A timeout is
 * the DeadlineExceeded that run() throws; anything else it throws is a command that did not exit.
 */
export function observeCommands(inner: CommandRunner, observer: CommandObserver): CommandRunner {
  return {
    stats: inner.stats,
    async run(name, args, opts) {
      const started = performance.now();
      const seconds = () => (performance.now() - started) / 1000;
      try {
        const r = await inner.run(name, args, opts);
        observer.commandFinished(name, { exitCode: r.exitCode }, seconds());
        return r;
      } catch (e) {
        observer.commandFinished(name, { exitCode: null, timedOut: e instanceof DeadlineExceeded }, seconds());
        throw e;
      }
    },
  };
}


export function safeArgv(argv: Arg[]): string[] {
  return argv.map((a) => (a instanceof Secret ? a.toString() : a));
}

/** What one process did: its exit code or the signal that ended it, or why it could not start. */
interface ProcessEnd {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** errno code when it could not be started (ENOENT, EACCES) */
  spawnError?: string;
  stdout: string;
  stderr: string;
}

/** Output kept per stream; a command printing more is cut (its exit status still counts). */
const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;

/** Process groups of commands still running, killed if the driver exits before they do. */
const running = new Set<number>();
let exitHookInstalled = false;

function trackGroup(pid: number): void {
  running.add(pid);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const p of running) killGroup(p);
  });
}

/**
 * Runs one process in its own process group (so a timeout kills the whole tree, e.g. a prefix like
 * `chroot` and its child), stdin from `input` or nothing, stdout and stderr captured as UTF-8.
 * Node's own child_process: a general-purpose wrapper costs start-up time and memory in every driver.
 */
function runProcess(file: string, args: string[], opts: { input?: string; env?: Record<string, string> }, onSpawn: (pid: number) => void): Promise<ProcessEnd> {
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      detached: true,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    child.stdout!.on('data', (b: Buffer) => { if (outBytes < MAX_OUTPUT_BYTES) { out.push(b); outBytes += b.length; } });
    child.stderr!.on('data', (b: Buffer) => { if (errBytes < MAX_OUTPUT_BYTES) { err.push(b); errBytes += b.length; } });
    let spawnError: string | undefined;
    child.once('error', (e: NodeJS.ErrnoException) => { spawnError = e.code ?? 'spawn failed'; });
    if (child.pid !== undefined) {
      trackGroup(child.pid);
      onSpawn(child.pid);
    }
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined); // EPIPE: the command did not read its input
      child.stdin.end(opts.input);
    }
    // 'close': the process ended and its output pipes are drained (or it never started)
    child.once('close', (code, signal) => {
      if (child.pid !== undefined) running.delete(child.pid);
      resolve({
        exitCode: code,
        signal,
        ...(spawnError !== undefined ? { spawnError } : {}),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

export class ProcessRunner implements CommandRunner {
  readonly stats: RunStats = { commands: 0, commandMs: 0, byName: {} };

  constructor(
    private readonly commands: Record<CommandName, CommandConfig>,
    private readonly globalPrefix: string[],
    private readonly logger: Logger,
  ) {}

  async run(name: CommandName, args: Arg[], opts: RunOptions = {}): Promise<RunResult> {
    const spec = this.commands[name];
    const full: Arg[] = [...(spec.prefix ?? this.globalPrefix), ...spec.argv, ...args];
    const [file, ...rest] = full.map((a) => (a instanceof Secret ? a.reveal() : a));
    const shown = safeArgv(full);
    const timeoutMs = opts.timeoutMs ?? spec.timeoutMs;
    const log = opts.logger ?? this.logger;
    const started = performance.now();
    let result: ProcessEnd;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    try {
      // Our own timer kills the whole group at once: waiting for the child alone would also wait for
      // every process still holding its output pipes (a forked grandchild) before the call returned.
      result = await runProcess(file!, rest, { ...(opts.input !== undefined ? { input: opts.input } : {}), ...(opts.env ? { env: opts.env } : {}) }, (pid) => {
        timer = setTimeout(() => {
          timedOut = true;
          killGroup(pid);
        }, timeoutMs);
      });
    } finally {
      clearTimeout(timer);
      const ms = performance.now() - started;
      this.stats.commands += 1;
      this.stats.commandMs += ms;
      this.stats.byName[name] = (this.stats.byName[name] ?? 0) + 1;
    }
    const durationMs = Math.round((performance.now() - started) * 10) / 10;
    if (timedOut) {
      log.warn({ cmd: shown, durationMs }, 'command timed out');
      throw new DeadlineExceeded(`${name} did not finish within ${timeoutMs} ms and was killed (${shown.join(' ')})`);
    }
    if (result.spawnError !== undefined) {
      const code = result.spawnError;
      log.warn({ cmd: shown, durationMs, code }, 'command could not run');
      throw new FailedPrecondition(`cannot run ${name} (${shown[0]}): ${code === 'ENOENT' ? 'not found' : code}; check commands.${name} in the driver config`);
    }
    if (result.signal) {
      log.warn({ cmd: shown, durationMs, signal: result.signal }, 'command killed by a signal');
      throw new Internal(`${name} was killed by ${result.signal} (${shown.join(' ')})`);
    }
    const out: RunResult = { argv: shown, exitCode: result.exitCode ?? -1, stdout: result.stdout, stderr: result.stderr, durationMs };
    log.debug({ cmd: shown, exitCode: out.exitCode, durationMs }, 'command');
    return out;
  }
}

function killGroup(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** First non-empty line of a command's stderr (or stdout), for operator-facing messages. */
export function firstLine(r: RunResult): string {
  const lines = (r.stderr + '\n' + r.stdout).split('\n').map((l) => l.trim()).filter(Boolean);
  return lines[0] ?? `exit ${r.exitCode}`;
}
