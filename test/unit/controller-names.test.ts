import { describe, expect, it } from 'vitest';
import {
  backendOfVolumeId, backingFileNameFor, checkIqnPrefix, dedicatedTargetIqn, scsiIdsFor, sharedTargetIqn, volumeIdFor,
} from '../../src/controller/names.js';
import { MAX_ISCSI_NAME_BYTES, parseTargetIqn } from '../../src/common/validate.js';

const PREFIX = 'iqn.2026-11.dev.tsdriver';

/** Like csi-sanity's UniqueStringWithLength: a prefix, mixed case, padded to 128 characters. */
function sanityName(seed: string): string {
  return `sanity-controller-create-maxlen-${seed}-AbCdEfGhIjKlMnOpQrStUvWxYz`.padEnd(128, 'Xy');
}

describe('dedicated target names', () => {
  it('turns 128-character mixed-case names into valid IQNs within 223 bytes', () => {
    for (const seed of ['A1', 'b2', 'ÄÖÜ-ß', 'with space/and:colon']) {
      const iqn = dedicatedTargetIqn(PREFIX, sanityName(seed));
      expect(parseTargetIqn(iqn)).toBe(iqn);
      expect(Buffer.byteLength(iqn)).toBeLessThanOrEqual(MAX_ISCSI_NAME_BYTES);
      expect(iqn.startsWith(`${PREFIX}:`)).toBe(true);
    }
  });

  it('keeps names apart that differ only in case or punctuation', () => {
    const names = ['PVC-A', 'pvc-a', 'pvc_a', 'pvc.a', sanityName('x'), sanityName('X')];
    const iqns = names.map((n) => dedicatedTargetIqn(PREFIX, n));
    expect(new Set(iqns).size).toBe(names.length);
  });

  it('keeps a readable part of the name', () => {
    expect(dedicatedTargetIqn(PREFIX, 'pvc-1234')).toMatch(new RegExp(`^${PREFIX.replace(/\./g, '\\.')}:pvc-1234-[0-9a-f]{16}$`));
  });

  it('is stable for a name', () => {
    expect(dedicatedTargetIqn(PREFIX, 'Vol')).toBe(dedicatedTargetIqn(PREFIX, 'Vol'));
  });

  it('stays valid and within 223 bytes with a long prefix', () => {
    const prefix = `iqn.2026-11.${'a'.repeat(180)}.example`;
    const iqn = dedicatedTargetIqn(prefix, sanityName('long'));
    expect(Buffer.byteLength(iqn)).toBeLessThanOrEqual(MAX_ISCSI_NAME_BYTES);
    expect(parseTargetIqn(iqn)).toBe(iqn);
  });

  it('uses only the hash for a name without a usable character', () => {
    expect(dedicatedTargetIqn(PREFIX, '///')).toMatch(/:[0-9a-f]{16}$/);
  });

  it('rejects a prefix that is not an iqn prefix or leaves no room', () => {
    expect(() => checkIqnPrefix('iqn.2026-11.dev.tsdriver:x')).toThrow(/must not contain ":"/);
    expect(() => checkIqnPrefix('IQN.2026-11.dev')).toThrow();
    expect(() => checkIqnPrefix(`iqn.2026-11.${'a'.repeat(210)}`)).toThrow();
    expect(checkIqnPrefix(PREFIX)).toBe(PREFIX);
  });
});

describe('shared target names', () => {
  it('accepts simple names and rejects anything else', () => {
    expect(sharedTargetIqn(PREFIX, 'shared')).toBe(`${PREFIX}:shared`);
    for (const bad of ['Shared', 'a:b', '-x', '', 'x'.repeat(65), 'a b']) {
      expect(() => sharedTargetIqn(PREFIX, bad)).toThrow(/shared target name/);
    }
  });
});

describe('volume ids and backing files', () => {
  it('are opaque, stable, and carry no part of the name', () => {
    const id = volumeIdFor('tgt', '../../etc/passwd');
    expect(id).toMatch(/^tgt:[0-9a-f]{32}$/);
    expect(volumeIdFor('tgt', '../../etc/passwd')).toBe(id);
    expect(volumeIdFor('static', 'x')).toMatch(/^static:[0-9a-f]{32}$/);
    const file = backingFileNameFor(id);
    expect(file).toMatch(/^[0-9a-f]{32}\.img$/);
  });

  it('tell which backend issued an id', () => {
    expect(backendOfVolumeId(volumeIdFor('tgt', 'a'))).toBe('tgt');
    expect(backendOfVolumeId(volumeIdFor('static', 'a'))).toBe('static');
    expect(backendOfVolumeId('fake-vol-id-123')).toBeUndefined();
    expect(backendOfVolumeId('tgt:../../x')).toBeUndefined();
  });

  it('refuse to derive a file name from an id the driver did not issue', () => {
    expect(() => backingFileNameFor('tgt:../../x')).toThrow(/not issued/);
  });

  it('derive short, distinct SCSI ids per volume', () => {
    const a = scsiIdsFor(volumeIdFor('tgt', 'a'));
    const b = scsiIdsFor(volumeIdFor('tgt', 'b'));
    expect(a.scsiId).not.toBe(b.scsiId);
    expect(a.scsiSn).not.toBe(b.scsiSn);
    expect(a.scsiId.length).toBeLessThanOrEqual(24);
  });
});
