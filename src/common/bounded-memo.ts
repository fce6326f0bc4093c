// The last value seen per key, for at most `maxEntries` keys: the oldest written key is forgotten first,
// so a node that publishes a new target path for every pod over years keeps a bounded memo.
export class BoundedMemo<K, V> {
  private readonly values = new Map<K, V>();

  constructor(private readonly maxEntries: number) {}

  get(key: K): V | undefined {
    return this.values.get(key);
  }

  set(key: K, value: V): void {
    this.values.delete(key); // re-inserted: now the newest
    this.values.set(key, value);
    if (this.values.size > this.maxEntries) this.values.delete(this.values.keys().next().value as K);
  }

  delete(key: K): void {
    this.values.delete(key);
  }
}
