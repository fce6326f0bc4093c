// The node's iSCSI initiator name, from open-iscsi's initiatorname.iscsi ("InitiatorName=iqn…").
import { readFile } from 'node:fs/promises';
import { FailedPrecondition, InvalidArgument } from '../errors.js';
import { parseInitiatorName } from '../common/validate.js';

/** The value of the file's `InitiatorName=` line, unchecked. */
export function initiatorNameLine(text: string): string | undefined {
  for (const line of text.split('\n')) {
    const m = /^\s*InitiatorName\s*=\s*(\S+)\s*$/.exec(line);
    if (m) return m[1];
  }
  return undefined;
}

export async function readInitiatorName(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new FailedPrecondition(`cannot read the initiator name from ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const name = initiatorNameLine(text);
  if (!name) throw new FailedPrecondition(`${file} has no InitiatorName= line`);
  // it becomes the node id the controller puts in target ACLs: an IQN/EUI/NAA, checked like any other
  try {
    return parseInitiatorName(name);
  } catch (e) {
    if (e instanceof InvalidArgument) throw new FailedPrecondition(`${file}: ${e.message}`);
    throw e;
  }
}
