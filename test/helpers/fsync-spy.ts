// Which paths the code under test fsyncs, in order: fsync(2) gets a descriptor, so the path is the
// one openSync opened it for. The calls still happen.
import fs from 'node:fs';
import { vi } from 'vitest';

export function spyOnFsyncs(onSync: (path: string | undefined) => void): void {
  const opened = new Map<number, string>();
  const openSync = fs.openSync.bind(fs);
  vi.spyOn(fs, 'openSync').mockImplementation((...args: Parameters<typeof fs.openSync>) => {
    const fd = openSync(...args);
    opened.set(fd, String(args[0]));
    return fd;
  });
  const fsync = fs.fsync.bind(fs);
  vi.spyOn(fs, 'fsync').mockImplementation((fd, callback) => {
    onSync(opened.get(fd));
    fsync(fd, callback);
  });
}
