import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, randomNormal, SeededRandom } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { coefficientOfVariationSquared, probabilityInTopK } from './losses.js';
import { NoisyTopKRouter, type NoisyTopKRouterConfig } from './noisy-top-k.js';
import { checkVariableGradients, setVariable } from './test-utils.js';
import { disposeRouterOutput } from './types.js';

const W_GATE = [[2, 1, 0], [0, 1, 3]];
const W_NOISE = [[0.5, -1, 0], [1, 0, -0.5]];
function handRouter(config: Partial<NoisyTopKRouterConfig> = {}): NoisyTopKRouter {
  const router = new NoisyTopKRouter({ dim: 2, numExperts: 3, topK: 1, rng: new SeededRandom(1), ...config });
  setVariable(router.weights.wg, W_GATE);
  setVariable(router.weights.wNoise, W_NOISE);
  return router;
}

describe('NoisyTopKRouter', () => {
  it('starts from zero weights (Shazeer 2017, Appendix A)', () => {
    const router = new NoisyTopKRouter({ dim: 2, numExperts: 3, rng: new SeededRandom(1) });
    expect(router.weights.wg.arraySync()).toEqual([[0, 0, 0], [0, 0, 0]]);
    expect(router.weights.wNoise.arraySync()).toEqual([[0, 0, 0], [0, 0, 0]]);
    router.dispose();
  });

  it('adds no noise outside training: top-k of the clean logits, softmax over the kept ones', () => {
    const router = handRouter({ topK: 2 });
    const x = tf.tensor2d([[1, 0], [0, 1]]);
    const out = router.route(x, { rng: new SeededRandom(5) });
    expect(out.expertIndices.arraySync()).toEqual([[0, 1], [2, 1]]);
    const g0 = 1 / (1 + Math.exp(-1)); // softmax([2, 1])
    const g1 = 1 / (1 + Math.exp(-2)); // softmax([3, 1])
    expectTensorClose(out.combineWeights, [[g0, 1 - g0], [g1, 1 - g1]]);
    expectTensorClose(out.logits, [[2, 1, 0], [0, 1, 3]]);
    disposeRouterOutput(out);
    router.dispose();
    x.dispose();
  });

  it('in training adds StandardNormal()·(Softplus(x·W_noise) + ε) from the given generator (Eq. 4)', () => {
    const router = handRouter({ noiseEpsilon: 0.01 });
    const x = tf.tensor2d([[1, 0], [0, 1], [0.5, 0.5]]);
    const out = router.route(x, { training: true, rng: new SeededRandom(42) });
    tf.tidy(() => {
      const noise = randomNormal([3, 3], new SeededRandom(42));
      const std = tf.add(tf.softplus(tf.matMul(x, router.weights.wNoise)), 0.01);
      const noisy = tf.add(tf.matMul(x, router.weights.wg), tf.mul(noise, std)) as tf.Tensor2D;
      expect(out.expertIndices.arraySync()).toEqual(tf.topk(noisy, 1).indices.arraySync());
      expectTensorClose(out.probabilities, tf.softmax(noisy));
      expectTensorClose(out.logits, tf.matMul(x, router.weights.wg)); // clean logits
      // Load loss = CV² of Σ_x P(x, i) (Appendix A, Eq. 10–11).
      const load = coefficientOfVariationSquared(tf.sum(probabilityInTopK(tf.matMul(x, router.weights.wg) as tf.Tensor2D, noisy, std as tf.Tensor2D, 1), 0) as tf.Tensor1D);
      expect(out.auxLosses.load!.dataSync()[0]).toBeCloseTo(load.dataSync()[0]!, 5);
    });
    // Same seed, same routing; the router's own generator otherwise.
    const again = router.route(x, { training: true, rng: new SeededRandom(42) });
    expect(again.expertIndices.arraySync()).toEqual(out.expertIndices.arraySync());
    expectTensorClose(again.probabilities, out.probabilities);
    [out, again].forEach(disposeRouterOutput);
    router.dispose();
    x.dispose();
  });

  it('reports importance and load losses; the load is the hard count outside training', () => {
    const router = handRouter();
    const x = tf.tensor2d([[1, 0], [0, 1], [1, 0.1]]);
    const out = router.route(x);
    // Picks: experts 0, 2, 0 with gate 1 each (top-1): importance = load = [2, 0, 1], CV² = (2/3)/1 = 2/3.
    expect(out.expertIndices.arraySync()).toEqual([[0], [2], [0]]);
    expect(out.auxLosses.importance!.dataSync()[0]).toBeCloseTo(2 / 3, 5);
    expect(out.auxLosses.load!.dataSync()[0]).toBeCloseTo(2 / 3, 5);
    disposeRouterOutput(out);
    router.dispose();
    x.dispose();
  });

  it('has gradients that match finite differences for W_g and W_noise in training', () => {
    const router = handRouter({ topK: 2, numExperts: 3 });
    const x = tf.tensor2d([[1, 0.2], [-0.3, 1], [0.7, 0.2]]);
    const weights = tf.tensor2d([[0.3, -0.5], [1, 2], [0.2, 0.1]]);
    checkVariableGradients(() => {
      const out = router.route(x, { training: true, rng: new SeededRandom(3) });
      const loss = tf.tidy(() => tf.add(tf.sum(tf.mul(out.combineWeights, weights)), tf.add(out.auxLosses.importance!, out.auxLosses.load!))) as tf.Scalar;
      disposeRouterOutput(out);
      return loss;
    }, [router.weights.wg, router.weights.wNoise]);
    router.dispose();
    tf.dispose([x, weights]);
  });

  it('rejects a negative noise epsilon and an unknown initialisation', () => {
    const rng = new SeededRandom(0);
    expect(() => new NoisyTopKRouter({ dim: 2, numExperts: 3, noiseEpsilon: -1, rng })).toThrow(ConfigError);
    expect(() => new NoisyTopKRouter({ dim: 2, numExperts: 3, initialization: 'xavier' as never, rng })).toThrow(/'initialization' must be one of 'zeros', 'normal'/);
    expect(() => new NoisyTopKRouter({ dim: 2, numExperts: 3, topK: 4, rng })).toThrow(/'topK' must be <= numExperts \(3\), got 4/);
  });

  it('does not leak, in training and evaluation', async () => {
    const router = handRouter({ topK: 2 });
    const x = tf.tensor2d([[1, 0], [0, 1]]);
    const mask = tf.tensor1d([1, 0]);
    await expectNoLeak(() => disposeRouterOutput(router.route(x, { training: true, tokenMask: mask })));
    const out = await expectNoLeak(() => router.route(x), 11);
    disposeRouterOutput(out);
    const lean = await expectNoLeak(() => router.route(x, { training: true, tokenMask: mask, auxiliary: false }), 9); // no importance, load
    expect(lean.auxLosses).toEqual({});
    disposeRouterOutput(lean);
    router.dispose();
    tf.dispose([x, mask]);
  });
});
