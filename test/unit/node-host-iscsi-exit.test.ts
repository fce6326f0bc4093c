import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { ISCSI_EXIT, iscsiExitError, iscsiExitMessage, iscsiExitName } from '../../src/node-host/iscsi-exit.js';

// include/iscsi_err.h and usr/iscsi_err.c, as tabulated in open-iscsi.md §1
const TABLE: [number, string, string][] = [
  [0, 'SUCCESS', ''],
  [1, 'ERR', 'unknown error'],
  [2, 'SESS_NOT_FOUND', 'session not found'],
  [3, 'NOMEM', 'no available memory'],
  [4, 'TRANS', 'encountered connection failure'],
  [5, 'LOGIN', 'encountered iSCSI login failure'],
  [6, 'IDBM', 'encountered iSCSI database failure'],
  [7, 'INVAL', 'invalid parameter'],
  [8, 'TRANS_TIMEOUT', 'connection timed out'],
  [9, 'INTERNAL', 'internal error'],
  [10, 'LOGOUT', 'encountered iSCSI logout failure'],
  [11, 'PDU_TIMEOUT', 'iSCSI PDU timed out'],
  [12, 'TRANS_NOT_FOUND', 'iSCSI driver not found. Please make sure it is loaded, and retry the operation'],
  [13, 'ACCESS', 'daemon access denied'],
  [14, 'TRANS_CAPS', 'iSCSI driver does not support requested capability.'],
  [15, 'SESS_EXISTS', 'session exists'],
  [16, 'INVALID_MGMT_REQ', 'Unknown request'],
  [17, 'ISNS_UNAVAILABLE', 'iSNS service not supported'],
  [18, 'ISCSID_COMM_ERR', 'could not communicate to iscsid'],
  [19, 'FATAL_LOGIN', 'encountered non-retryable iSCSI login failure'],
  [20, 'ISCSID_NOTCONN', 'could not connect to iscsid'],
  [21, 'NO_OBJS_FOUND', 'no objects found'],
  [22, 'SYSFS_LOOKUP', 'sysfs lookup failure'],
  [23, 'HOST_NOT_FOUND', 'host not found'],
  [24, 'LOGIN_AUTH_FAILED', 'iSCSI login failed due to authorization failure'],
  [25, 'ISNS_QUERY', 'iSNS query failed'],
  [26, 'ISNS_REG_FAILED', 'iSNS registration failed'],
  [27, 'OP_NOT_SUPP', 'operation not supported'],
  [28, 'BUSY', 'device or resource in use'],
  [29, 'AGAIN', 'operation failed but retry may succeed'],
  [30, 'UNKNOWN_DISCOVERY_TYPE', 'unknown discovery type'],
  [31, 'CHILD_TERMINATED', 'child process terminated'],
  [32, 'SESSION_NOT_CONNECTED', 'target likely not connected'],
  [33, 'REQ_TIMEDOUT', 'iscsid request timed out'],
];

describe('open-iscsi exit codes', () => {
  it.each(TABLE)('exit %i is %s: "%s"', (code, name, human) => {
    expect(ISCSI_EXIT[name as keyof typeof ISCSI_EXIT]).toBe(code);
    expect(iscsiExitName(code)).toBe(name);
    expect(iscsiExitMessage(code)).toBe(human);
  });

  it('names every code 0..33 and nothing else', () => {
    expect(Object.keys(ISCSI_EXIT)).toHaveLength(34);
    expect(iscsiExitName(34)).toBe('UNKNOWN');
    expect(iscsiExitName(127)).toBe('UNKNOWN');
    expect(iscsiExitMessage(127)).toBe('unknown exit status 127');
  });

  it('maps failures to gRPC codes an operator can act on', () => {
    expect(iscsiExitError(24, 'm').code).toBe(status.FAILED_PRECONDITION); // CHAP/ACL
    expect(iscsiExitError(19, 'm').code).toBe(status.FAILED_PRECONDITION);
    expect(iscsiExitError(12, 'm').code).toBe(status.FAILED_PRECONDITION); // module not loaded
    expect(iscsiExitError(8, 'm').code).toBe(status.UNAVAILABLE); // connection timed out
    expect(iscsiExitError(20, 'm').code).toBe(status.UNAVAILABLE); // iscsid down
    expect(iscsiExitError(21, 'm').code).toBe(status.NOT_FOUND);
    expect(iscsiExitError(7, 'm').code).toBe(status.INVALID_ARGUMENT);
    expect(iscsiExitError(6, 'm').code).toBe(status.INTERNAL);
    expect(iscsiExitError(99, 'the message').message).toBe('the message');
    expect(iscsiExitError(4, 'm').code).toBe(status.UNAVAILABLE); // connection failure: transient, 24 above is not
  });
});
