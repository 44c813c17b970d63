import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { expectNoLeak } from '@moepp/tensors-core/testing';
import { clipByGlobalNorm, clipScale, globalNorm } from './clip.js';

describe('clipByGlobalNorm', () => {
  it('measures the norm over all tensors and scales them jointly (3-4-5 triangle)', async () => {
    const a = tf.tensor1d([3, 0]);
    const b = tf.tensor2d([[0], [4]]);
    expect(globalNorm([a, b])).toBeCloseTo(5, 6);
    const clipped = await expectNoLeak(() => clipByGlobalNorm([a, b], 1), 2);
    expect(clipped.norm).toBeCloseTo(5, 6);
    expect(clipped.scale).toBeCloseTo(1 / (5 + 1e-6), 9);
    expect(Array.from(clipped.gradients[0]!.dataSync())).toEqual([expect.closeTo(0.6, 6), 0]);
    expect(clipped.gradients[1]!.shape).toEqual([2, 1]);
    expect(Array.from(clipped.gradients[1]!.dataSync())).toEqual([0, expect.closeTo(0.8, 6)]);
    // The clipped gradients have the target norm.
    expect(globalNorm(clipped.gradients)).toBeCloseTo(1, 5);
    tf.dispose([a, b, ...clipped.gradients]);
  });

  it('leaves gradients below the limit unchanged and reports their norm', () => {
    const g = tf.tensor1d([0.3, -0.4]);
    const clipped = clipByGlobalNorm([g], 1);
    expect(clipped.norm).toBeCloseTo(0.5, 6);
    expect(clipped.scale).toBe(1);
    expect(Array.from(clipped.gradients[0]!.dataSync())).toEqual(Array.from(g.dataSync()));
    expect(clipped.gradients[0]).not.toBe(g); // a copy: the caller may dispose both
    tf.dispose([g, ...clipped.gradients]);
  });

  it('only measures when maxNorm is null', () => {
    const g = tf.tensor1d([30, 40]);
    const clipped = clipByGlobalNorm([g], null);
    expect(clipped.norm).toBeCloseTo(50, 4);
    expect(Array.from(clipped.gradients[0]!.dataSync())).toEqual([30, 40]);
    tf.dispose([g, ...clipped.gradients]);
  });

  it('returns a non-finite norm as is, without scaling', () => {
    const g = tf.tensor1d([1, Number.NaN]);
    const clipped = clipByGlobalNorm([g], 1);
    expect(clipped.norm).toBeNaN();
    expect(clipped.scale).toBe(1);
    tf.dispose([g, ...clipped.gradients]);
  });

  it('rejects a maxNorm that is not > 0', () => {
    expect(() => clipByGlobalNorm([], 0)).toThrow(/clipByGlobalNorm: 'maxNorm' must be a finite number > 0, got 0/);
    expect(globalNorm([])).toBe(0);
  });
});

describe('clipScale', () => {
  it('is min(1, maxNorm / (norm + 1e-6)), and 1 without clipping or for a non-finite norm', () => {
    expect(clipScale(5, 1)).toBe(1 / (5 + 1e-6));
    expect(clipScale(0.5, 1)).toBe(1);
    expect(clipScale(50, null)).toBe(1);
    expect(clipScale(Number.NaN, 1)).toBe(1);
    expect(clipScale(Infinity, 1)).toBe(1);
    expect(() => clipScale(1, -1)).toThrow(/clipScale: 'maxNorm' must be a finite number > 0, got -1/);
  });
});
