import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, ShapeError, type ExpertKind } from '@moepp/tensors-core';
import { checkGradients, expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import {
  coefficientOfVariationSquared,
  heterogeneousLoadBalanceLoss,
  importanceLoss,
  loadLoss,
  meanProbabilities,
  normalCdf,
  probabilityInTopK,
  routerZLoss,
  selectionFractions,
  switchLoadBalanceLoss,
} from './losses.js';

const scalar = (t: tf.Scalar): number => {
  const value = t.dataSync()[0] as number;
  t.dispose();
  return value;
};
const ints = (values: number[][]): tf.Tensor2D => tf.tensor2d(values, undefined, 'int32');

describe('selectionFractions and meanProbabilities', () => {
  it('count top-K selections per real token (sum K) and average probabilities', () => {
    tf.tidy(() => {
      const indices = ints([[0, 1], [0, 2], [1, 0]]);
      expectTensorClose(selectionFractions(indices, 3), [1, 2 / 3, 1 / 3]);
      expectTensorClose(selectionFractions(indices, 3, tf.tensor1d([1, 1, 0])), [1, 0.5, 0.5]);
      const probabilities = tf.tensor2d([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]]);
      expectTensorClose(meanProbabilities(probabilities), [0.3, 1 / 3, 1.1 / 3]);
    });
  });

  it('take a precomputed one-hot of the indices (selection) with the same result, and check its shape', () => {
    tf.tidy(() => {
      const indices = ints([[0, 1], [0, 2], [1, 0]]);
      const selection = tf.tensor3d([[[1, 0, 0], [0, 1, 0]], [[1, 0, 0], [0, 0, 1]], [[0, 1, 0], [1, 0, 0]]]);
      const mask = tf.tensor1d([1, 1, 0]);
      expectTensorClose(selectionFractions(indices, 3, mask, selection), [1, 0.5, 0.5]);
      const probabilities = tf.tensor2d([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]]);
      const kinds: ExpertKind[] = ['ffn', 'ffn', 'zero'];
      expectTensorClose(heterogeneousLoadBalanceLoss(probabilities, indices, kinds, 0.5, mask, selection), heterogeneousLoadBalanceLoss(probabilities, indices, kinds, 0.5, mask).arraySync());
      expectTensorClose(switchLoadBalanceLoss(probabilities, indices, undefined, selection), switchLoadBalanceLoss(probabilities, indices).arraySync());
      expect(() => selectionFractions(indices, 3, undefined, tf.zeros([3, 2, 4]) as tf.Tensor3D)).toThrow(/argument 'selection' must have shape \[3, 2, 3\]/);
    });
  });
});

describe('switchLoadBalanceLoss', () => {
  it('is E·Σ f·P on a hand example', () => {
    const probabilities = tf.tensor2d([[0.8, 0.2], [0.4, 0.6]]);
    // f = [0.5, 0.5], P = [0.6, 0.4]: 2·(0.3 + 0.2) = 1.0.
    expect(scalar(switchLoadBalanceLoss(probabilities, ints([[0], [1]])))).toBeCloseTo(1.0, 6);
    // Both tokens pick expert 0: f = [1, 0]: 2·0.6 = 1.2.
    expect(scalar(switchLoadBalanceLoss(probabilities, ints([[0], [0]])))).toBeCloseTo(1.2, 6);
    probabilities.dispose();
  });

  it('is K at perfectly uniform routing', () => {
    const probabilities = tf.fill([4, 4], 0.25) as tf.Tensor2D;
    expect(scalar(switchLoadBalanceLoss(probabilities, ints([[0, 1], [2, 3], [1, 0], [3, 2]])))).toBeCloseTo(2, 6);
    probabilities.dispose();
  });
});

