// open-iscsi exit codes (include/iscsi_err.h, enum iscsi_error_list) and the strings iscsiadm prints for
// them (usr/iscsi_err.c, iscsi_err_msgs[]), plus how the driver classifies each one. iscsiadm returns the
// first error it met as its exit status, so the status alone tells a flow what happened.
import { CsiError, FailedPrecondition, Internal, InvalidArgument, NotFound, Unavailable } from '../errors.js';

export const ISCSI_EXIT = {
  SUCCESS: 0,
  ERR: 1,
  SESS_NOT_FOUND: 2,
  NOMEM: 3,
  TRANS: 4,
  LOGIN: 5,
  IDBM: 6,
  INVAL: 7,
  TRANS_TIMEOUT: 8,
  INTERNAL: 9,
  LOGOUT: 10,
  PDU_TIMEOUT: 11,
  TRANS_NOT_FOUND: 12,
  ACCESS: 13,
  TRANS_CAPS: 14,
  SESS_EXISTS: 15,
  INVALID_MGMT_REQ: 16,
  ISNS_UNAVAILABLE: 17,
  ISCSID_COMM_ERR: 18,
  FATAL_LOGIN: 19,
  ISCSID_NOTCONN: 20,
  NO_OBJS_FOUND: 21,
  SYSFS_LOOKUP: 22,
  HOST_NOT_FOUND: 23,
  LOGIN_AUTH_FAILED: 24,
  ISNS_QUERY: 25,
  ISNS_REG_FAILED: 26,
  OP_NOT_SUPP: 27,
  BUSY: 28,
  AGAIN: 29,
  UNKNOWN_DISCOVERY_TYPE: 30,
  CHILD_TERMINATED: 31,
  SESSION_NOT_CONNECTED: 32,
  REQ_TIMEDOUT: 33,
} as const;

export type IscsiExitName = keyof typeof ISCSI_EXIT;
/** A name for every exit status, including ones open-iscsi does not define (e.g. a wrapper's 127). */
export type IscsiExitCode = IscsiExitName | 'UNKNOWN';

/** The text iscsiadm uses in `initiator reported error (N - <text>)`, verbatim. */
const HUMAN: Record<IscsiExitName, string> = {
  SUCCESS: '',
  ERR: 'unknown error',
  SESS_NOT_FOUND: 'session not found',
  NOMEM: 'no available memory',
  TRANS: 'encountered connection failure',
  LOGIN: 'encountered iSCSI login failure',
  IDBM: 'encountered iSCSI database failure',
  INVAL: 'invalid parameter',
  TRANS_TIMEOUT: 'connection timed out',
  INTERNAL: 'internal error',
  LOGOUT: 'encountered iSCSI logout failure',
  PDU_TIMEOUT: 'iSCSI PDU timed out',
  TRANS_NOT_FOUND: 'iSCSI driver not found. Please make sure it is loaded, and retry the operation',
  ACCESS: 'daemon access denied',
  TRANS_CAPS: 'iSCSI driver does not support requested capability.',
  SESS_EXISTS: 'session exists',
  INVALID_MGMT_REQ: 'Unknown request',
  ISNS_UNAVAILABLE: 'iSNS service not supported',
  ISCSID_COMM_ERR: 'could not communicate to iscsid',
  FATAL_LOGIN: 'encountered non-retryable iSCSI login failure',
  ISCSID_NOTCONN: 'could not connect to iscsid',
  NO_OBJS_FOUND: 'no objects found',
  SYSFS_LOOKUP: 'sysfs lookup failure',
  HOST_NOT_FOUND: 'host not found',
  LOGIN_AUTH_FAILED: 'iSCSI login failed due to authorization failure',
  ISNS_QUERY: 'iSNS query failed',
  ISNS_REG_FAILED: 'iSNS registration failed',
  OP_NOT_SUPP: 'operation not supported',
  BUSY: 'device or resource in use',
  AGAIN: 'operation failed but retry may succeed',
  UNKNOWN_DISCOVERY_TYPE: 'unknown discovery type',
  CHILD_TERMINATED: 'child process terminated',
  SESSION_NOT_CONNECTED: 'target likely not connected',
  REQ_TIMEDOUT: 'iscsid request timed out',
};

const BY_CODE: ReadonlyMap<number, IscsiExitName> = new Map(
  (Object.entries(ISCSI_EXIT) as [IscsiExitName, number][]).map(([name, code]) => [code, name]),
);

export function iscsiExitName(exit: number): IscsiExitCode {
  return BY_CODE.get(exit) ?? 'UNKNOWN';
}

/** iscsiadm's own description of an exit status (`unknown exit status N` outside 0..33). */
export function iscsiExitMessage(exit: number): string {
  const name = BY_CODE.get(exit);
  return name === undefined ? `unknown exit status ${exit}` : HUMAN[name];
}

/**
 * Failures a retry can cure without anyone changing configuration: the network, the target or iscsid
 * were briefly unavailable. kubelet retries every call, so these become UNAVAILABLE.
 */
const TRANSIENT: ReadonlySet<IscsiExitCode> = new Set<IscsiExitCode>([
  'TRANS', 'TRANS_TIMEOUT', 'PDU_TIMEOUT', 'ISCSID_COMM_ERR', 'ISCSID_NOTCONN', 'BUSY', 'AGAIN',
  'SESSION_NOT_CONNECTED', 'REQ_TIMEDOUT', 'NOMEM', 'LOGIN', 'LOGOUT',
]);

/**
 * Failures that need an operator: wrong CHAP secret, initiator not in the target's ACL, missing kernel
 * module, iscsid refusing access.
 */
const NEEDS_OPERATOR: ReadonlySet<IscsiExitCode> = new Set<IscsiExitCode>([
  'LOGIN_AUTH_FAILED', 'FATAL_LOGIN', 'TRANS_NOT_FOUND', 'ACCESS', 'TRANS_CAPS', 'OP_NOT_SUPP',
  'UNKNOWN_DISCOVERY_TYPE', 'ISNS_UNAVAILABLE', 'HOST_NOT_FOUND',
]);

/** The typed error (gRPC code) a failed iscsiadm call with this exit status turns into. */
export function iscsiExitError(exit: number, message: string): CsiError {
  const name = iscsiExitName(exit);
  if (TRANSIENT.has(name)) return new Unavailable(message);
  if (NEEDS_OPERATOR.has(name)) return new FailedPrecondition(message);
  if (name === 'NO_OBJS_FOUND' || name === 'SESS_NOT_FOUND') return new NotFound(message);
  // The values on iscsiadm's command line come from the volume (portal, IQN, iface, CHAP user name), so
  // a value iscsiadm rejects is a problem of the request.
  if (name === 'INVAL') return new InvalidArgument(message);
  return new Internal(message);
}
