// open-iscsi 2.1.8 record formats for the simulated host: node records, iface records and
// sendtargets discovery records, as printed by `iscsiadm … -o show` (2.1.x libopeniscsiusr order,
// `<empty>` placeholders, masked passwords) and as stored on disk (idbm order, empty values omitted,
// passwords in clear text — only in these files, like the real tool).
// Key lists and defaults follow ../../../shared/reference/open-iscsi.md §2.3, §2.5 and §3.

export const ISCSI_VERSION = '2.1.8';
export const EMPTY = '<empty>';
export const MASKED = '********';
export const BEGIN_RECORD = `# BEGIN RECORD ${ISCSI_VERSION}`;
export const END_RECORD = '# END RECORD';
/** tpgt of a record created with `-o new` and no `,tpgt` in the portal */
export const TPGT_UNKNOWN = -1;
export const DEFAULT_PORT = 3260;

export type Rec = Record<string, string>;

type Kind = 'str' | 'int';
interface KeySpec { key: string; kind: Kind; def: string }

const s = (key: string, def = ''): KeySpec => ({ key, kind: 'str', def });
const n = (key: string, def = '0'): KeySpec => ({ key, kind: 'int', def });

/** iface keys in the order `iscsiadm -m iface -I X` prints them (2.1.8, see real-outputs.md). */
export const IFACE_KEYS: KeySpec[] = [
  s('iface.iscsi_ifacename'), s('iface.net_ifacename'), s('iface.ipaddress'), n('iface.prefix_len'),
  s('iface.hwaddress'), s('iface.transport_name'), s('iface.initiatorname'), s('iface.state'),
  n('iface.vlan_id'), n('iface.vlan_priority'), s('iface.vlan_state'), n('iface.iface_num'), n('iface.mtu'),
  n('iface.port'), s('iface.bootproto'), s('iface.subnet_mask'), s('iface.gateway'),
  s('iface.dhcp_alt_client_id_state'), s('iface.dhcp_alt_client_id'), s('iface.dhcp_dns'),
  s('iface.dhcp_learn_iqn'), s('iface.dhcp_req_vendor_id_state'), s('iface.dhcp_vendor_id_state'),
  s('iface.dhcp_vendor_id'), s('iface.dhcp_slp_da'), s('iface.fragmentation'), s('iface.gratuitous_arp'),
  s('iface.incoming_forwarding'), s('iface.tos_state'), n('iface.tos'), n('iface.ttl'), s('iface.delayed_ack'),
  s('iface.tcp_nagle'), s('iface.tcp_wsf_state'), n('iface.tcp_wsf'), n('iface.tcp_timer_scale'),
  s('iface.tcp_timestamp'), s('iface.redirect'), n('iface.def_task_mgmt_timeout'), s('iface.header_digest'),
  s('iface.data_digest'), s('iface.immediate_data'), s('iface.initial_r2t'), s('iface.data_seq_inorder'),
  s('iface.data_pdu_inorder'), n('iface.erl'), n('iface.max_receive_data_len'), n('iface.first_burst_len'),
  n('iface.max_outstanding_r2t'), n('iface.max_burst_len'), s('iface.chap_auth'), s('iface.bidi_chap'),
  s('iface.strict_login_compliance'), s('iface.discovery_auth'), s('iface.discovery_logout'),
];

const NODE_HEAD: KeySpec[] = [s('node.name'), n('node.tpgt', '-1'), s('node.startup', 'manual'), s('node.leading_login', 'No')];

const NODE_TAIL: KeySpec[] = [
  s('node.discovery_address'), n('node.discovery_port'), s('node.discovery_type', 'static'),
  n('node.session.initial_cmdsn'), n('node.session.initial_login_retry_max', '8'),
  n('node.session.xmit_thread_priority', '-20'), n('node.session.cmds_max', '128'),
  n('node.session.queue_depth', '32'), n('node.session.nr_sessions', '1'),
  s('node.session.auth.authmethod', 'None'), s('node.session.auth.username'), s('node.session.auth.password'),
  s('node.session.auth.username_in'), s('node.session.auth.password_in'), s('node.session.auth.chap_algs', 'MD5'),
  n('node.session.timeo.replacement_timeout', '120'), n('node.session.err_timeo.abort_timeout', '15'),
  n('node.session.err_timeo.lu_reset_timeout', '30'), n('node.session.err_timeo.tgt_reset_timeout', '30'),
  n('node.session.err_timeo.host_reset_timeout', '60'), s('node.session.iscsi.FastAbort', 'Yes'),
  s('node.session.iscsi.InitialR2T', 'No'), s('node.session.iscsi.ImmediateData', 'Yes'),
  n('node.session.iscsi.FirstBurstLength', '262144'), n('node.session.iscsi.MaxBurstLength', '16776192'),
  n('node.session.iscsi.DefaultTime2Retain'), n('node.session.iscsi.DefaultTime2Wait', '2'),
  n('node.session.iscsi.MaxConnections', '1'), n('node.session.iscsi.MaxOutstandingR2T', '1'),
  n('node.session.iscsi.ERL'), s('node.session.scan', 'auto'), n('node.session.reopen_max'),
  s('node.conn[0].address'), n('node.conn[0].port', String(DEFAULT_PORT)), s('node.conn[0].startup', 'manual'),
  n('node.conn[0].tcp.window_size', '524288'), n('node.conn[0].tcp.type_of_service'),
  n('node.conn[0].timeo.logout_timeout', '15'), n('node.conn[0].timeo.login_timeout', '15'),
  n('node.conn[0].timeo.auth_timeout', '45'), n('node.conn[0].timeo.noop_out_interval', '5'),
  n('node.conn[0].timeo.noop_out_timeout', '5'), n('node.conn[0].iscsi.MaxXmitDataSegmentLength'),
  n('node.conn[0].iscsi.MaxRecvDataSegmentLength', '262144'), s('node.conn[0].iscsi.HeaderDigest', 'None'),
  s('node.conn[0].iscsi.DataDigest', 'None'), s('node.conn[0].iscsi.IFMarker', 'No'),
  s('node.conn[0].iscsi.OFMarker', 'No'),
];

