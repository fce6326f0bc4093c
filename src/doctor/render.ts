// The doctor's report for people (a table: check, status, detail, fix, with the long columns wrapped to
// the terminal) and for machines (one JSON document).
import type { Check } from './check.js';
import type { DoctorReport } from './run.js';

export const DEFAULT_WIDTH = 120;
const MIN_TEXT_COLUMN = 24;
const GAP = '  ';
const HEADERS = { name: 'CHECK', status: 'STATUS', detail: 'DETAIL', fix: 'FIX' };

/** Splits text into lines of at most `width` characters at spaces. */
export function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  // a word longer than the column (a path) is cut into pieces of the column's width
  const words = text.split(/\s+/).filter(Boolean).flatMap((w) => (w.length <= width ? [w] : w.match(new RegExp(`.{1,${width}}`, 'g'))!));
  for (const word of words) {
    if (!line) line = word;
    else if (line.length + 1 + word.length <= width) line += ` ${word}`;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line) lines.push(line);
  return lines.length ? lines : [''];
}

export function renderTable(report: DoctorReport, width = DEFAULT_WIDTH): string {
  const rows = report.checks;
  const nameW = Math.max(HEADERS.name.length, ...rows.map((c) => c.name.length));
  const statusW = Math.max(HEADERS.status.length, ...rows.map((c) => c.status.length));
  const text = Math.max(2 * MIN_TEXT_COLUMN, width - nameW - statusW - 3 * GAP.length);
  const detailW = Math.ceil(text / 2);
  const fixW = text - detailW;
  const out: string[] = [];
  const row = (name: string, status: string, detail: string[], fix: string[]): void => {
    const n = Math.max(detail.length, fix.length);
    for (let i = 0; i < n; i++) {
      const cells = [i === 0 ? name : '', i === 0 ? status : '', detail[i] ?? '', fix[i] ?? ''];
      out.push([cells[0]!.padEnd(nameW), cells[1]!.padEnd(statusW), cells[2]!.padEnd(detailW), cells[3]!].join(GAP).trimEnd());
    }
  };
  row(HEADERS.name, HEADERS.status, [HEADERS.detail], [HEADERS.fix]);
  for (const c of rows) {
    out.push('');
    row(c.name, c.status, wrap(c.detail, detailW), c.fix ? wrap(c.fix, fixW) : ['']);
  }
  const s = report.summary;
  out.push('', `${report.mode === 'all' ? 'node and controller' : report.mode} checks: ${s.ok} ok, ${s.warn} warn, ${s.fail} fail`);
  for (const note of report.notes) out.push(...wrap(note, width));
  return out.join('\n') + '\n';
}

/** Every check with name, status, detail and fix (null when ok), the counts and the notes. */
export function renderJson(report: DoctorReport): string {
  const checks = report.checks.map((c: Check) => ({ name: c.name, status: c.status, detail: c.detail, fix: c.fix ?? null }));
  return JSON.stringify({ mode: report.mode, checks, summary: report.summary, notes: report.notes }, null, 2) + '\n';
}
