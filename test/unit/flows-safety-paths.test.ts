// The stage flow's path rules on the in-memory host: a staging path that is a symbolic link or a file,
// or that has another filesystem mounted on it, is refused before anything changes on the host (no
// iscsiadm call, no record); a stage killed after its mount finds that mount (the same device) and
// keeps it; a mount of this volume's device elsewhere stops the unstage before its devices go.
import { describe, expect, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import { stage } from '../../src/flows/stage.js';
import { FakeHost, rejectionOf } from '../fake/host.js';
import { IQN, P1, stageSpec, stagingPathOf } from '../fake/specs.js';

function fakeWithTarget(): FakeHost {
  return new FakeHost().addTarget({ iqn: IQN, portals: [P1], luns: { 0: {}, 1: {} } });
}

describe('the staging path', () => {
  it.each([
    ['a symbolic link', 'symlink', 'is a symbolic link'],
    ['a regular file', 'file', 'exists and is a regular file'],
  ] as const)('%s is refused before any command runs', async (_what, kind, message) => {
    const fake = fakeWithTarget().placeAt(stagingPathOf('vol-a'), kind);
    const e = await rejectionOf(stage(fake.host, stageSpec('vol-a'), null, fake.log));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.message).toContain(`${stagingPathOf('vol-a')} ${message}`);
    expect(fake.ops('iscsi.')).toEqual([]);
    expect(fake.ops('metadata.save')).toEqual([]);
    expect(fake.ops('mounts.mount')).toEqual([]);
  });

  it('with another LUN\'s filesystem mounted on it is refused before any command runs, and that mount stays', async () => {
    const fake = fakeWithTarget();
    const shared = stagingPathOf('vol-a');
    await stage(fake.host, stageSpec('vol-a', { lun: 0 }), null, fake.log);
    const before = fake.calls.length;
    const e = await rejectionOf(stage(fake.host, { ...stageSpec('vol-b', { lun: 1 }), stagingPath: shared }, null, fake.log));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.message).toContain(`${shared} already has`);
    expect(e.message).toContain(`which is not ${IQN} LUN 1`);
    const after = fake.calls.slice(before).map((c) => c.op);
    expect(after.filter((op) => op.startsWith('iscsi.') || op === 'metadata.save' || op === 'mounts.mount' || op === 'mounts.unmount')).toEqual([]);
    expect(fake.mountPoints().map((m) => m.target)).toEqual([shared]);
    expect(fake.record('vol-a')).toMatchObject({ phase: 'staged' });
  });

  it('a stage killed after its mount (the record still `attaching`) is retried: the mount is found and kept, nothing is undone', async () => {
    const fake = fakeWithTarget();
    await stage(fake.host, stageSpec('vol-a'), null, fake.log);
    // as a driver killed while mount(8) ran leaves it: mounted, the record not yet `staged`
    const attaching = { ...fake.record('vol-a')!, phase: 'attaching' as const };
    fake.putRecord(attaching);
    const before = fake.calls.length;
    await stage(fake.host, stageSpec('vol-a'), attaching, fake.log);
    const after = fake.calls.slice(before).map((c) => c.op);
    expect(after).not.toContain('mounts.mount');
    expect(after).not.toContain('mounts.unmount');
    expect(after).not.toContain('fs.mkfs');
    expect(after).not.toContain('iscsi.logout');
    expect(fake.mountPoints().map((m) => m.target)).toEqual([stagingPathOf('vol-a')]);
    expect(fake.record('vol-a')).toMatchObject({ phase: 'staged' });
    expect(fake.logs.some((l) => /already mounted at the staging path/.test(l.msg))).toBe(true);
  });
});
