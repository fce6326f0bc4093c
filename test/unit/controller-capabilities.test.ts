import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { checkPublish, needsNodeExpansion, parseCapabilities, capabilitySummary } from '../../src/controller/capabilities.js';
import type { AccessModeMode, VolumeCapability } from '../../src/csi/types.js';

const mount = (mode: AccessModeMode, fs_type = ''): VolumeCapability => ({ access_mode: { mode }, access_type: 'mount', mount: { fs_type, mount_flags: [], volume_mount_group: '' } });
const block = (mode: AccessModeMode): VolumeCapability => ({ access_mode: { mode }, access_type: 'block', block: {} });

function codeOf(fn: () => unknown): number | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    return (e as { code: number }).code;
  }
}

describe('volume capabilities', () => {
  it('accepts block and mount with single-node and read-only modes', () => {
    expect(capabilitySummary(mount('SINGLE_NODE_WRITER', 'xfs'))).toEqual({ accessType: 'mount', mode: 'SINGLE_NODE_WRITER', fsType: 'xfs' });
    expect(capabilitySummary(block('MULTI_NODE_MULTI_WRITER'))).toEqual({ accessType: 'block', mode: 'MULTI_NODE_MULTI_WRITER' });
    expect(capabilitySummary(mount('MULTI_NODE_READER_ONLY')).mode).toBe('MULTI_NODE_READER_ONLY');
  });

  it('refuses multi-node writers on a filesystem, a missing access type or mode, and unknown filesystems', () => {
    expect(codeOf(() => capabilitySummary(mount('MULTI_NODE_MULTI_WRITER')))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => capabilitySummary(mount('MULTI_NODE_SINGLE_WRITER')))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => capabilitySummary({ access_mode: { mode: 'SINGLE_NODE_WRITER' } }))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => capabilitySummary({ access_mode: null, access_type: 'block', block: {} }))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => capabilitySummary(mount('SINGLE_NODE_WRITER', 'ntfs')))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => capabilitySummary(null))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => parseCapabilities([]))).toBe(status.INVALID_ARGUMENT);
  });

  it('asks the node to grow the filesystem only for mount volumes', () => {
    expect(needsNodeExpansion(parseCapabilities([mount('SINGLE_NODE_WRITER')]))).toBe(true);
    expect(needsNodeExpansion(parseCapabilities([block('SINGLE_NODE_WRITER')]))).toBe(false);
  });
});

describe('publish rules', () => {
  const rw = { readonly: false, mode: 'SINGLE_NODE_WRITER' as AccessModeMode };

  it('treats a repeat to the same node as idempotent and a readonly change as ALREADY_EXISTS', () => {
    expect(checkPublish('v', {}, 'n1', rw)).toBe('new');
    expect(checkPublish('v', { n1: rw }, 'n1', rw)).toBe('exists');
    expect(codeOf(() => checkPublish('v', { n1: rw }, 'n1', { ...rw, readonly: true }))).toBe(status.ALREADY_EXISTS);
  });

  it('refuses a second node for single-node modes', () => {
    expect(codeOf(() => checkPublish('v', { n1: rw }, 'n2', rw))).toBe(status.FAILED_PRECONDITION);
    expect(codeOf(() => checkPublish('v', { n1: rw }, 'n2', { readonly: true, mode: 'MULTI_NODE_READER_ONLY' }))).toBe(status.FAILED_PRECONDITION);
  });

  it('allows several nodes for multi-node modes, one writer for MULTI_NODE_SINGLE_WRITER', () => {
    const multi = { readonly: false, mode: 'MULTI_NODE_MULTI_WRITER' as AccessModeMode };
    expect(checkPublish('v', { n1: multi }, 'n2', multi)).toBe('new');
    const single = { readonly: false, mode: 'MULTI_NODE_SINGLE_WRITER' as AccessModeMode };
    expect(codeOf(() => checkPublish('v', { n1: single }, 'n2', single))).toBe(status.FAILED_PRECONDITION);
    expect(checkPublish('v', { n1: single }, 'n2', { ...single, readonly: true })).toBe('new');
  });
});
