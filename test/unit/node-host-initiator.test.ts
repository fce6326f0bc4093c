import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FailedPrecondition } from '../../src/errors.js';
import { readInitiatorName } from '../../src/node-host/initiator.js';

const file = (text: string): string => {
  const f = join(mkdtempSync(join(tmpdir(), 'initiator-')), 'initiatorname.iscsi');
  writeFileSync(f, text);
  return f;
};

describe('readInitiatorName', () => {
  it('reads the InitiatorName= line of open-iscsi\'s file', async () => {
    expect(await readInitiatorName(file('## DO NOT EDIT\nInitiatorName=iqn.1993-08.org.debian:01:c997b853819a\n'))).toBe('iqn.1993-08.org.debian:01:c997b853819a');
  });

  it('refuses a name that is no IQN/EUI/NAA (it would become the node id in target ACLs)', async () => {
    const f = file('InitiatorName=not-an-iqn\n');
    await expect(readInitiatorName(f)).rejects.toThrow(FailedPrecondition);
    await expect(readInitiatorName(f)).rejects.toThrow(f);
    await expect(readInitiatorName(file('# empty\n'))).rejects.toThrow('has no InitiatorName= line');
  });
});
