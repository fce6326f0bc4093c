// Small file-system helpers for the simulated sysfs and /dev: attribute files, relative symlinks
// (as the kernel makes them), FIFOs for write-triggered control files, device nodes.
import { execFile } from 'node:child_process';
import { constants, openSync, closeSync, mkdirSync, writeFileSync, symlinkSync, rmSync, readlinkSync, renameSync, linkSync, existsSync } from 'node:fs';
import { Socket } from 'node:net';
import { dirname, join, relative } from 'node:path';

const TOOL_TIMEOUT_MS = 10_000;

export interface ExecResult { code: number; stdout: string; stderr: string }

/** Runs a tool (argv, no shell) with a timeout; never rejects. */
export function execTool(file: string, args: string[], timeoutMs = TOOL_TIMEOUT_MS): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      const raw = err ? (err as { code?: unknown }).code : 0;
      resolve({ code: typeof raw === 'number' ? raw : err ? -1 : 0, stdout, stderr: stderr || (err && typeof raw !== 'number' ? err.message : '') });
    });
  });
}

export async function mustExec(file: string, args: string[]): Promise<string> {
  const r = await execTool(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

// The tree is written with synchronous calls on purpose: each is a few microseconds, where the
// same call through the thread pool costs a round trip, and a scan writes dozens of them in a row.

/** Writes sysfs-style attribute files ("value\n") into dir. */
export function writeAttrs(dir: string, attrs: Record<string, string | number>): void {
  mkdirSync(dir, { recursive: true });
  for (const [name, value] of Object.entries(attrs)) writeFileSync(`${dir}/${name}`, `${value}\n`);
}

/** A symlink at `link` pointing to `target` by a relative path, replacing whatever was there. */
export function relLink(target: string, link: string): void {
  mkdirSync(dirname(link), { recursive: true });
  rmSync(link, { force: true });
  symlinkSync(relative(dirname(link), target), link);
}

/** Removes `link` only if it still points to `target` (another device may own the name now). */
export function removeLinkIfTo(target: string, link: string): boolean {
  try {
    if (readlinkSync(link) !== relative(dirname(link), target)) return false;
  } catch {
    return false;
  }
  rmSync(link, { force: true });
  return true;
}

export function rmPath(path: string): void {
  rmSync(path, { recursive: true, force: true });
}

export async function mkfifos(paths: string[], mode = '0200'): Promise<void> {
  if (paths.length) await mustExec('mkfifo', ['-m', mode, ...paths]);
}

export async function mknodBlock(path: string, major: number, minor: number): Promise<void> {
  rmSync(path, { force: true });
  await mustExec('mknod', ['-m', '0660', path, 'b', String(major), String(minor)]);
}

/**
 * A write-triggered control file (scan, delete, rescan) made as a FIFO that the simulated kernel
 * holds open read-write and non-blocking: a writer's open never blocks, and the data is read through
 * a libuv pipe (no threadpool thread blocks), so a plain `fs.writeFile` takes effect within a tick.
 */
export class ControlFifo {
  private readonly socket: Socket;
  private closed = false;

  constructor(readonly path: string, onWrite: (text: string) => void) {
    const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
    try {
      this.socket = new Socket({ fd, readable: true, writable: false });
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    this.socket.setEncoding('utf8');
    this.socket.on('data', (d: string) => onWrite(d));
    this.socket.on('error', () => undefined);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
  }
}

const FIFO_BATCH = 16;
const FIFO_LOW_WATER = 6;

/**
 * Spare FIFOs and device nodes made ahead of time, so that adding a device costs renames and hard
 * links instead of mkfifo/mknod processes (each spawn blocks the event loop for a fork). The pools
 * live in hidden directories on the same tmpfs as their destinations (rename/link need that).
 */
export class NodePool {
  private readonly spare: string[] = [];
  private seq = 0;
  private refilling: Promise<void> | undefined;

  constructor(private readonly fifoDir: string, private readonly nodeDir: string, private readonly onError: (e: Error) => void) {
    mkdirSync(fifoDir, { recursive: true, mode: 0o700 });
    mkdirSync(nodeDir, { recursive: true, mode: 0o700 });
    void this.refill();
  }

  private refill(): Promise<void> {
    this.refilling ??= (async () => {
      const names = Array.from({ length: FIFO_BATCH }, () => join(this.fifoDir, `fifo-${this.seq++}`));
      await mkfifos(names);
      this.spare.push(...names);
    })().catch((e: Error) => this.onError(e)).finally(() => { this.refilling = undefined; });
    return this.refilling;
  }

  /** Puts a fresh FIFO (mode 0200, like a write-only sysfs attribute) at each path. */
  async fifos(paths: string[]): Promise<void> {
    while (this.spare.length < paths.length) {
      if (this.refilling) await this.refilling;
      else await this.refill();
    }
    for (const p of paths) renameSync(this.spare.pop()!, p);
    if (this.spare.length < FIFO_LOW_WATER) void this.refill();
  }

  private nodePath(major: number, minor: number): string {
    return join(this.nodeDir, `${major}:${minor}`);
  }

  /** A block device node at path (a hard link to the pooled node for major:minor, made once). */
  async blockNode(path: string, major: number, minor: number): Promise<void> {
    const pooled = this.nodePath(major, minor);
    if (!existsSync(pooled)) await mknodBlock(pooled, major, minor);
    rmSync(path, { force: true });
    linkSync(pooled, path);
  }

  /** Makes the nodes of devices likely to be used soon, one after another, in the background. */
  prefill(major: number, minors: number[]): void {
    void (async () => {
      for (const minor of minors) {
        const pooled = this.nodePath(major, minor);
        if (!existsSync(pooled)) await mknodBlock(pooled, major, minor).catch((e: Error) => this.onError(e));
      }
    })();
  }
}
