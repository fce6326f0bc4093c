// ListVolumes and ListSnapshots pagination. Volumes and snapshots are listed in creation order (each
// gets a sequence number that only grows), and a token is "everything after sequence number N".
// Deleting items between pages never shifts the next page, and one created between pages appears on a
// later page.
import { Aborted, InvalidArgument } from '../errors.js';

const TOKEN_RE = /^v1-([0-9a-z]{1,11})$/;

export function encodeToken(afterSeq: number): string {
  return `v1-${afterSeq.toString(36)}`;
}

/** Sequence number a token continues after; "" = from the start. A token this driver never issued → ABORTED. */
export function decodeToken(token: string): number {
  if (!token) return 0;
  const m = TOKEN_RE.exec(token);
  const seq = m ? parseInt(m[1]!, 36) : NaN;
  if (!Number.isSafeInteger(seq)) throw new Aborted(`starting_token ${JSON.stringify(token.slice(0, 64))} was not issued by this driver (ListVolumes, ListSnapshots); start again without a token`);
  return seq;
}

/** One page of items sorted by seq, after the token's position, at most maxEntries (0 = all). */
export function page<T extends { seq: number }>(items: readonly T[], startingToken: string, maxEntries: number): { items: T[]; nextToken: string } {
  if (!Number.isInteger(maxEntries) || maxEntries < 0) throw new InvalidArgument(`max_entries must not be negative, got ${maxEntries}`);
  const after = decodeToken(startingToken);
  const rest = items.filter((v) => v.seq > after).sort((a, b) => a.seq - b.seq);
  if (maxEntries === 0 || rest.length <= maxEntries) return { items: rest, nextToken: '' };
  const chosen = rest.slice(0, maxEntries);
  return { items: chosen, nextToken: encodeToken(chosen[chosen.length - 1]!.seq) };
}
