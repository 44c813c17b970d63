import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom, ShapeError } from '@moepp/tensors-core';
import { checkGradients, expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { FfnExpert, type FfnActivation } from './ffn.js';
import { checkVariableGradients, setVariable } from './test-utils.js';

const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

describe('FfnExpert (SwiGLU, official fused layout)', () => {
  it('splits up_proj into [a | b] and computes down(silu(a)·b) (hand example)', () => {
    const expert = new FfnExpert({ dim: 2, ffnDim: 1, rng: new SeededRandom(1) });
    expect(expert.weights.upProj.shape).toEqual([2, 2]);
    expect(expert.weights.downProj.shape).toEqual([1, 2]);
    setVariable(expert.weights.downProj, [[1, -1]]);
    const x = tf.tensor2d([[1, 2]]);
    // up = x: a = 1 (first half), b = 2 (second half): silu(1)·2.
    setVariable(expert.weights.upProj, [[1, 0], [0, 1]]);
    const first = 1 * sigmoid(1) * 2;
    tf.tidy(() => expectTensorClose(expert.apply(x), [[first, -first]]));
    // Swapping the halves gives silu(2)·1, a different value: the first half is the gate.
    setVariable(expert.weights.upProj, [[0, 1], [1, 0]]);
    const swapped = 2 * sigmoid(2) * 1;
    tf.tidy(() => expectTensorClose(expert.apply(x), [[swapped, -swapped]]));
    expert.dispose();
    x.dispose();
  });

  it('counts parameters and FLOPs per token', () => {
    const expert = new FfnExpert({ dim: 4, ffnDim: 3, rng: new SeededRandom(1) });
    expect(expert.parameterCount()).toBe(4 * 6 + 3 * 4);
    expect(expert.flopsPerToken()).toBe(2 * 4 * 6 + 2 * 3 * 4 + 3 * 3);
    expert.dispose();
  });

  it('initialises from N(0, initializerRange²) deterministically', () => {
    const a = new FfnExpert({ dim: 64, ffnDim: 128, rng: new SeededRandom(7) });
    const b = new FfnExpert({ dim: 64, ffnDim: 128, rng: new SeededRandom(7) });
    const values = Array.from(a.weights.upProj.dataSync());
    const std = Math.sqrt(values.reduce((s, v) => s + v * v, 0) / values.length);
    expect(std).toBeGreaterThan(0.019);
    expect(std).toBeLessThan(0.021);
    expect(Array.from(b.weights.downProj.dataSync())).toEqual(Array.from(a.weights.downProj.dataSync()));
    a.dispose();
    b.dispose();
  });
});

describe('FfnExpert (GELU, ReLU)', () => {
  it('applies the exact GELU and ReLU (hand example)', () => {
    const x = tf.tensor2d([[1], [-1], [0]]);
    const gelu = (v: number): number => 0.5 * v * (1 + erf(v / Math.SQRT2));
    for (const [activation, f] of [['gelu', gelu], ['relu', (v: number) => Math.max(v, 0)]] as const) {
      const expert = new FfnExpert({ dim: 1, ffnDim: 1, activation, rng: new SeededRandom(1) });
      expect(expert.weights.upProj.shape).toEqual([1, 1]);
      setVariable(expert.weights.upProj, [[1]]);
      setVariable(expert.weights.downProj, [[2]]);
      tf.tidy(() => expectTensorClose(expert.apply(x), [[2 * f(1)], [2 * f(-1)], [0]]));
      expect(expert.flopsPerToken()).toBe(2 + 2 + (activation === 'gelu' ? 5 : 1));
      expert.dispose();
    }
    x.dispose();
  });
});

describe('FfnExpert gradients', () => {
  it.each(['swiglu', 'gelu', 'relu'] as FfnActivation[])('%s: match finite differences for both projections and the input', (activation) => {
    const expert = new FfnExpert({ dim: 3, ffnDim: 4, activation, rng: new SeededRandom(2), initializerRange: 0.5 });
    const x = tf.tensor2d([[0.5, -1, 0.8], [1.2, 0.3, -0.4]]);
    const weights = tf.tensor2d([[1, -2, 0.5], [0.3, 0.7, -1]]);
    checkVariableGradients(() => tf.tidy(() => tf.sum(tf.mul(expert.apply(x), weights))), [expert.weights.upProj, expert.weights.downProj]);
    checkGradients((input) => tf.sum(tf.mul(expert.apply(input as tf.Tensor2D), weights)), [x]);
    expert.dispose();
    tf.dispose([x, weights]);
  });
});

describe('FfnExpert validation and memory', () => {
  it('rejects bad configs and inputs', () => {
    const rng = new SeededRandom(0);
    expect(() => new FfnExpert({ dim: 0, ffnDim: 2, rng })).toThrow("FfnExpert: 'dim' must be an integer >= 1, got 0");
    expect(() => new FfnExpert({ dim: 2, ffnDim: 1.5, rng })).toThrow(ConfigError);
    expect(() => new FfnExpert({ dim: 2, ffnDim: 2, activation: 'tanh' as never, rng })).toThrow(/'activation' must be one of 'swiglu', 'gelu', 'relu', got 'tanh'/);
    const expert = new FfnExpert({ dim: 2, ffnDim: 2, rng, name: 'ffn-7' });
    tf.tidy(() => {
      expect(() => expert.apply(tf.zeros([3, 4]) as tf.Tensor2D)).toThrow(ShapeError);
      expect(() => expert.apply(tf.zeros([3, 4]) as tf.Tensor2D)).toThrow("FfnExpert(ffn-7).apply: argument 'x' must have shape [?, 2] and dtype float32, got [3, 4] float32 (axis 1)");
    });
    expert.dispose();
  });

  it('does not leak', async () => {
    for (const activation of ['swiglu', 'gelu', 'relu'] as const) {
      const expert = new FfnExpert({ dim: 3, ffnDim: 2, activation, rng: new SeededRandom(0) });
      const x = tf.ones([4, 3]) as tf.Tensor2D;
      const y = await expectNoLeak(() => expert.apply(x), 1);
      expect(y.shape).toEqual([4, 3]);
      tf.dispose([x, y]);
      expert.dispose();
      expect(expert.weights.upProj.isDisposed).toBe(true);
    }
  });
});

/** Abramowitz–Stegun 7.1.26 is too coarse for 1e-5; use a series, fine for |v| <= 2. */
function erf(v: number): number {
  let sum = 0;
  let term = v;
  for (let n = 0; n < 40; n++) {
    sum += term / (2 * n + 1);
    term *= (-v * v) / (n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}
