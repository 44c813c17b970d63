import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { countParameters, formatCount, matmulFlops } from './accounting.js';
import { ConfigError } from './errors.js';

describe('accounting', () => {
  it('counts matmul FLOPs as 2·m·k·n', () => {
    expect(matmulFlops(1024, 256, 1024)).toBe(2 * 1024 * 256 * 1024);
    expect(matmulFlops(0, 5, 7)).toBe(0);
    expect(() => matmulFlops(-1, 2, 3)).toThrow(ConfigError);
    expect(() => matmulFlops(1.5, 2, 3)).toThrow(/'m' must be an integer >= 0, got 1.5/);
  });

  it('counts parameters of tensors and shapes', () => {
    const a = tf.zeros([3, 4]);
    expect(countParameters([a, [5], [2, 2, 2]])).toBe(12 + 5 + 8);
    expect(countParameters([])).toBe(0);
    a.dispose();
  });

  it('formats counts with SI suffixes', () => {
    expect(formatCount(999)).toBe('999');
    expect(formatCount(1234)).toBe('1.23k');
    expect(formatCount(5_200_000)).toBe('5.20M');
    expect(formatCount(7.1e9)).toBe('7.10G');
  });
});