/** Node record keys in `-o show` order (libopeniscsiusr, 2.1.x). */
export const NODE_KEYS: KeySpec[] = [...NODE_HEAD, ...IFACE_KEYS, ...NODE_TAIL];

/** The first iface keys of the on-disk order (usr/idbm.c idbm_recinfo_node), which differs from show. */
const FILE_IFACE_FIRST = [
  'iface.hwaddress', 'iface.ipaddress', 'iface.iscsi_ifacename', 'iface.net_ifacename', 'iface.gateway',
  'iface.subnet_mask', 'iface.prefix_len', 'iface.transport_name', 'iface.initiatorname', 'iface.state',
  'iface.vlan_id', 'iface.vlan_priority', 'iface.vlan_state', 'iface.iface_num', 'iface.mtu', 'iface.port',
];
const FILE_IFACE_KEYS: KeySpec[] = [
  ...FILE_IFACE_FIRST.map((k) => IFACE_KEYS.find((x) => x.key === k)!),
  ...IFACE_KEYS.filter((x) => !FILE_IFACE_FIRST.includes(x.key)),
];
const NODE_FILE_KEYS: KeySpec[] = [...NODE_HEAD, ...FILE_IFACE_KEYS, ...NODE_TAIL];

/** sendtargets discovery record (st_config), usr/idbm.c idbm_recinfo_discovery() order. */
export const DISCOVERY_KEYS: KeySpec[] = [
  s('discovery.startup', 'manual'), s('discovery.type', 'sendtargets'), s('discovery.sendtargets.address'),
  n('discovery.sendtargets.port', String(DEFAULT_PORT)), s('discovery.sendtargets.auth.authmethod', 'None'),
  s('discovery.sendtargets.auth.username'), s('discovery.sendtargets.auth.password'),
  s('discovery.sendtargets.auth.username_in'), s('discovery.sendtargets.auth.password_in'),
  s('node.session.auth.chap_algs', 'MD5'), n('discovery.sendtargets.timeo.login_timeout', '15'),
  s('discovery.sendtargets.use_discoveryd', 'No'), n('discovery.sendtargets.discoveryd_poll_inval', '30'),
  n('discovery.sendtargets.reopen_max', '5'), n('discovery.sendtargets.timeo.auth_timeout', '45'),
  n('discovery.sendtargets.timeo.active_timeout', '30'),
  n('discovery.sendtargets.iscsi.MaxRecvDataSegmentLength', '32768'),
];

const SECRET_KEY_RE = /\.password(_in)?$/;
export const isSecretKey = (key: string): boolean => SECRET_KEY_RE.test(key);

export type RecordKind = 'node' | 'iface' | 'discovery';
const SHOW_KEYS: Record<RecordKind, KeySpec[]> = { node: NODE_KEYS, iface: IFACE_KEYS, discovery: DISCOVERY_KEYS };
const FILE_KEYS: Record<RecordKind, KeySpec[]> = { node: NODE_FILE_KEYS, iface: IFACE_KEYS, discovery: DISCOVERY_KEYS };

export function knownKey(kind: RecordKind, key: string): boolean {
  return SHOW_KEYS[kind].some((k) => k.key === key);
}

export function defaults(kind: RecordKind): Rec {
  return Object.fromEntries(SHOW_KEYS[kind].map((k) => [k.key, k.def]));
}

