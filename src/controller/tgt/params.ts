// The tgt backend's StorageClass parameters:
//   targetMode:   "dedicated" (default: one target per volume) or "shared" (LUNs of one target)
//   sharedTarget: name after "<iqnPrefix>:" of the shared target (default controller.tgt.sharedTargetName)
//   chap:         "true" = session CHAP; credentials from the CreateVolume secrets (provisioner secret),
//                 or failing that the first ControllerPublishVolume secrets (attacher secret), keys
//                 node.session.auth.username/password (+ username_in/password_in for mutual CHAP)
//   fsType:       passed to the node in volume_context
// tgt binds ACLs and accounts per target, not per LUN: a node to which one LUN of a shared target is
// published can log in to the target and see its other LUNs, and CHAP is refused for shared targets.
// Use dedicated targets where volumes must be isolated from each other.
import type { StringMap } from '../../csi/types.js';
import { InvalidArgument } from '../../errors.js';
import { parseFsType } from '../../common/validate.js';
import { unknownParameters } from '../backend.js';
import { dedicatedTargetIqn, sharedTargetIqn } from '../names.js';

export const TGT_PARAMS = {
  targetMode: 'targetMode',
  sharedTarget: 'sharedTarget',
  chap: 'chap',
  fsType: 'fsType',
} as const;

export interface TgtParams {
  shared: boolean;
  /** the target IQN of a volume of this name */
  targetIqn: (volumeName: string) => string;
  chap: boolean;
  fsType?: string;
}

export interface TargetNaming {
  iqnPrefix: string;
  /** the shared target's name when the parameters give none */
  sharedTargetName: string;
}

export function parseTgtParams(parameters: StringMap, naming: TargetNaming): TgtParams {
  const known = Object.values(TGT_PARAMS);
  const unknown = unknownParameters(parameters, known);
  if (unknown.length > 0) throw new InvalidArgument(`unknown StorageClass parameter(s) ${unknown.join(', ')} for the tgt backend; known: ${known.join(', ')}`);
  const mode = parameters[TGT_PARAMS.targetMode] ?? 'dedicated';
  if (mode !== 'dedicated' && mode !== 'shared') throw new InvalidArgument(`parameter ${TGT_PARAMS.targetMode} must be "dedicated" or "shared", got ${JSON.stringify(mode)}`);
  const shared = mode === 'shared';
  const sharedName = parameters[TGT_PARAMS.sharedTarget];
  if (sharedName !== undefined && !shared) throw new InvalidArgument(`parameter ${TGT_PARAMS.sharedTarget} needs ${TGT_PARAMS.targetMode}: shared`);
  const sharedIqn = shared ? sharedTargetIqn(naming.iqnPrefix, sharedName ?? naming.sharedTargetName) : '';
  const chapText = parameters[TGT_PARAMS.chap] ?? 'false';
  if (chapText !== 'true' && chapText !== 'false') throw new InvalidArgument(`parameter ${TGT_PARAMS.chap} must be "true" or "false", got ${JSON.stringify(chapText)}`);
  const chap = chapText === 'true';
  if (chap && shared) throw new InvalidArgument(`parameter ${TGT_PARAMS.chap}: "true" needs a dedicated target: tgt binds CHAP accounts per target, so one account would open every LUN of the shared target`);
  const fsType = parameters[TGT_PARAMS.fsType];
  if (fsType !== undefined) parseFsType(fsType);
  return {
    shared,
    targetIqn: (name) => (shared ? sharedIqn : dedicatedTargetIqn(naming.iqnPrefix, name)),
    chap,
    ...(fsType !== undefined ? { fsType } : {}),
  };
}
