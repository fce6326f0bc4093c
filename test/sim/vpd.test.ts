// The simulated kernel's LUN identity against the real thing: tgtd's VPD page 0x83 as the simulator
// builds it equals, byte for byte, the page a real tgtd 1.0.85 answered (test/fixtures/vpd, captured
// by capture.sh), and the kernel's choice of designator from that real page is the `device/wwid` the
// simulator presents and the WWID the controller hands out (src/controller/tgt/wwid.ts).
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { kernelWwid, tgtVpd83 } from './vpd.js';
import { tgtLunWwid } from '../../src/controller/tgt/wwid.js';
import { scsiIdsFor } from '../../src/controller/names.js';

const FIXTURES = join(__dirname, '../fixtures/vpd');

function page(name: string): Buffer {
  return Buffer.from(readFileSync(join(FIXTURES, name), 'utf8').replace(/\s+/g, ''), 'hex');
}

const CAPTURED = [
  { file: 'tid1-lun1-scsi_id-csib0f28121d0c215df.hex', scsiId: 'csib0f28121d0c215df', tid: 1, lun: 1, wwid: 'naa.6000000000000c00b0f28121d0c215df' },
  { file: 'tid2-lun3-default-ids.hex', scsiId: 'IET     00020003', tid: 2, lun: 3, wwid: 'naa.60000000000000000e00000000020003' },
  { file: 'tid2-lun3-scsi_id-csi0123456789abcdef.hex', scsiId: 'csi0123456789abcdef', tid: 2, lun: 3, wwid: 'naa.6000000000000c000123456789abcdef' },
];

describe("tgtd's VPD page 0x83 and the kernel's wwid", () => {
  for (const c of CAPTURED) {
    it(`${c.file}: the simulator's page is tgtd's, the kernel picks ${c.wwid}`, () => {
      const real = page(c.file);
      expect(tgtVpd83(c.scsiId, c.tid, c.lun).equals(real)).toBe(true);
      expect(kernelWwid(real)).toBe(c.wwid);
      expect(tgtLunWwid(c.scsiId)).toBe(c.wwid);
    });
  }

  it("the controller's ids for a volume give the wwid the kernel shows", () => {
    const { scsiId } = scsiIdsFor('pvc-1234');
    expect(kernelWwid(tgtVpd83(scsiId, 5, 1))).toBe(tgtLunWwid(scsiId));
    expect(tgtLunWwid(scsiId)).toMatch(/^naa\.6[0-9a-f]{31}$/);
  });

  it('the kernel prefers a SCSI name string, then NAA 6, then EUI-64, then T10; NAA 3 never', () => {
    const desig = (codeSet: number, type: number, id: Buffer): Buffer => Buffer.concat([Buffer.from([codeSet, type, 0, id.length]), id]);
    const pageOf = (...ds: Buffer[]): Buffer => { const body = Buffer.concat(ds); return Buffer.concat([Buffer.from([0, 0x83, 0, body.length]), body]); };
    const t10 = desig(2, 1, Buffer.from('IET     VIRTUAL'));
    const naa3 = desig(1, 3, Buffer.from('3000000100000001', 'hex'));
    const eui = desig(1, 2, Buffer.from('0123456789abcdef', 'hex'));
    const naa6 = desig(1, 3, Buffer.from('60000000000000000e00000000010001', 'hex'));
    const name = desig(3, 8, Buffer.from('iqn.2024-01.test:lu1\0\0\0\0'));
    const target = desig(1, 0x13, Buffer.from('6000000000000000000000000000ffff', 'hex')); // associated with the target port
    expect(kernelWwid(pageOf(t10, naa3))).toBe('t10.IET     VIRTUAL');
    expect(kernelWwid(pageOf(naa3))).toBeNull();
    expect(kernelWwid(pageOf(t10, eui))).toBe('eui.0123456789abcdef');
    expect(kernelWwid(pageOf(t10, naa6, eui))).toBe('naa.60000000000000000e00000000010001');
    expect(kernelWwid(pageOf(naa6, name))).toBe('iqn.2024-01.test:lu1');
    expect(kernelWwid(pageOf(target, t10))).toBe('t10.IET     VIRTUAL');
  });
});
