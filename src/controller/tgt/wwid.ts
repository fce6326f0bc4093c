// The WWID a Linux initiator shows for a tgt LUN (`/sys/block/sdX/device/wwid`), from the SCSI ID the
// backend gives the LUN. tgtd's VPD page 0x83 carries three LU designators (captured from tgtd 1.0.85,
// test/fixtures/vpd): a T10 vendor id (the SCSI ID string), an 8-byte NAA 3 (locally assigned, from the
// tid and LUN number) and a 16-byte NAA 6 that tgt builds from the SCSI ID read as hex digits, one
// nibble per character (a non-hex character counts as 0), the last 32 kept, the first nibble set to 6.
// The kernel prefers the NAA 6 (IEEE Registered Extended) designator and prints it `naa.<32 hex>`.

const NAA6_NIBBLES = 32;

/** The 32 lowercase hex digits of tgt's NAA 6 designator for a LUN with this SCSI ID. */
export function tgtNaa6(scsiId: string): string {
  const nibbles = [...scsiId].map((ch) => (/[0-9a-f]/i.test(ch) ? ch.toLowerCase() : '0')).join('');
  const last = nibbles.slice(-NAA6_NIBBLES).padStart(NAA6_NIBBLES, '0');
  return `6${last.slice(1)}`;
}

/** `naa.<tgt's NAA 6>`: the kernel's wwid of the LUN. */
export function tgtLunWwid(scsiId: string): string {
  return `naa.${tgtNaa6(scsiId)}`;
}
