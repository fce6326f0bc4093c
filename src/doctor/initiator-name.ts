// The node's initiator name: it becomes the node id, and the controller grants targets to exactly that
// name, so two nodes with one name can reach each other's volumes and fight over sessions. Read and
// validated with the driver's own reader; then a few rules for names that cannot be unique.
import { readFile } from 'node:fs/promises';
import type { Config } from '../config.js';
import { errnoCode } from '../errors.js';
import { initiatorNameLine, readInitiatorName } from '../node-host/initiator.js';
import { CHECK, fail, ok, type Check } from './check.js';

/**
 * Prefixes the distributions' name generators put before a random part (open-iscsi's iscsi-iname and
 * the packages' wrappers around it). A name that is only the prefix has nothing unique in it.
 * Sources: Debian's open-iscsi (this project's build machine: iqn.1993-08.org.debian:01:<hex>), Ubuntu
 * (iqn.2004-10.com.ubuntu:01:<hex>), RHEL/Fedora (iqn.1994-05.com.redhat:<hex>), SUSE
 * (iqn.1996-04.de.suse:01:<hex>) and iscsi-iname's own default (iqn.2005-03.org.open-iscsi:<hex>),
 * each as seen in published initiatorname.iscsi files.
 */
export const GENERATOR_PREFIXES: readonly string[] = [
  'iqn.1993-08.org.debian:01:',
  'iqn.2004-10.com.ubuntu:01:',
  'iqn.1994-05.com.redhat:',
  'iqn.1996-04.de.suse:01:',
  'iqn.2005-03.org.open-iscsi:',
];

/** A unique part this short, or made of one repeated character ("000000000000", "xxxxxxxx"), is a placeholder. */
const MIN_UNIQUE_CHARS = 4;
const REPEATED_CHAR_RE = /^(.)\1*$/;

/** Debian's and Ubuntu's packages ship the file with this line and write the name when iscsid first starts. */
const GENERATE_NAME_RE = /^\s*GenerateName\s*=\s*yes\s*$/m;

/** Why this (already valid) name cannot be unique to one node, or undefined. */
export function initiatorNameProblem(name: string): string | undefined {
  for (const prefix of GENERATOR_PREFIXES) {
    const bare = prefix.replace(/:$/, '');
    if (name === prefix || name === bare) return `it is the bare ${bare} prefix the name generator puts before a random part: nothing in it is unique to this node`;
    if (name.startsWith(prefix)) {
      const unique = name.slice(prefix.length);
      if (unique.length < MIN_UNIQUE_CHARS || REPEATED_CHAR_RE.test(unique)) {
        return `its unique part ${JSON.stringify(unique)} after ${prefix} is a placeholder, not a generated value`;
      }
    }
  }
  return undefined;
}

const FIX_REGENERATE = 'on the host: `echo "InitiatorName=$(iscsi-iname)" > /etc/iscsi/initiatorname.iscsi && systemctl restart iscsid`, before any volume is attached (targets grant access to the old name)';

/**
 * A name cloned with a VM image looks as valid as a generated one; only comparing nodes tells. The
 * node id is the initiator name, so the CSINode objects list every node's.
 */
const COMPARE_NODES = "a name cloned with a VM image looks just as valid: compare all nodes' names with `kubectl get csinode -o jsonpath='{..nodeID}'`";

export async function checkInitiatorName(cfg: Config): Promise<Check> {
  const file = cfg.host.initiatorNameFile;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = errnoCode(e) ?? (e as Error).message;
    return fail(CHECK.initiatorName, `cannot read ${file}: ${code}`, code === 'ENOENT'
      ? `install open-iscsi on the host (it creates the file when iscsid first starts), or set host.initiatorNameFile to where the host's file is mounted; then ${FIX_REGENERATE}`
      : `make ${file} readable by the driver (the node plugin mounts the host's /etc/iscsi read-only)`);
  }
  if (!initiatorNameLine(text) && GENERATE_NAME_RE.test(text)) {
    return fail(CHECK.initiatorName, `${file} has no name yet, only GenerateName=yes (the package writes the name when iscsid first starts)`, 'on the host: `systemctl start iscsid` once (it writes InitiatorName=), or write one yourself: ' + FIX_REGENERATE);
  }
  let name: string;
  try {
    name = await readInitiatorName(file);
  } catch (e) {
    return fail(CHECK.initiatorName, (e as Error).message, `write one valid line InitiatorName=iqn.yyyy-mm.reversed.domain:unique (lower case), e.g. ${FIX_REGENERATE}`);
  }
  const problem = initiatorNameProblem(name);
  if (problem) return fail(CHECK.initiatorName, `${name}: ${problem}`, FIX_REGENERATE);
  return ok(CHECK.initiatorName, `${name} (the node id); ${COMPARE_NODES}`);
}
