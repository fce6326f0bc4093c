// The simulated host's open-iscsi database on disk, in the real layout (open-iscsi.md §3):
//   <DBROOT>/nodes/<iqn>/<addr>,<port>,<tpgt>/<iface>   node record per iface
//   <DBROOT>/nodes/<iqn>/<addr>,<port>                  "old style" record (tpgt unknown, -1)
//   <DBROOT>/send_targets/<addr>,<port>/st_config       discovery record
//   <DBROOT>/send_targets/<addr>,<port>/<iqn>,<addr>,<port>,<tpgt>,<iface> -> the node's portal dir
//   <DBROOT>/ifaces/<name>                              iface record (built-ins have no file)
// Synchronous I/O on purpose: only the simulated kernel touches it, one request at a time.
import {
  existsSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, statSync, symlinkSync,
  writeFileSync, renameSync, lstatSync, readlinkSync,
} from 'node:fs';
import { join, dirname } from 'node:path';
import type { SimPaths } from './paths.js';
import {
  defaults, discoveryDefaultsFromConf, formatFile, nodeDefaultsFromConf, parseRecordText, TPGT_UNKNOWN,
  type Rec,
} from './records.js';

const DIR_MODE = 0o770; // open-iscsi creates its DB directories 0770
const FILE_MODE = 0o600; // records hold CHAP secrets in clear text

export const BUILTIN_IFACES: Record<string, Rec> = {
  default: { 'iface.iscsi_ifacename': 'default', 'iface.transport_name': 'tcp' },
  iser: { 'iface.iscsi_ifacename': 'iser', 'iface.transport_name': 'iser' },
};

export interface NodeEntry {
  rec: Rec;
  /** the record file */
  file: string;
}

export interface NodeId {
  target: string;
  address: string;
  port: number;
  tpgt: number;
  iface: string;
}

export function nodeIdOf(rec: Rec): NodeId {
  return {
    target: rec['node.name'] ?? '',
    address: rec['node.conn[0].address'] ?? '',
    port: Number(rec['node.conn[0].port'] ?? 0),
    tpgt: Number(rec['node.tpgt'] ?? TPGT_UNKNOWN),
    iface: rec['iface.iscsi_ifacename'] || 'default',
  };
}

function atomicWrite(file: string, text: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: DIR_MODE });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: FILE_MODE });
  renameSync(tmp, file);
}

function sortedEntries(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

function tryRmdir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // not empty or gone
  }
}

export class IscsiDb {
  constructor(private readonly paths: SimPaths) {}

  private conf(): string {
    try {
      return readFileSync(this.paths.iscsidConf, 'utf8');
    } catch {
      return '';
    }
  }

  /** Defaults of a new node record: built-in defaults overlaid with iscsid.conf's node.* keys. */
  nodeDefaults(): Rec {
    return { ...defaults('node'), ...nodeDefaultsFromConf(this.conf()) };
  }

  discoveryDefaults(): Rec {
    return { ...defaults('discovery'), ...discoveryDefaultsFromConf(this.conf()) };
  }

  // ---- node records ----

  nodeFile(id: NodeId): string {
    const targetDir = join(this.paths.nodes, id.target);
    return id.tpgt === TPGT_UNKNOWN
      ? join(targetDir, `${id.address},${id.port}`)
      : join(targetDir, `${id.address},${id.port},${id.tpgt}`, id.iface);
  }

  /** Every record, in libopeniscsiusr's order: target dirs, portal entries, iface files (alphasort). */
  listNodes(): NodeEntry[] {
    const out: NodeEntry[] = [];
    for (const target of sortedEntries(this.paths.nodes)) {
      const targetDir = join(this.paths.nodes, target);
      for (const portal of sortedEntries(targetDir)) {
        const p = join(targetDir, portal);
        let isDir: boolean;
        try {
          isDir = statSync(p).isDirectory();
        } catch {
          continue;
        }
        const files = isDir ? sortedEntries(p).filter((f) => !f.includes('.tmp-')).map((f) => join(p, f)) : [p];
        for (const file of files) {
          try {
            out.push({ rec: parseRecordText(readFileSync(file, 'utf8')), file });
          } catch {
            // vanished or unreadable: skip like the real reader
          }
        }
      }
    }
    return out;
  }

  writeNode(rec: Rec): string {
    const file = this.nodeFile(nodeIdOf(rec));
    atomicWrite(file, formatFile('node', rec));
    return file;
  }