describe('heterogeneousLoadBalanceLoss (MoE++ Eq. 7)', () => {
  const probabilities = (): tf.Tensor2D => tf.tensor2d([[0.8, 0.2], [0.4, 0.6]]);

  it('weights zero-computation experts by tau on a hand example', () => {
    const p = probabilities();
    // f = [0.5, 0.5], P = [0.6, 0.4], eta = [1, 0.5]: 0.5·0.6 + 0.5·0.5·0.4 = 0.4.
    expect(scalar(heterogeneousLoadBalanceLoss(p, ints([[0], [1]]), ['ffn', 'zero'], 0.5))).toBeCloseTo(0.4, 6);
    p.dispose();
  });

  it('equals the plain Σ f·P (Switch / E) with tau = 1 or without zero-computation experts', () => {
    tf.tidy(() => {
      const p = tf.softmax(tf.tensor2d([[0.3, -1, 2, 0.1], [1, 1, -2, 0], [0.5, 0.2, 0.1, -0.3]])) as tf.Tensor2D;
      const indices = ints([[2, 3], [0, 1], [0, 1]]);
      const plain = switchLoadBalanceLoss(p, indices).dataSync()[0] as number;
      const allFfn: ExpertKind[] = ['ffn', 'ffn', 'ffn', 'ffn'];
      expect(heterogeneousLoadBalanceLoss(p, indices, allFfn, 0.3).dataSync()[0]).toBeCloseTo(plain / 4, 6);
      expect(heterogeneousLoadBalanceLoss(p, indices, ['ffn', 'ffn', 'copy', 'zero'], 1).dataSync()[0]).toBeCloseTo(plain / 4, 6);
    });
  });

  it('rejects a negative tau and mismatched shapes', () => {
    tf.tidy(() => {
      const p = probabilities();
      expect(() => heterogeneousLoadBalanceLoss(p, ints([[0], [1]]), ['ffn', 'zero'], -0.1)).toThrow(ConfigError);
      expect(() => heterogeneousLoadBalanceLoss(p, ints([[0], [1]]), ['ffn', 'zero'], -0.1)).toThrow(/'tau' must be a finite number >= 0, got -0.1/);
      expect(() => heterogeneousLoadBalanceLoss(p, ints([[0]]), ['ffn', 'zero'], 0.5)).toThrow(ShapeError);
      expect(() => heterogeneousLoadBalanceLoss(p, ints([[0], [1]]), ['ffn', 'zero', 'copy'], 0.5)).toThrow(/'probabilities' must have shape \[N, 3\]/);
    });
  });
});

describe('routerZLoss', () => {
  it('is the mean squared logsumexp', () => {
    tf.tidy(() => {
      expect(routerZLoss(tf.tensor2d([[0, 0]])).dataSync()[0]).toBeCloseTo(Math.LN2 ** 2, 6);
      const lse = Math.log(Math.E + Math.E ** 2);
      expect(routerZLoss(tf.tensor2d([[0, 0], [1, 2]])).dataSync()[0]).toBeCloseTo((Math.LN2 ** 2 + lse ** 2) / 2, 5);
    });
  });
});

describe('Shazeer 2017 importance and load losses', () => {
  it('CV² is population variance over squared mean', () => {
    tf.tidy(() => {
      expect(coefficientOfVariationSquared(tf.tensor1d([1, 3])).dataSync()[0]).toBeCloseTo(0.25, 6);
      expect(coefficientOfVariationSquared(tf.tensor1d([2, 2, 2])).dataSync()[0]).toBeCloseTo(0, 6);
    });
  });

  it('importance sums the gates per expert', () => {
    tf.tidy(() => {
      // Importance = [1.0, 0.5, 0.5]: mean 2/3, variance 1/18, CV² = 0.125.
      const gates = tf.tensor2d([[0.6, 0.4, 0], [0.4, 0.1, 0.5]]);
      expect(importanceLoss(gates).dataSync()[0]).toBeCloseTo(0.125, 5);
      expect(loadLoss(gates).dataSync()[0]).toBeCloseTo(0.125, 5);
    });
  });

  it('P(x, i) uses the (k+1)-th noisy value for experts in the top k and the k-th otherwise (Appendix A, Eq. 9)', () => {
    tf.tidy(() => {
      const clean = tf.tensor2d([[1, 0, 0]]);
      const noisy = tf.tensor2d([[1.5, 0.2, -0.3]]);
      const std = tf.tensor2d([[1, 2, 1]]);
      // k = 1: expert 0 is in; its threshold is the 2nd value 0.2. Experts 1, 2 must beat 1.5.
      const phi = (z: number): number => normalCdf(tf.scalar(z)).dataSync()[0] as number;
      expect(phi(0)).toBeCloseTo(0.5, 6);
      expect(phi(1.959964)).toBeCloseTo(0.975, 5);
      expectTensorClose(probabilityInTopK(clean, noisy, std, 1), [[phi(0.8), phi(-1.5 / 2), phi(-1.5)]]);
    });
  });

  it('rejects k >= E', () => {
    tf.tidy(() => {
      const t = tf.zeros([1, 2]) as tf.Tensor2D;
      expect(() => probabilityInTopK(t, t, t, 2)).toThrow(/'topK' must be an integer >= 1 <= 1, got 2/);
    });
  });
});

