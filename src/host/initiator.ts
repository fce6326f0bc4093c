// The node's iSCSI initiator name, from open-iscsi's initiatorname.iscsi ("InitiatorName=iqn…").
import { readFile } from 'node:fs/promises';
import { FailedPrecondition } from '../errors.js';

export function parseInitiatorName(text: string): string | undefined {
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
  const name = parseInitiatorName(text);
  if (!name) throw new FailedPrecondition(`${file} has no InitiatorName= line`);
  return name;
}
