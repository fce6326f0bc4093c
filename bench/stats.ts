// Small numeric and text helpers for the benchmark's report.

/** Nearest-rank percentile (p in 0..100) of the values; NaN for none. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

export function max(values: number[]): number {
  return values.length === 0 ? Number.NaN : Math.max(...values);
}

/** Milliseconds with a precision that fits the magnitude. */
export function ms(v: number): string {
  if (Number.isNaN(v)) return '-';
  if (Math.abs(v) >= 1000) return `${(v / 1000).toFixed(2)} s`;
  if (Math.abs(v) >= 100) return `${v.toFixed(0)} ms`;
  if (Math.abs(v) >= 10) return `${v.toFixed(1)} ms`;
  return `${v.toFixed(2)} ms`;
}

/** Counts of each key, as "a ×3, b ×1" sorted by count then name. */
export function tally(keys: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const k of keys) m.set(k, (m.get(k) ?? 0) + 1);
  return new Map([...m].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
}

export function formatTally(t: Map<string, number>, divisor = 1): string {
  if (t.size === 0) return 'none';
  const fmt = (n: number): string => (Number.isInteger(n) ? String(n) : n.toFixed(1));
  return [...t].map(([k, n]) => `${k} ×${fmt(n / divisor)}`).join(', ');
}

/** A plain-text table: first row is the header; columns padded, numbers right-aligned. */
export function table(rows: string[][], indent = '  '): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const numeric = (c: string): boolean => /^[\d.\-×x<>= ]+( ?(ms|s|%|×))?$/.test(c) && c !== '-';
  const line = (r: string[]): string => indent + r.map((c, i) => (i > 0 && numeric(c) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const out = [line(rows[0]!), indent + widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const r of rows.slice(1)) out.push(line(r));
  return out.join('\n');
}

/** Length of the overlap of two intervals (0 when disjoint). */
export function overlap(a: { start: number; end: number }, b: { start: number; end: number }): number {
  return Math.max(0, Math.min(a.end, b.end) - Math.max(a.start, b.start));
}

/** A command-line flag's value as an integer of at least `min`, or an error naming the flag. */
export function intOption(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, not ${v}`);
  return n;
}