describe('padding', () => {
  it('masked padding tokens do not change any loss', () => {
    tf.tidy(() => {
      const logits = tf.tensor2d([[0.3, -1, 2], [1, 1, -2]]);
      const padded = tf.concat([logits, tf.tensor2d([[9, -9, 4], [5, 5, 5]])]) as tf.Tensor2D;
      const mask = tf.tensor1d([1, 1, 0, 0]);
      const p = tf.softmax(logits) as tf.Tensor2D;
      const pPadded = tf.softmax(padded) as tf.Tensor2D;
      const indices = ints([[2, 0], [0, 1]]);
      const indicesPadded = ints([[2, 0], [0, 1], [0, 2], [1, 2]]);
      const kinds: ExpertKind[] = ['ffn', 'ffn', 'zero'];
      const pairs: [number, number][] = [
        [switchLoadBalanceLoss(p, indices).dataSync()[0]!, switchLoadBalanceLoss(pPadded, indicesPadded, mask).dataSync()[0]!],
        [heterogeneousLoadBalanceLoss(p, indices, kinds, 0.75).dataSync()[0]!, heterogeneousLoadBalanceLoss(pPadded, indicesPadded, kinds, 0.75, mask).dataSync()[0]!],
        [routerZLoss(logits).dataSync()[0]!, routerZLoss(padded, mask).dataSync()[0]!],
        [importanceLoss(p).dataSync()[0]!, importanceLoss(pPadded, mask).dataSync()[0]!],
      ];
      for (const [plain, masked] of pairs) expect(masked).toBeCloseTo(plain, 6);
      // ... whereas unmasked padding does change them.
      expect(switchLoadBalanceLoss(pPadded, indicesPadded).dataSync()[0]).not.toBeCloseTo(pairs[0]![0], 3);
    });
  });
});

describe('gradients', () => {
  it('match finite differences for the load-balance, z and importance losses', () => {
    const logits = tf.tensor2d([[0.3, -1, 2, 0.1], [1, 0.8, -2, 0], [0.5, 0.2, 0.1, -0.3]]);
    const indices = ints([[2, 3], [0, 1], [0, 1]]);
    const mask = tf.tensor1d([1, 1, 0]);
    const kinds: ExpertKind[] = ['ffn', 'ffn', 'constant', 'zero'];
    checkGradients((l) => switchLoadBalanceLoss(tf.softmax(l) as tf.Tensor2D, indices, mask), [logits]);
    checkGradients((l) => heterogeneousLoadBalanceLoss(tf.softmax(l) as tf.Tensor2D, indices, kinds, 0.75), [logits]);
    checkGradients((l) => routerZLoss(l as tf.Tensor2D, mask), [logits]);
    checkGradients((l) => importanceLoss(tf.softmax(l) as tf.Tensor2D), [logits]);
    tf.dispose([logits, indices, mask]);
  });

  it('match finite differences for the load loss through P(x, i) (clean logits, noisy logits and noise scale)', () => {
    const clean = tf.tensor2d([[1, 0, -0.5], [0.2, 0.4, 0.1]]);
    const noisy = tf.tensor2d([[1.5, 0.2, -0.9], [-0.6, 0.9, 0.3]]);
    const std = tf.tensor2d([[1, 0.7, 1.2], [0.5, 0.8, 1.1]]);
    checkGradients((c, h, s) => loadLoss(probabilityInTopK(c as tf.Tensor2D, h as tf.Tensor2D, s as tf.Tensor2D, 1)), [clean, noisy, std]);
    tf.dispose([clean, noisy, std]);
  });
});

describe('no leaks', () => {
  it('every loss cleans up after itself', async () => {
    const probabilities = tf.tensor2d([[0.8, 0.2], [0.4, 0.6]]);
    const indices = ints([[0], [1]]);
    const mask = tf.tensor1d([1, 0]);
    const fns: (() => tf.Tensor)[] = [
      () => switchLoadBalanceLoss(probabilities, indices, mask),
      () => heterogeneousLoadBalanceLoss(probabilities, indices, ['ffn', 'zero'], 0.75, mask),
      () => routerZLoss(probabilities, mask),
      () => importanceLoss(probabilities, mask),
      () => probabilityInTopK(probabilities, probabilities, probabilities, 1),
    ];
    for (const fn of fns) {
      const out = await expectNoLeak(fn, 1);
      out.dispose();
    }
    tf.dispose([probabilities, indices, mask]);
  });
});
