/**
 * FLOP and parameter accounting. Conventions: one multiply-add is 2 FLOPs; counts are forward-pass
 * FLOPs per token unless a name says otherwise (a training step is about 3× forward).
 */
import type * as tf from '@tensorflow/tfjs';
import { checkNumber } from './errors.js';

/**
 * FLOPs of `[m, k] x [k, n]`.
 *
 * @param m - rows of the left operand
 * @param k - the contracted dimension
 * @param n - columns of the right operand
 * @returns `2·m·k·n`
 * @throws {@link ConfigError} for a negative or fractional size
 */
export function matmulFlops(m: number, k: number, n: number): number {
  checkNumber('matmulFlops', 'm', m, { integer: true, min: 0 });
  checkNumber('matmulFlops', 'k', k, { integer: true, min: 0 });
  checkNumber('matmulFlops', 'n', n, { integer: true, min: 0 });
  return 2 * m * k * n;
}

/**
 * The number of scalars in a set of tensors or shapes.
 *
 * @param items - tensors, variables or shapes
 * @returns the total element count
 */
export function countParameters(items: Iterable<tf.Tensor | readonly number[]>): number {
  let total = 0;
  for (const item of items) {
    total += Array.isArray(item) ? (item as readonly number[]).reduce((a, b) => a * b, 1) : (item as tf.Tensor).size;
  }
  return total;
}

/**
 * Formats a count with an SI suffix: `1234` -> `'1.23k'`, `5.2e6` -> `'5.20M'`.
 *
 * @param value - the count
 * @returns a short string with three significant digits
 */
export function formatCount(value: number): string {
  const units: [number, string][] = [
    [1e12, 'T'],
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k'],
  ];
  for (const [scale, suffix] of units) {
    if (Math.abs(value) >= scale) return `${(value / scale).toPrecision(3)}${suffix}`;
  }
  return String(Math.round(value * 1000) / 1000);
}
