import { describe, expect, it } from 'vitest';
import { BoundedMemo } from '../../src/common/bounded-memo.js';

describe('BoundedMemo', () => {
  it('keeps the last value per key and forgets the oldest written key beyond its bound', () => {
    const memo = new BoundedMemo<string, number>(2);
    memo.set('a', 1);
    memo.set('b', 2);
    memo.set('a', 3); // a is now the newest
    memo.set('c', 4);
    expect([memo.get('a'), memo.get('b'), memo.get('c')]).toEqual([3, undefined, 4]);
    memo.delete('a');
    expect(memo.get('a')).toBeUndefined();
  });
});
