// Numbers tgtd identifies things by: a target's tid and a LUN's number within its target. Each is
// the lowest one free in both the driver's state and tgtd (targets made by hand take numbers too).
import { ResourceExhausted } from '../../errors.js';

const FIRST_TID = 1;
/** LUN 0 of every tgt target is its controller LUN; volumes start at 1. */
export const FIRST_VOLUME_LUN = 1;
const MAX_TGT_LUN = 16383;

function lowestFree(used: Iterable<number>, from: number): number {
  const taken = new Set(used);
  let n = from;
  while (taken.has(n)) n += 1;
  return n;
}

export function freeTid(used: Iterable<number>): number {
  return lowestFree(used, FIRST_TID);
}

export function freeLun(used: Iterable<number>, iqn: string): number {
  const lun = lowestFree(used, FIRST_VOLUME_LUN);
  if (lun > MAX_TGT_LUN) throw new ResourceExhausted(`shared target ${iqn} has no free LUN number left`);
  return lun;
}