/** `-o show` text: every key, `<empty>` for empty strings, passwords masked unless `showSecrets` (-S). */
export function formatShow(kind: RecordKind, rec: Rec, showSecrets = false): string {
  const lines = [BEGIN_RECORD];
  for (const spec of SHOW_KEYS[kind]) {
    const v = rec[spec.key] ?? spec.def;
    let shown = v === '' ? (spec.kind === 'int' ? '0' : EMPTY) : v;
    if (isSecretKey(spec.key) && v !== '' && !showSecrets) shown = MASKED;
    lines.push(`${spec.key} = ${shown}`);
  }
  lines.push(END_RECORD);
  return lines.join('\n') + '\n';
}

/** On-disk text: empty strings omitted, numbers always written, passwords in clear text. */
export function formatFile(kind: RecordKind, rec: Rec): string {
  const lines = [BEGIN_RECORD];
  for (const spec of FILE_KEYS[kind]) {
    const v = rec[spec.key] ?? spec.def;
    if (v === '' && spec.kind === 'str') continue;
    lines.push(`${spec.key} = ${v === '' ? '0' : v}`);
  }
  lines.push(END_RECORD);
  return lines.join('\n') + '\n';
}

/**
 * Reader like libopeniscsiusr's _idbm_recs_read(): comments and blank lines skipped, the name runs up
 * to whitespace or '=', the value is the rest of the line (spaces inside kept).
 */
export function parseRecordText(text: string): Rec {
  const rec: Rec = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([^\s=]+)\s*=\s*(.*)$/.exec(line);
    if (m) rec[m[1]!] = m[2]!;
  }
  return rec;
}

/** Keys of iscsid.conf that seed new node records (node.*), read like any record file. */
export function nodeDefaultsFromConf(confText: string): Rec {
  const conf = parseRecordText(confText);
  return Object.fromEntries(Object.entries(conf).filter(([k]) => k.startsWith('node.') && knownKey('node', k)));
}

export function discoveryDefaultsFromConf(confText: string): Rec {
  const conf = parseRecordText(confText);
  return Object.fromEntries(Object.entries(conf).filter(([k]) => k.startsWith('discovery.') && knownKey('discovery', k)));
}

/** The iscsid.conf the simulated host ships: Debian's defaults (node.startup = manual). */
export const DEFAULT_ISCSID_CONF = `# Simulated host: open-iscsi ${ISCSI_VERSION} settings (Debian defaults)
iscsid.startup = /bin/systemctl start iscsid.socket
node.startup = manual
node.leading_login = No
node.session.timeo.replacement_timeout = 120
node.conn[0].timeo.login_timeout = 15
node.conn[0].timeo.logout_timeout = 15
node.conn[0].timeo.noop_out_interval = 5
node.conn[0].timeo.noop_out_timeout = 5
node.session.err_timeo.abort_timeout = 15
node.session.err_timeo.lu_reset_timeout = 30
node.session.err_timeo.tgt_reset_timeout = 30
node.session.initial_login_retry_max = 8
node.session.cmds_max = 128
node.session.queue_depth = 32
node.session.xmit_thread_priority = -20
node.session.iscsi.InitialR2T = No
node.session.iscsi.ImmediateData = Yes
node.session.iscsi.FirstBurstLength = 262144
node.session.iscsi.MaxBurstLength = 16776192
node.conn[0].iscsi.MaxRecvDataSegmentLength = 262144
node.conn[0].iscsi.MaxXmitDataSegmentLength = 0
discovery.sendtargets.iscsi.MaxRecvDataSegmentLength = 32768
node.session.nr_sessions = 1
node.session.reopen_max = 0
node.session.iscsi.FastAbort = Yes
node.session.scan = auto
`;

/** A portal as given to `-p`: ip, ip:port, [v6], [v6]:port, host, host:port, optional ",tpgt". */
export interface Portal { address: string; port: number; tpgt: number }

export function parsePortal(text: string): Portal {
  let rest = text;
  let tpgt = TPGT_UNKNOWN;
  const comma = /,(\d+)$/.exec(rest);
  if (comma) {
    tpgt = Number(comma[1]);
    rest = rest.slice(0, comma.index);
  }
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(rest);
  if (bracket) return { address: bracket[1]!, port: bracket[2] ? Number(bracket[2]) : DEFAULT_PORT, tpgt };
  const colons = rest.split(':').length - 1;
  if (colons >= 2) return { address: rest, port: DEFAULT_PORT, tpgt }; // bare IPv6
  const [address, port] = rest.split(':');
  return { address: address!, port: port ? Number(port) : DEFAULT_PORT, tpgt };
}

/** `addr:port` with the address bracketed when it has no '.', like iscsiadm's listings. */
export function portalText(address: string, port: number): string {
  return `${address.includes('.') ? address : `[${address}]`}:${port}`;
}

/** tpgt as `-m node` prints it: 2.1.8 prints an unknown (-1) tpgt as unsigned (see real-outputs.md). */
export function tpgtListText(tpgt: number): string {
  return String(tpgt < 0 ? tpgt >>> 0 : tpgt);
}
