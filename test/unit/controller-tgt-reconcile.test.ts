// The tgt backend's diff (desired configuration vs what tgtd shows) on real `tgtadm --op show --mode
// target` listings (test/fixtures/tgtadm, made by capture.sh there for the volumes of `state()`), and
// the executor that runs the operations through Tgtadm.
import { readFileSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { applyExport, type ApplyDeps } from '../../src/controller/tgt/apply.js';
import { desiredState, desiredTargetOf, type DesiredState, type DesiredTarget } from '../../src/controller/tgt/desired.js';
import {
  hasWork, planExport, planRemoval, planRepair, planUnbind, problemMessage, type TgtOp,
} from '../../src/controller/tgt/reconcile.js';
import type { TgtStateDoc, TgtVolumeState } from '../../src/controller/tgt/state.js';
import { parseTgtTargets, Tgtadm, type TgtTarget } from '../../src/controller/tgt/tgtadm.js';
import type { Arg, CommandRunner, RunResult } from '../../src/runner.js';

const MiB = 1024 * 1024;
const listing = (name: string): string => readFileSync(new URL(`../fixtures/tgtadm/show-target-${name}.txt`, import.meta.url), 'utf8');
const show = (name: string): TgtTarget[] => parseTgtTargets(listing(name));

const PREFIX = 'iqn.2026-11.dev.tsdriver.test';
const NODE_A = 'iqn.2026-11.dev.test:node-a';
const NODE_B = 'iqn.2026-11.dev.test:node-b';
const IQN_A = `${PREFIX}:pvc-a-38f2b742b935d124`;
const IQN_C = `${PREFIX}:pvc-c-8a693aee7e7817d1`;
const SHARED = `${PREFIX}:shared`;
const POOL = '/tmp/tgt-fixtures/pool';
const A = 'tgt:38f2b742b935d124a05585a67175089f';
const B1 = 'tgt:826a9073353e3b7855b312bed008ca81';
const B2 = 'tgt:33b7aade6719093ff576d315fb5ddac2';
const C = 'tgt:8a693aee7e7817d13685e12d6df4658e';
const IDS: Record<string, { scsiId: string; scsiSn: string }> = {
  [A]: { scsiId: 'csi8a237f6b54a573bc', scsiSn: '0037e45ba0d06607' },
  [B1]: { scsiId: 'csib0f28121d0c215df', scsiSn: '2408265f881fa3e0' },
  [B2]: { scsiId: 'csid7972a041977df98', scsiSn: '73afdbef79076a02' },
  [C]: { scsiId: 'csi84136f0d358c7b61', scsiSn: '849cd67d72699ee4' },
};

function volume(id: string, target: string, lun: number, nodes: string[], over: Partial<TgtVolumeState> = {}): TgtVolumeState {
  return {
    id, name: id, seq: 0, capacityBytes: 16 * MiB, file: `${POOL}/${id.slice(4)}.img`, target, lun, ...IDS[id]!,
    exportedBytes: 16 * MiB, capabilities: [], parameters: {}, context: {},
    published: Object.fromEntries(nodes.map((n) => [n, { readonly: false, mode: 'SINGLE_NODE_WRITER', initiator: n }])),
    createdAt: '2026-11-21T22:00:00.000Z', ...over,
  };
}

/** The driver state the fixtures were captured for: pvc-a (dedicated, mutual CHAP) on node-a, pvc-b1 / pvc-b2 on the shared target. */
function state(edit: (doc: TgtStateDoc) => void = () => undefined): DesiredState {
  const doc: TgtStateDoc = {
    version: 1,
    nextSeq: 4,
    targets: { [IQN_A]: { iqn: IQN_A, tid: 1, shared: false }, [SHARED]: { iqn: SHARED, tid: 2, shared: true } },
    volumes: {
      [A]: volume(A, IQN_A, 1, [NODE_A], { chap: { user: 'volchap', mutualUser: 'volchap-in' } }),
      [B1]: volume(B1, SHARED, 1, [NODE_A]),
      [B2]: volume(B2, SHARED, 2, [NODE_B]),
    },
  };
  edit(doc);
  return desiredState(doc);
}

const target = (desired: DesiredState, iqn: string): DesiredTarget => desiredTargetOf(desired, iqn)!;
const lunOps = (id: string, tid: number, lun: number, bytes = 16 * MiB) => ({ volumeId: id, tid, lun, file: `${POOL}/${id.slice(4)}.img`, ...IDS[id]!, bytes });
const allOps = (desired: DesiredState, live: TgtTarget[]): TgtOp[] => desired.targets.flatMap((t) => {
  const plan = planRepair(desired, t, live);
  return [...plan.ops, ...plan.prune];
});

describe('desiredState', () => {
  it('lists per target its tid, LUNs, initiator ACLs (no address ACL ever) and incoming / outgoing accounts', () => {
    const desired = state((doc) => { doc.volumes[B2]!.published[NODE_A] = { readonly: false, mode: 'SINGLE_NODE_WRITER', initiator: NODE_A }; });
    expect(desired.tids).toEqual([1, 2]);
    expect(target(desired, IQN_A)).toMatchObject({ tid: 1, initiatorAcls: [NODE_A], addressAcls: [], incomingAccounts: ['volchap'], outgoingAccounts: ['volchap-in'] });
    const shared = target(desired, SHARED);
    expect(shared).toMatchObject({ tid: 2, initiatorAcls: [NODE_A, NODE_B], addressAcls: [], incomingAccounts: [], outgoingAccounts: [] });
    expect(shared.luns.map((l) => [l.volumeId, l.lun, l.file, l.scsiId, l.publishedTo])).toEqual([
      [B1, 1, `${POOL}/826a9073353e3b7855b312bed008ca81.img`, 'csib0f28121d0c215df', [NODE_A]],
      [B2, 2, `${POOL}/33b7aade6719093ff576d315fb5ddac2.img`, 'csid7972a041977df98', [NODE_B, NODE_A]],
    ]);
  });
});

describe('planRepair on real tgtadm listings', () => {
  it('finds nothing to do when tgtd shows what the state says', () => {
    const desired = state();
    for (const t of desired.targets) {
      const plan = planRepair(desired, t, show('in-sync'));
      expect(hasWork(plan)).toBe(false);
      expect(plan.strayLuns).toEqual([]);
    }
  });

  it('re-creates everything after a tgtd restart, in order: target, LUN with its ids, accounts, ACLs', () => {
    const desired = state();
    expect(show('empty')).toEqual([]);
    expect(planRepair(desired, target(desired, IQN_A), []).ops).toEqual([
      { op: 'newTarget', tid: 1, iqn: IQN_A },
      { op: 'newLun', ...lunOps(A, 1, 1) },
      { op: 'newAccount', volumeId: A, user: 'volchap' },
      { op: 'bindAccount', volumeId: A, tid: 1, user: 'volchap', outgoing: false },
      { op: 'newAccount', volumeId: A, user: 'volchap-in' },
      { op: 'bindAccount', volumeId: A, tid: 1, user: 'volchap-in', outgoing: true },
      { op: 'bindInitiator', volumeId: A, tid: 1, initiator: NODE_A },
    ]);
    expect(planRepair(desired, target(desired, SHARED), []).ops).toEqual([
      { op: 'newTarget', tid: 2, iqn: SHARED },
      { op: 'newLun', ...lunOps(B1, 2, 1) },
      { op: 'bindInitiator', volumeId: B1, tid: 2, initiator: NODE_A },
      { op: 'newLun', ...lunOps(B2, 2, 2) },
      { op: 'bindInitiator', volumeId: B2, tid: 2, initiator: NODE_B },
    ]);
  });

  it('binds an initiator two volumes of a shared target are published to once', () => {
    const desired = state((doc) => { doc.volumes[B2]!.published = doc.volumes[B1]!.published; });
    const binds = planRepair(desired, target(desired, SHARED), []).ops.filter((o) => o.op === 'bindInitiator');
    expect(binds).toEqual([{ op: 'bindInitiator', volumeId: B1, tid: 2, initiator: NODE_A }]);
  });

  it('repairs hand-made drift: re-creates the LUN and the unbound account, binds the node, unbinds what no volume asks for', () => {
    const desired = state();
    const plan = planRepair(desired, target(desired, IQN_A), show('drift'));
    expect(plan.ops).toEqual([
      { op: 'newLun', ...lunOps(A, 1, 1) },
      // volchap is still bound: only the outgoing account is made again
      { op: 'newAccount', volumeId: A, user: 'volchap-in' },
      { op: 'bindAccount', volumeId: A, tid: 1, user: 'volchap-in', outgoing: true },
      { op: 'bindInitiator', volumeId: A, tid: 1, initiator: NODE_A },
    ]);
    expect(plan.prune).toEqual([
      { op: 'unbindAddress', tid: 1, address: '127.0.0.1' },
      { op: 'unbindInitiator', tid: 1, initiator: NODE_B },
      { op: 'unbindAccount', tid: 1, user: 'stranger', outgoing: false },
    ]);
    expect(plan.problems).toEqual([]);
  });

  it('sets a target left offline ready, leaves a LUN on another file alone while its volume is published, and never deletes a LUN it does not know', () => {
    const desired = state();
    const plan = planRepair(desired, target(desired, SHARED), show('drift'));
    expect(plan.ops).toEqual([{ op: 'setTargetReady', tid: 2, iqn: SHARED, was: 'offline' }]);
    expect(plan.prune).toEqual([]);
    expect(plan.strayLuns).toEqual([{ lun: 3, file: `${POOL}/stray.img` }]);
    expect(plan.problems).toEqual([{
      kind: 'lunOnOtherFile', volumeId: B2, target: SHARED, lun: 2, file: `${POOL}/33b7aade6719093ff576d315fb5ddac2.img`,
      exportedFile: `${POOL}/other.img`, publishedTo: [NODE_B],
    }]);
    expect(problemMessage(plan.problems[0]!)).toBe(`LUN 2 of target ${SHARED} exports ${POOL}/other.img, not the volume's ${POOL}/33b7aade6719093ff576d315fb5ddac2.img; left alone while the volume is published to ${NODE_B}: an initiator may be using that data`);
  });

  it('points a LUN on another file at the volume\'s in place once the volume is published nowhere and nobody is logged in', () => {
    const desired = state((doc) => { doc.volumes[B2]!.published = {}; });
    const plan = planRepair(desired, target(desired, SHARED), show('drift'));
    expect(plan.ops).toEqual([
      { op: 'setTargetReady', tid: 2, iqn: SHARED, was: 'offline' },
      { op: 'reopenLun', reason: 'otherFile', ...lunOps(B2, 2, 2) },
    ]);
    // node-b's ACL is no volume's any more
    expect(plan.prune).toEqual([{ op: 'unbindInitiator', tid: 2, initiator: NODE_B }]);
  });

  it('leaves targets that are not the driver\'s alone and moves a target whose tid another one took', () => {
    const desired = state((doc) => {
      doc.targets[IQN_C] = { iqn: IQN_C, tid: 3, shared: false };
      doc.volumes[C] = volume(C, IQN_C, 1, []);
    });
    const live = show('drift');
    expect(live.find((t) => t.tid === 3)?.name).toBe('iqn.2001-05.com.example:array1');
    const plan = planRepair(desired, target(desired, IQN_C), live);
    expect(plan.tid).toBe(4);
    expect(plan.tidChange).toEqual({ from: 3, to: 4, why: 'taken' });
    expect(plan.ops).toEqual([{ op: 'newTarget', tid: 4, iqn: IQN_C }, { op: 'newLun', ...lunOps(C, 4, 1) }]);
    expect(allOps(desired, live).filter((o) => 'tid' in o && o.tid === 3)).toEqual([]);
  });

  it('follows tgtd when it has a target of ours under another tid', () => {
    const desired = state((doc) => { doc.targets[SHARED]!.tid = 7; });
    const plan = planRepair(desired, target(desired, SHARED), show('in-sync'));
    expect(plan).toMatchObject({ tid: 2, tidChange: { from: 7, to: 2, why: 'followed' }, ops: [], prune: [], problems: [] });
    expect(hasWork(plan)).toBe(true);
  });

  it('never plans a LUN or target deletion, whatever tgtd shows', () => {
    const variants = [state(), state((doc) => { doc.volumes[B2]!.published = {}; }), state((doc) => { doc.volumes[B1]!.capacityBytes = 64 * MiB; })];
    for (const desired of variants) {
      for (const live of ['empty', 'in-sync', 'logged-in', 'drift'].map(show)) {
        expect(allOps(desired, live).map((o) => o.op)).not.toContainEqual(expect.stringMatching(/^delete/));
      }
    }
  });
});

describe('growth', () => {
  const grown = (bytes: number) => state((doc) => { doc.volumes[B1]!.capacityBytes = bytes; });

  it('re-opens a grown file in place while nobody is logged in; tgtd reads the larger of file and volume', () => {
    const desired = grown(32 * MiB);
    expect(planRepair(desired, target(desired, SHARED), show('in-sync')).ops).toEqual([{ op: 'reopenLun', reason: 'grown', ...lunOps(B1, 2, 1, 32 * MiB) }]);
    const files = new Map([[B1, 40 * MiB], [B2, 16 * MiB]]);
    expect(planRepair(desired, target(desired, SHARED), show('in-sync'), { files }).ops).toEqual([{ op: 'reopenLun', reason: 'grown', ...lunOps(B1, 2, 1, 40 * MiB) }]);
  });

  it('does not touch a LUN of a target an initiator is logged in to, and says why', () => {
    const desired = grown(32 * MiB);
    const live = show('logged-in');
    expect(live.find((t) => t.name === SHARED)?.nexuses.map((n) => n.initiator)).toEqual([NODE_A]);
    const plan = planRepair(desired, target(desired, SHARED), live);
    expect(plan.ops).toEqual([]);
    expect(plan.problems).toEqual([{ kind: 'sizeNotRead', volumeId: B1, target: SHARED, lun: 1, exportedBytes: 16 * MiB, capacityBytes: 32 * MiB, loggedIn: [NODE_A] }]);
    expect(problemMessage(plan.problems[0]!)).toMatch(new RegExp(`^volume ${B1} cannot grow to 32 MiB while ${NODE_A} is logged in to target ${SHARED}: .* the LUN keeps 16 MiB until no initiator is logged in$`));
    expect(hasWork(plan)).toBe(true);
  });
});

describe('planExport, planUnbind, planRemoval', () => {
  it('plans one volume of a shared target only, and never unbinds anything', () => {
    const desired = state((doc) => { doc.volumes[B2]!.published = {}; });
    const plan = planExport(desired, target(desired, SHARED), show('drift'), { volumeIds: new Set([B1]) });
    expect(plan.volumeIds).toEqual([B1]);
    expect(plan.ops).toEqual([{ op: 'setTargetReady', tid: 2, iqn: SHARED, was: 'offline' }]);
    expect(plan.prune).toEqual([]);
    expect(plan.strayLuns).toEqual([]);
  });

  it('unbinds a node unpublished from a volume only when no other volume of the target is published to it', () => {
    const live = show('in-sync');
    const both = state((doc) => { doc.volumes[B2]!.published = { ...doc.volumes[B1]!.published }; delete doc.volumes[B1]!.published[NODE_A]; });
    expect(planUnbind(target(both, SHARED), SHARED, live, [NODE_A])).toEqual([]);
    const none = state((doc) => { delete doc.volumes[B1]!.published[NODE_A]; });
    expect(planUnbind(target(none, SHARED), SHARED, live, [NODE_A])).toEqual([{ op: 'unbindInitiator', tid: 2, initiator: NODE_A }]);
    expect(planUnbind(target(none, SHARED), SHARED, [], [NODE_A])).toEqual([]);
  });

  it('deletes the LUN of a deleted volume, or its target with the last volume', () => {
    const live = show('in-sync');
    expect(planRemoval(SHARED, 2, false, live)).toEqual([{ op: 'deleteLun', tid: 2, lun: 2 }]);
    expect(planRemoval(IQN_A, 1, true, live)).toEqual([{ op: 'deleteTarget', tid: 1 }]);
    expect(planRemoval(IQN_C, 1, true, live)).toEqual([]);
  });
});

describe('applyExport', () => {
  /** A tgtadm that records argv (passwords as placeholders) and answers `show` with a fixture. */
  function fakeTgtadm(shown: string, fail: (argv: string[]) => string | undefined = () => undefined): { deps: ApplyDeps; calls: string[][]; accounts: string[] } {
    const calls: string[][] = [];
    const accounts: string[] = [];
    const runner: CommandRunner = {
      stats: { commands: 0, commandMs: 0, byName: {} },
      run: async (name: string, args: Arg[]): Promise<RunResult> => {
        const argv = args.map(String).slice(4);
        const isShow = argv[1] === 'show';
        if (!isShow) calls.push(argv);
        const error = fail(argv);
        const stdout = isShow ? listing(shown) : '';
        return { argv: [name, ...argv], exitCode: error ? 22 : 0, stdout, stderr: error ? `tgtadm: ${error}` : '', durationMs: 0 };
      },
    };
    const tgtadm = new Tgtadm(runner, 5555);
    return { deps: { tgtadm, createAccount: async (user) => { accounts.push(user); } }, calls, accounts };
  }

  it('runs the tgtadm commands of a plan: a new LUN gets the volume\'s SCSI ids', async () => {
    const desired = state();
    const t = target(desired, SHARED);
    const { deps, calls } = fakeTgtadm('empty');
    const outcome = await applyExport(planExport(desired, t, []), t, deps);
    expect(calls).toEqual([
      ['--op', 'new', '--mode', 'target', '--tid', '2', '-T', SHARED],
      ['--op', 'new', '--mode', 'logicalunit', '--tid', '2', '--lun', '1', '-b', `${POOL}/826a9073353e3b7855b312bed008ca81.img`],
      ['--op', 'update', '--mode', 'logicalunit', '--tid', '2', '--lun', '1', '--params', 'scsi_id=csib0f28121d0c215df,scsi_sn=2408265f881fa3e0'],
      ['--op', 'bind', '--mode', 'target', '--tid', '2', '--initiator-name', NODE_A],
      ['--op', 'new', '--mode', 'logicalunit', '--tid', '2', '--lun', '2', '-b', `${POOL}/33b7aade6719093ff576d315fb5ddac2.img`],
      ['--op', 'update', '--mode', 'logicalunit', '--tid', '2', '--lun', '2', '--params', 'scsi_id=csid7972a041977df98,scsi_sn=73afdbef79076a02'],
      ['--op', 'bind', '--mode', 'target', '--tid', '2', '--initiator-name', NODE_B],
    ]);
    expect([...outcome.exported]).toEqual([[B1, 16 * MiB], [B2, 16 * MiB]]);
    expect([...outcome.volumes.values()]).toEqual([{}, {}]);
  });

  it('stops only the volume whose operation failed', async () => {
    const desired = state();
    const t = target(desired, SHARED);
    const { deps, calls } = fakeTgtadm('empty', (argv) => (argv.includes('-b') && argv.includes('1') ? 'this logical unit number already exists' : undefined));
    const outcome = await applyExport(planExport(desired, t, []), t, deps);
    expect(outcome.volumes.get(B1)?.error).toMatchObject({ code: status.INTERNAL, message: expect.stringContaining('new lun 2/1 failed') });
    expect(outcome.volumes.get(B2)).toEqual({});
    expect(calls.filter((c) => c.includes('--initiator-name'))).toEqual([['--op', 'bind', '--mode', 'target', '--tid', '2', '--initiator-name', NODE_B]]);
    expect([...outcome.exported.keys()]).toEqual([B2]);
  });

  it('creates accounts through the CHAP store before binding them', async () => {
    const desired = state();
    const t = target(desired, IQN_A);
    const { deps, calls, accounts } = fakeTgtadm('empty');
    await applyExport(planExport(desired, t, []), t, deps);
    expect(accounts).toEqual(['volchap', 'volchap-in']);
    expect(calls.filter((c) => c.includes('account'))).toEqual([
      ['--op', 'bind', '--mode', 'account', '--tid', '1', '--user', 'volchap'],
      ['--op', 'bind', '--mode', 'account', '--tid', '1', '--user', 'volchap-in', '--outgoing'],
    ]);
  });

  it('fails every volume when the target itself cannot be made', async () => {
    const desired = state();
    const t = target(desired, SHARED);
    const { deps, calls } = fakeTgtadm('empty', (argv) => (argv.includes('-T') ? 'this target already exists' : undefined));
    const outcome = await applyExport(planExport(desired, t, []), t, deps);
    expect(calls).toHaveLength(1);
    expect([...outcome.volumes.values()].map((r) => r.error?.message)).toEqual([expect.stringContaining('new target'), expect.stringContaining('new target')]);
  });

  it('re-opens a grown LUN with logins refused meanwhile, and holds back when an initiator logged in after the plan', async () => {
    const desired = state((doc) => { doc.volumes[B1]!.capacityBytes = 32 * MiB; doc.volumes[B2]!.capacityBytes = 32 * MiB; });
    const t = target(desired, SHARED);
    const plan = planRepair(desired, t, show('in-sync'));
    expect(plan.ops.map((o) => o.op)).toEqual(['reopenLun', 'reopenLun']);

    const free = fakeTgtadm('in-sync');
    const done = await applyExport(plan, t, free.deps);
    expect(free.calls).toEqual([
      ['--op', 'update', '--mode', 'target', '--tid', '2', '--name', 'state', '--value', 'offline'],
      ['--op', 'update', '--mode', 'logicalunit', '--tid', '2', '--lun', '1', '--params', `online=0,path=${POOL}/826a9073353e3b7855b312bed008ca81.img,online=1`],
      ['--op', 'update', '--mode', 'logicalunit', '--tid', '2', '--lun', '1', '--params', 'scsi_id=csib0f28121d0c215df,scsi_sn=2408265f881fa3e0'],
      ['--op', 'update', '--mode', 'target', '--tid', '2', '--name', 'state', '--value', 'ready'],
      ['--op', 'update', '--mode', 'target', '--tid', '2', '--name', 'state', '--value', 'offline'],
      ['--op', 'update', '--mode', 'logicalunit', '--tid', '2', '--lun', '2', '--params', `online=0,path=${POOL}/33b7aade6719093ff576d315fb5ddac2.img,online=1`],
      ['--op', 'update', '--mode', 'logicalunit', '--tid', '2', '--lun', '2', '--params', 'scsi_id=csid7972a041977df98,scsi_sn=73afdbef79076a02'],
      ['--op', 'update', '--mode', 'target', '--tid', '2', '--name', 'state', '--value', 'ready'],
    ]);
    expect(done.reopened).toEqual([B1, B2]);

    // node-a logged in between the plan and the re-open: nothing re-opened, the target ready again, tried once per target
    const busy = fakeTgtadm('logged-in');
    const held = await applyExport(plan, t, busy.deps);
    expect(busy.calls).toEqual([
      ['--op', 'update', '--mode', 'target', '--tid', '2', '--name', 'state', '--value', 'offline'],
      ['--op', 'update', '--mode', 'target', '--tid', '2', '--name', 'state', '--value', 'ready'],
    ]);
    expect(held.exported.size).toBe(0);
    expect(held.volumes.get(B1)).toEqual({ problem: expect.objectContaining({ kind: 'sizeNotRead', loggedIn: [NODE_A] }) });
    expect(held.volumes.get(B2)).toEqual({ problem: expect.objectContaining({ kind: 'sizeNotRead', loggedIn: [NODE_A] }) });
  });

  it('fails a volume whose LUN would have been pointed at its file when an initiator logged in after the plan', async () => {
    const desired = state((doc) => { doc.volumes[B2]!.published = {}; });
    const t = target(desired, SHARED);
    const plan = planRepair(desired, t, show('drift'));
    const { deps } = fakeTgtadm('logged-in');
    const outcome = await applyExport(plan, t, deps);
    expect(outcome.volumes.get(B2)?.error).toMatchObject({ code: status.FAILED_PRECONDITION, message: expect.stringMatching(/left alone while an initiator is logged in to the target/) });
  });
});
