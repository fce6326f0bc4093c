// A tgt LUN's identity as the simulated kernel sees it: the VPD page 0x83 tgtd returns for it, built
// the way tgtd 1.0.85 builds it (byte for byte the page captured from a real tgtd in
// test/fixtures/vpd, see formats.test.ts), and the kernel's choice of designator for
// `device/wwid` (drivers/scsi/scsi_lib.c scsi_vpd_lun_id / designator_prio).

const T10_ID_BYTES = 36;

/** tgt's NAA-6 designator: tgt reads its SCSI ID string as hex digits, one per character, non-hex = 0. */
export function tgtNaa(scsiId: string): string {
  let v = 0n;
  const mask = (1n << 128n) - 1n;
  for (const ch of scsiId) {
    const d = /[0-9a-f]/i.test(ch) ? BigInt(parseInt(ch, 16)) : 0n;
    v = ((v << 4n) | d) & mask;
  }
  v = (v & ~(0xfn << 124n)) | (0x6n << 124n);
  return v.toString(16).padStart(32, '0');
}

/**
 * tgtd's page 0x83 for LUN `lun` of target `tid`: three LU designators, a T10 vendor id (the SCSI ID,
 * NUL-padded to 36 bytes, ASCII), an 8-byte NAA 3 (locally assigned: tid and LUN number) and the
 * 16-byte NAA 6 of the SCSI ID.
 */
export function tgtVpd83(scsiId: string, tid: number, lun: number): Buffer {
  const t10 = Buffer.alloc(4 + T10_ID_BYTES);
  t10.set([0x02, 0x01, 0x00, T10_ID_BYTES]);
  t10.write(scsiId.slice(0, T10_ID_BYTES), 4, 'latin1');
  const naa3 = Buffer.alloc(12);
  naa3.set([0x01, 0x03, 0x00, 0x08]);
  naa3.writeBigUInt64BE((0x3n << 60n) | (BigInt(tid) << 32n) | BigInt(lun), 4);
  const naa6 = Buffer.concat([Buffer.from([0x01, 0x03, 0x00, 0x10]), Buffer.from(tgtNaa(scsiId), 'hex')]);
  const body = Buffer.concat([t10, naa3, naa6]);
  const header = Buffer.from([0x00, 0x83, body.length >> 8, body.length & 0xff]);
  return Buffer.concat([header, body]);
}

/** designator_prio(): 0 = not a LU designator the kernel uses. */
function designatorPrio(d: Buffer): number {
  if ((d[1]! & 0x30) !== 0 || d[3] === 0) return 0; // not associated with the LU, or empty
  switch (d[1]! & 0x0f) {
    case 8: return 9; // SCSI name string
    case 3: return ({ 6: 8, 5: 4, 2: 3 } as Record<number, number>)[d[4]! >> 4] ?? 0; // NAA 6 / 5 / 2
    case 2: return ({ 16: 7, 12: 6, 8: 2 } as Record<number, number>)[d[3]!] ?? 0; // EUI-64
    case 1: return 1; // T10 vendor id
    default: return 0;
  }
}

/** `%*pE`: printable ASCII as is, anything else as an octal escape. */
function escapeString(bytes: Buffer): string {
  return [...bytes].map((b) => (b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\${b.toString(8).padStart(3, '0')}`)).join('');
}

/** The kernel's `device/wwid` from a page 0x83: the highest-priority LU designator (of equals, a later one at least as long), null when none. */
export function kernelWwid(page: Buffer): string | null {
  const end = Math.min(page.length, 4 + page.readUInt16BE(2));
  let best: { prio: number; size: number; text: string } | null = null;
  for (let off = 4; off + 4 <= end; off += 4 + page[off + 3]!) {
    const d = page.subarray(off, off + 4 + page[off + 3]!);
    const prio = designatorPrio(d);
    if (prio === 0 || (best && (best.prio > prio || (best.prio === prio && best.size > d[3]!)))) continue;
    const id = d.subarray(4);
    const hex = id.toString('hex');
    let text: string | null = null;
    switch (d[1]! & 0x0f) {
      case 1: text = `t10.${escapeString(id)}`; break;
      case 2: text = `eui.${hex}`; break;
      case 3: text = id.length === 8 || id.length === 16 ? `naa.${hex}` : null; break;
      case 8: text = id.subarray(0, id.indexOf(0) === -1 ? id.length : id.indexOf(0)).toString('latin1'); break;
    }
    if (text !== null) best = { prio, size: d[3]!, text };
  }
  return best?.text ?? null;
}
