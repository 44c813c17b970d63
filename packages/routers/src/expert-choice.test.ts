import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { ExpertChoiceRouter } from './expert-choice.js';
import { readRoutingStatsSync } from './stats.js';
import { checkVariableGradients, setVariable } from './test-utils.js';
import { disposeRouterOutput } from './types.js';

describe('ExpertChoiceRouter', () => {
  it('lets each expert pick its C best tokens, reported with K = E slots (hand example)', () => {
    const router = new ExpertChoiceRouter({ dim: 2, numExperts: 2, capacityFactor: 1, rng: new SeededRandom(1) });
    setVariable(router.weights.wg, [[1, 0], [0, 1]]);
    // Logits = x; S = softmax over the 2 experts. C = ceil(1·4/2) = 2.
    const x = tf.tensor2d([[3, 0], [1, 0], [0, 2], [0, 0.5]]);
    const out = router.route(x);
    const probabilities = out.probabilities.arraySync();
    // Expert 0 scores: tokens 0 (0.95) and 1 (0.73) are best; expert 1: tokens 2 and 3.
    expect(router.topK).toBe(2);
    expect(out.expertIndices.arraySync()).toEqual([[0, 1], [0, 1], [0, 1], [0, 1]]);
    expectTensorClose(out.keepMask, [[1, 0], [1, 0], [0, 1], [0, 1]]);
    expectTensorClose(out.combineWeights, probabilities.map((row, n) => row.map((p, e) => (e === (n < 2 ? 0 : 1) ? p : 0))));
    const stats = readRoutingStatsSync(out.stats);
    expect(stats.tokensPerExpert).toEqual([2, 2]);
    expect(stats.droppedAssignments).toBe(0);
    expect(Object.keys(out.auxLosses)).toEqual(['zLoss']);
    disposeRouterOutput(out);
    router.dispose();
    x.dispose();
  });

  it('never gives an expert more than C tokens; tokens nobody picked count as dropped; capacity factor 0 routes nothing', () => {
    const x = tf.randomNormal([10, 4], 0, 1, 'float32', 2) as tf.Tensor2D;
    for (const capacityFactor of [0, 0.5, 1, 2, 7]) {
      const router = new ExpertChoiceRouter({ dim: 4, numExperts: 3, capacityFactor, rng: new SeededRandom(3), initializerRange: 1 });
      const capacity = router.expertCapacity(10);
      expect(capacity).toBe(Math.min(10, Math.ceil((capacityFactor * 10) / 3)));
      const out = router.route(x);
      const stats = readRoutingStatsSync(out.stats);
      stats.tokensPerExpert.forEach((load) => expect(load).toBe(capacity));
      const keep = out.keepMask.arraySync();
      expect(stats.droppedAssignments).toBe(keep.filter((row) => row.every((v) => v === 0)).length);
      if (capacityFactor === 0) expect(stats.droppedAssignments).toBe(10);
      disposeRouterOutput(out);
      router.dispose();
    }
    x.dispose();
  });

  it('takes padding only after every real token, and never keeps it', () => {
    const router = new ExpertChoiceRouter({ dim: 2, numExperts: 2, capacityFactor: 2, rng: new SeededRandom(1) });
    setVariable(router.weights.wg, [[1, 0], [0, 1]]);
    const x = tf.tensor2d([[9, 0], [1, 0], [0, 2]]); // token 0 would top expert 0, but it is padding
    const mask = tf.tensor1d([0, 1, 1]);
    const out = router.route(x, { tokenMask: mask }); // C = min(3, ceil(2·3/2)) = 3
    expectTensorClose(out.keepMask, [[0, 0], [1, 1], [1, 1]]);
    expect(readRoutingStatsSync(out.stats).tokensPerExpert).toEqual([2, 2]);
    disposeRouterOutput(out);
    router.dispose();
    tf.dispose([x, mask]);
  });

  it('has gradients that match finite differences for W_g', () => {
    const router = new ExpertChoiceRouter({ dim: 2, numExperts: 3, capacityFactor: 1, rng: new SeededRandom(4) });
    setVariable(router.weights.wg, [[1, -0.5, 0.2], [0.3, 0.8, -1]]);
    const x = tf.tensor2d([[1, 0.2], [-0.7, 1], [0.4, -0.9]]);
    const weights = tf.tensor2d([[0.3, -0.5, 1], [1, 2, -1], [0.2, 0.1, 0.5]]);
    checkVariableGradients(() => {
      const out = router.route(x);
      const loss = tf.tidy(() => tf.add(tf.sum(tf.mul(out.combineWeights, weights)), out.auxLosses.zLoss!)) as tf.Scalar;
      disposeRouterOutput(out);
      return loss;
    }, [router.weights.wg]);
    router.dispose();
    tf.dispose([x, weights]);
  });

  it('rejects a negative capacity factor and does not leak', async () => {
    expect(() => new ExpertChoiceRouter({ dim: 2, numExperts: 2, capacityFactor: -1, rng: new SeededRandom(0) })).toThrow(ConfigError);
    const router = new ExpertChoiceRouter({ dim: 2, numExperts: 2, rng: new SeededRandom(0) });
    const x = tf.tensor2d([[1, 0], [0, 1], [1, 1]]);
    const out = await expectNoLeak(() => router.route(x), 10); // one aux loss (zLoss)
    disposeRouterOutput(out);
    const lean = await expectNoLeak(() => router.route(x, { auxiliary: false }), 9); // no zLoss
    expect(lean.auxLosses).toEqual({});
    disposeRouterOutput(lean);
    router.dispose();
    x.dispose();
  });
});
