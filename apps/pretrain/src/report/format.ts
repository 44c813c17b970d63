/**
 * Number formatting shared by the console tables and report.md, so that both show the same figures
 * (and tests can check them against results.json with the same functions).
 */

/** A count with an SI suffix and three significant digits: `1.23M`. */
export function formatCount(value: number): string {
  const units: [number, string][] = [
    [1e12, 'T'],
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k'],
  ];
  for (const [scale, suffix] of units) if (Math.abs(value) >= scale) return `${(value / scale).toPrecision(3)}${suffix}`;
  return value.toPrecision(3).replace(/\.?0+$/, '');
}

/** A loss or other quantity with 4 decimals. */
export function formatLoss(value: number): string {
  return Number.isFinite(value) ? value.toFixed(4) : String(value);
}

/** A share in [0, 1] as a percentage with one decimal. */
export function formatPercent(value: number): string {
  return `${(100 * value).toFixed(1)}%`;
}

/** A ratio with two decimals and a times sign, or an en dash for null. */
export function formatRatio(value: number | null): string {
  return value === null || !Number.isFinite(value) ? '–' : `${value.toFixed(2)}×`;
}

/** A plain number with a fixed number of decimals (default 2), or an en dash for null. */
export function formatFixed(value: number | null, digits = 2): string {
  return value === null || !Number.isFinite(value) ? '–' : value.toFixed(digits);
}

/**
 * A markdown table.
 *
 * @param header - column titles
 * @param rows - cells, already formatted
 * @returns the table, one line per row
 */
export function markdownTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

/**
 * A plain-text table for the console, columns padded to their widest cell.
 *
 * @param header - column titles
 * @param rows - cells, already formatted
 * @returns the table
 */
export function textTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
