import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { decodeToken, page } from '../../src/controller/pagination.js';

const vols = (seqs: number[]) => seqs.map((seq) => ({ seq, id: `v${seq}` }));

describe('ListVolumes pagination', () => {
  it('returns everything in creation order without max_entries', () => {
    const r = page(vols([3, 1, 2]), '', 0);
    expect(r.items.map((v) => v.seq)).toEqual([1, 2, 3]);
    expect(r.nextToken).toBe('');
  });

  it('walks pages with tokens until the last page has no token', () => {
    const all = vols([1, 2, 3, 4, 5]);
    const seen: number[] = [];
    let token = '';
    let pages = 0;
    do {
      const r = page(all, token, 2);
      seen.push(...r.items.map((v) => v.seq));
      token = r.nextToken;
      pages += 1;
    } while (token);
    expect(seen).toEqual([1, 2, 3, 4, 5]);
    expect(pages).toBe(3);
  });

  it('shows a volume created between pages and is not shifted by deletions on earlier pages', () => {
    const first = page(vols([1, 2, 3]), '', 2);
    expect(first.items.map((v) => v.seq)).toEqual([1, 2]);
    // both volumes of the first page are deleted, a new one (seq 4) is created
    const second = page(vols([3, 4]), first.nextToken, 0);
    expect(second.items.map((v) => v.seq)).toEqual([3, 4]);
  });

  it('answers a token it did not issue with ABORTED', () => {
    for (const bad of ['invalid-token', 'v1-', 'v2-1', 'v1-!!', 'v1-zzzzzzzzzzzzzzzz']) {
      try {
        decodeToken(bad);
        expect.unreachable(`token ${bad} was accepted`);
      } catch (e) {
        expect((e as { code: number }).code).toBe(status.ABORTED);
      }
    }
  });

  it('rejects a negative max_entries', () => {
    expect(() => page(vols([1]), '', -1)).toThrow(/max_entries/);
  });
});