  deleteNode(entry: NodeEntry): void {
    rmSync(entry.file, { force: true });
    const id = nodeIdOf(entry.rec);
    if (id.tpgt !== TPGT_UNKNOWN) tryRmdir(dirname(entry.file));
    tryRmdir(join(this.paths.nodes, id.target));
    this.removeDiscoveryLinksTo(id);
  }

  // ---- ifaces ----

  ifaceFile(name: string): string {
    return join(this.paths.ifaces, name);
  }

  readIface(name: string): Rec | undefined {
    const file = this.ifaceFile(name);
    if (existsSync(file)) return { ...defaults('iface'), ...parseRecordText(readFileSync(file, 'utf8')), 'iface.iscsi_ifacename': name };
    const builtin = BUILTIN_IFACES[name];
    return builtin ? { ...defaults('iface'), ...builtin } : undefined;
  }

  /** Files of the ifaces dir (alphasort) first, then the built-ins default and iser (2.1.x order). */
  listIfaces(): { name: string; rec: Rec }[] {
    const names = sortedEntries(this.paths.ifaces).filter((f) => !f.includes('.tmp-') && !(f in BUILTIN_IFACES));
    return [...names, ...Object.keys(BUILTIN_IFACES)].map((name) => ({ name, rec: this.readIface(name)! }));
  }

  writeIface(name: string, rec: Rec): void {
    atomicWrite(this.ifaceFile(name), formatFile('iface', { ...rec, 'iface.iscsi_ifacename': name }));
  }

  deleteIface(name: string): boolean {
    const file = this.ifaceFile(name);
    if (!existsSync(file)) return false;
    rmSync(file, { force: true });
    return true;
  }

  // ---- sendtargets discovery records ----

  private discoveryDir(address: string, port: number): string {
    return join(this.paths.sendTargets, `${address},${port}`);
  }

  readDiscovery(address: string, port: number): Rec | undefined {
    const file = join(this.discoveryDir(address, port), 'st_config');
    if (!existsSync(file)) return undefined;
    return { ...this.discoveryDefaults(), ...parseRecordText(readFileSync(file, 'utf8')) };
  }

  listDiscovery(): Rec[] {
    const out: Rec[] = [];
    for (const entry of sortedEntries(this.paths.sendTargets)) {
      const m = /^(.*),(\d+)$/.exec(entry);
      const rec = m ? this.readDiscovery(m[1]!, Number(m[2])) : undefined;
      if (rec) out.push(rec);
    }
    return out;
  }

  writeDiscovery(rec: Rec): void {
    const address = rec['discovery.sendtargets.address']!;
    const port = Number(rec['discovery.sendtargets.port']);
    atomicWrite(join(this.discoveryDir(address, port), 'st_config'), formatFile('discovery', rec));
  }

  deleteDiscovery(address: string, port: number): void {
    rmSync(this.discoveryDir(address, port), { recursive: true, force: true });
  }

  /** Node ids linked from a discovery record (records that discovery created). */
  discoveredNodes(address: string, port: number): NodeId[] {
    const out: NodeId[] = [];
    for (const link of sortedEntries(this.discoveryDir(address, port))) {
      if (link === 'st_config') continue;
      // <iqn>,<addr>,<port>,<tpgt>,<iface>; the iqn itself never contains ','
      const parts = link.split(',');
      if (parts.length < 5) continue;
      const iface = parts.pop()!;
      const tpgt = Number(parts.pop());
      const p = Number(parts.pop());
      const [target, ...addr] = parts;
      out.push({ target: target!, address: addr.join(','), port: p, tpgt, iface });
    }
    return out;
  }

  linkDiscovery(address: string, port: number, id: NodeId): void {
    const dir = this.discoveryDir(address, port);
    mkdirSync(dir, { recursive: true, mode: DIR_MODE });
    const link = join(dir, `${id.target},${id.address},${id.port},${id.tpgt},${id.iface}`);
    const dest = dirname(this.nodeFile(id));
    try {
      if (lstatSync(link).isSymbolicLink() && readlinkSync(link) === dest) return;
      rmSync(link, { force: true });
    } catch {
      // absent
    }
    symlinkSync(dest, link);
  }

  private removeDiscoveryLinksTo(id: NodeId): void {
    for (const entry of sortedEntries(this.paths.sendTargets)) {
      rmSync(join(this.paths.sendTargets, entry, `${id.target},${id.address},${id.port},${id.tpgt},${id.iface}`), { force: true });
    }
  }
}
