// The one place that runs host commands: argv arrays only (never a shell), a timeout on every call,
// the configured prefix, the process tree killed on timeout, and a typed result. Secret arguments
// are passed to the process but rendered as a placeholder in every log line and error message.
import { execa } from 'execa';
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

export class ExecaRunner implements CommandRunner {
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
    let result;
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    try {
      const child = execa(file!, rest, {
        reject: false,
        cleanup: true,
        // own process group, so a timeout kills the whole tree (e.g. a prefix like `chroot` and its child)
        detached: true,
        input: opts.input,
        stdin: opts.input === undefined ? 'ignore' : 'pipe',
        env: opts.env,
        extendEnv: true,
        stripFinalNewline: false,
        encoding: 'utf8',
        maxBuffer: 64 * 1024 * 1024,
      });
      // Our own timer kills the whole group at once: a child's timeout alone would wait for every
      // process still holding its output pipes (a forked grandchild) before the call returned.
      const pid = child.pid;
      timer = setTimeout(() => {
        timedOut = true;
        killGroup(pid);
      }, timeoutMs);
      result = await child;
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
    if (result.signal) {
      log.warn({ cmd: shown, durationMs, signal: result.signal }, 'command killed by a signal');
      throw new Internal(`${name} was killed by ${result.signal} (${shown.join(' ')})`);
    }
    if (result.failed && result.exitCode === undefined) {
      const code = (result as { code?: string }).code;
      log.warn({ cmd: shown, durationMs, code }, 'command could not run');
      throw new FailedPrecondition(`cannot run ${name} (${shown[0]}): ${code === 'ENOENT' ? 'not found' : code ?? 'spawn failed'}; check commands.${name} in the driver config`);
    }
    const out: RunResult = {
      argv: shown,
      exitCode: result.exitCode ?? -1,
      stdout: String(result.stdout ?? ''),
      stderr: String(result.stderr ?? ''),
      durationMs,
    };
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
