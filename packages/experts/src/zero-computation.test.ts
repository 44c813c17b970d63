import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { SeededRandom, ShapeError } from '@moepp/tensors-core';
import { checkGradients, expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { checkVariableGradients, setVariable } from './test-utils.js';
import { ConstantExpert, CopyExpert, ZeroExpert } from './zero-computation.js';

describe('ZeroExpert', () => {
  it('outputs zeros, has no variables and costs nothing (no matmul runs)', async () => {
    const expert = new ZeroExpert({ dim: 3, name: 'zero-0' });
    const x = tf.tensor2d([[1, 2, 3], [-4, 5, 6]]);
    const profile = await tf.profile(() => expert.apply(x));
    expect(profile.kernelNames.some((name) => /MatMul/.test(name))).toBe(false);
    tf.tidy(() => expectTensorClose(expert.apply(x), [[0, 0, 0], [0, 0, 0]]));
    expect(expert.kind).toBe('zero');
    expect(Object.keys(expert.weights)).toEqual([]);
    expect(expert.parameterCount()).toBe(0);
    expect(expert.flopsPerToken()).toBe(0);
    x.dispose();
    expect(() => expert.apply(tf.zeros([2, 4]) as tf.Tensor2D)).toThrow(ShapeError);
  });
});

describe('CopyExpert', () => {
  it('returns the input in a tensor the caller may dispose without disposing x', () => {
    const expert = new CopyExpert({ dim: 2 });
    const x = tf.tensor2d([[1, 2], [3, 4]]);
    const y = expert.apply(x);
    expect(y).not.toBe(x);
    expectTensorClose(y, [[1, 2], [3, 4]]);
    y.dispose();
    expect(x.isDisposed).toBe(false);
    expectTensorClose(x, [[1, 2], [3, 4]]);
    expect(expert.parameterCount()).toBe(0);
    expect(expert.flopsPerToken()).toBe(0);
    checkGradients((input) => tf.sum(tf.mul(expert.apply(input as tf.Tensor2D), tf.tensor2d([[1, 2], [3, 4]]))), [x]);
    x.dispose();
  });
});

describe('ConstantExpert', () => {
  it('computes a1·x + a2·v with [a1, a2] = softmax(W_c x) (hand example, Eq. 5)', () => {
    const expert = new ConstantExpert({ dim: 2, rng: new SeededRandom(1) });
    expect(expert.weights.wg.shape).toEqual([2, 2]);
    expect(expert.weights.constant.shape).toEqual([2]);
    setVariable(expert.weights.wg, [[1, 0], [0, 0]]);
    setVariable(expert.weights.constant, [10, 20]);
    // Token 0: logits [0, 0] -> a = [0.5, 0.5]. Token 1: logits [2, 0] -> a1 = σ(2).
    const a1 = 1 / (1 + Math.exp(-2));
    const x = tf.tensor2d([[0, 0], [2, 1]]);
    tf.tidy(() => expectTensorClose(expert.apply(x), [[5, 10], [a1 * 2 + (1 - a1) * 10, a1 * 1 + (1 - a1) * 20]]));
    expect(expert.parameterCount()).toBe(6);
    expect(expert.flopsPerToken()).toBe(7 * 2 + 5);
    expert.dispose();
    x.dispose();
  });

  it('initialises v from N(0, 1) and W_c from N(0, initializerRange²)', () => {
    const expert = new ConstantExpert({ dim: 512, rng: new SeededRandom(3) });
    const rms = (t: tf.Tensor): number => {
      const values = Array.from(t.dataSync());
      return Math.sqrt(values.reduce((s, v) => s + v * v, 0) / values.length);
    };
    expect(rms(expert.weights.constant)).toBeGreaterThan(0.9);
    expect(rms(expert.weights.constant)).toBeLessThan(1.1);
    expect(rms(expert.weights.wg)).toBeGreaterThan(0.018);
    expect(rms(expert.weights.wg)).toBeLessThan(0.022);
    expert.dispose();
  });

  it('has gradients that match finite differences for W_c, v and the input', () => {
    const expert = new ConstantExpert({ dim: 3, rng: new SeededRandom(4), initializerRange: 0.7 });
    const x = tf.tensor2d([[0.5, -1, 0.8], [1.2, 0.3, -0.4]]);
    const weights = tf.tensor2d([[1, -2, 0.5], [0.3, 0.7, -1]]);
    checkVariableGradients(() => tf.tidy(() => tf.sum(tf.mul(expert.apply(x), weights))), [expert.weights.wg, expert.weights.constant]);
    checkGradients((input) => tf.sum(tf.mul(expert.apply(input as tf.Tensor2D), weights)), [x]);
    expert.dispose();
    tf.dispose([x, weights]);
  });

  it('does not leak', async () => {
    const x = tf.ones([4, 3]) as tf.Tensor2D;
    for (const expert of [new ZeroExpert({ dim: 3 }), new CopyExpert({ dim: 3 }), new ConstantExpert({ dim: 3, rng: new SeededRandom(0) })]) {
      const y = await expectNoLeak(() => expert.apply(x), 1);
      expect(y.shape).toEqual([4, 3]);
      y.dispose();
      expert.dispose();
    }
    x.dispose();
  });
});
