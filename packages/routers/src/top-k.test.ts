import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom, ShapeError } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { readRoutingStatsSync } from './stats.js';
import { checkVariableGradients, setVariable } from './test-utils.js';
import { TopKRouter, type TopKRouterConfig } from './top-k.js';
import { disposeRouterOutput, type RouterOutput } from './types.js';

const softmax = (row: number[]): number[] => {
  const max = Math.max(...row);
  const exps = row.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / sum);
};

/** D = 2, E = 3; logits are [2, 1, 0] for token 0 and [0, 1, 3] for token 1. */
function handRouter(config: Partial<TopKRouterConfig> = {}): TopKRouter {
  const router = new TopKRouter({ dim: 2, numExperts: 3, rng: new SeededRandom(1), ...config });
  setVariable(router.weights.wg, [[2, 1, 0], [0, 1, 3]]);
  return router;
}
const handX = (): tf.Tensor2D => tf.tensor2d([[1, 0], [0, 1]]);

function withOutput<T>(router: TopKRouter, x: tf.Tensor2D, fn: (out: RouterOutput) => T, options = {}): T {
  const out = router.route(x, options);
  try {
    return fn(out);
  } finally {
    disposeRouterOutput(out);
  }
}

describe('TopKRouter', () => {
  it('softmax-topk keeps the raw probabilities of the top K (hand example)', () => {
    const router = handRouter();
    const x = handX();
    const p0 = softmax([2, 1, 0]);
    const p1 = softmax([0, 1, 3]);
    withOutput(router, x, (out) => {
      expect(out.expertIndices.dtype).toBe('int32');
      expect(out.expertIndices.arraySync()).toEqual([[0, 1], [2, 1]]);
      expectTensorClose(out.combineWeights, [[p0[0]!, p0[1]!], [p1[2]!, p1[1]!]]);
      expectTensorClose(out.keepMask, [[1, 1], [1, 1]]);
      expectTensorClose(out.logits, [[2, 1, 0], [0, 1, 3]]);
      expectTensorClose(out.probabilities, [p0, p1]);
      expect(out.expertInputScale).toBe(1);
      expect(Object.keys(out.auxLosses).sort()).toEqual(['loadBalance', 'zLoss']);
      const stats = readRoutingStatsSync(out.stats);
      expect(stats.tokensPerExpert).toEqual([1, 2, 1]);
      expect(stats.droppedAssignments).toBe(0);
      expect(stats.ffnExpertsPerToken).toBeCloseTo(2, 6);
    });
    router.dispose();
    x.dispose();
  });

  it('normalizeTopK makes the gates sum to 1, and topk-softmax (Mixtral) is the softmax over the top-k logits', () => {
    const x = handX();
    const normalized = handRouter({ normalizeTopK: true });
    const mixtral = handRouter({ gating: 'topk-softmax' });
    const expected = [softmax([2, 1]), softmax([3, 1])];
    for (const router of [normalized, mixtral]) {
      withOutput(router, x, (out) => {
        expect(out.expertIndices.arraySync()).toEqual([[0, 1], [2, 1]]);
        expectTensorClose(out.combineWeights, expected);
      });
      router.dispose();
    }
    x.dispose();
  });

  it('gates sum to 1 after renormalisation (random inputs)', () => {
    const router = new TopKRouter({ dim: 5, numExperts: 6, topK: 3, normalizeTopK: true, rng: new SeededRandom(2), initializerRange: 1 });
    const x = tf.randomNormal([7, 5], 0, 1, 'float32', 3) as tf.Tensor2D;
    withOutput(router, x, (out) => expectTensorClose(tf.sum(out.combineWeights, 1), new Array(7).fill(1)));
    router.dispose();
    x.dispose();
  });

  it('drops overflow with a capacity factor, and everything with capacity factor 0', () => {
    const x = tf.tensor2d([[1, 0], [1, 0], [1, 0], [0, 1]]); // three tokens prefer experts 0 then 1
    const router = handRouter({ topK: 1, capacity: { mode: 'uniform', capacityFactor: 1.5 } }); // C = ceil(1.5·4/3) = 2
    withOutput(router, x, (out) => {
      expect(out.expertIndices.arraySync()).toEqual([[0], [0], [0], [2]]);
      expectTensorClose(out.keepMask, [[1], [1], [0], [1]]);
      expect(out.combineWeights.arraySync()[2]).toEqual([0]);
      const stats = readRoutingStatsSync(out.stats);
      expect(stats.tokensPerExpert).toEqual([2, 0, 1]);
      expect(stats.droppedAssignments).toBe(1);
      expect(stats.ffnExpertsPerToken).toBeCloseTo(0.75, 6);
    });
    router.dispose();
    const none = handRouter({ capacity: { mode: 'uniform', capacityFactor: 0 } });
    withOutput(none, x, (out) => {
      expectTensorClose(out.combineWeights, tf.zeros([4, 2]));
      expect(readRoutingStatsSync(out.stats).droppedAssignments).toBe(8);
    });
    none.dispose();
    x.dispose();
  });

  it('routes padding nowhere and leaves it out of losses and stats', () => {
    const router = handRouter();
    const x = tf.tensor2d([[1, 0], [0, 1], [5, -3]]);
    const mask = tf.tensor1d([1, 1, 0]);
    const realX = handX();
    const plain = router.route(realX);
    withOutput(router, x, (out) => {
      expectTensorClose(out.keepMask, [[1, 1], [1, 1], [0, 0]]);
      expect(out.combineWeights.arraySync()[2]).toEqual([0, 0]);
      for (const name of ['loadBalance', 'zLoss']) {
        expect(out.auxLosses[name]!.dataSync()[0]).toBeCloseTo(plain.auxLosses[name]!.dataSync()[0]!, 6);
      }
      expect(readRoutingStatsSync(out.stats)).toEqual(readRoutingStatsSync(plain.stats));
    }, { tokenMask: mask });
    disposeRouterOutput(plain);
    tf.dispose([x, mask, realX]);
    router.dispose();
  });

  it('has gradients that match finite differences (combine weights and aux losses w.r.t. wg)', () => {
    for (const config of [{}, { normalizeTopK: true }, { gating: 'topk-softmax' as const }]) {
      const router = handRouter(config);
      const x = tf.tensor2d([[1, 0.2], [-0.3, 1], [0.7, 0.2]]); // well-separated logits: no top-k flips
      const weights = tf.tensor2d([[0.3, -0.5], [1, 2], [0.2, 0.1]]);
      checkVariableGradients(() => {
        const out = router.route(x);
        const loss = tf.add(tf.sum(tf.mul(out.combineWeights, weights)), tf.add(out.auxLosses.loadBalance!, out.auxLosses.zLoss!));
        const value = tf.keep(loss) as tf.Scalar;
        disposeRouterOutput(out);
        return value;
      }, [router.weights.wg]);
      router.dispose();
      tf.dispose([x, weights]);
    }
  });

  it('works with a single expert', () => {
    const router = new TopKRouter({ dim: 2, numExperts: 1, topK: 1, rng: new SeededRandom(3) });
    const x = handX();
    withOutput(router, x, (out) => {
      expect(out.expertIndices.arraySync()).toEqual([[0], [0]]);
      expectTensorClose(out.combineWeights, [[1], [1]]);
    });
    router.dispose();
    x.dispose();
  });

  it('rejects bad configs and inputs with errors naming the argument', () => {
    const rng = new SeededRandom(4);
    expect(() => new TopKRouter({ dim: 2, numExperts: 3, topK: 4, rng })).toThrow("TopKRouter: 'topK' must be <= numExperts (3), got 4");
    expect(() => new TopKRouter({ dim: 2, numExperts: 3, topK: 0, rng })).toThrow(/'topK' must be an integer >= 1, got 0/);
    expect(() => new TopKRouter({ dim: 2, numExperts: 3, gating: 'sigmoid' as never, rng })).toThrow(/'gating' must be one of 'softmax-topk', 'topk-softmax', got 'sigmoid'/);
    expect(() => new TopKRouter({ dim: 2, numExperts: 3, capacity: { mode: 'uniform', capacityFactor: -1 }, rng })).toThrow(ConfigError);
    expect(() => new TopKRouter({ dim: 2, numExperts: 3, expertKinds: ['ffn', 'zero'], rng })).toThrow(/'expertKinds' must be an array of numExperts \(3\)/);
    const router = handRouter();
    tf.tidy(() => {
      expect(() => router.route(tf.zeros([4, 3]) as tf.Tensor2D)).toThrow(ShapeError);
      expect(() => router.route(tf.zeros([4, 3]) as tf.Tensor2D)).toThrow("TopKRouter.route: argument 'x' must have shape [N, 2] and dtype float32, got [4, 3] float32 (axis 1)");
      expect(() => router.route(tf.zeros([4, 2]) as tf.Tensor2D, { tokenMask: tf.ones([3]) as tf.Tensor1D })).toThrow(/'tokenMask' must have shape \[4\]/);
    });
    router.dispose();
  });

  it('does not leak', async () => {
    const router = handRouter({ capacity: { mode: 'uniform', capacityFactor: 1 } });
    const x = handX();
    const mask = tf.tensor1d([1, 0]);
    const out = await expectNoLeak(() => router.route(x, { tokenMask: mask }), 11);
    disposeRouterOutput(out);
    await expectNoLeak(() => disposeRouterOutput(router.route(x)));
    tf.dispose([x, mask]);
    router.dispose();
  });

  it('with auxiliary: false routes the same and returns no aux losses, without leaks', async () => {
    const router = handRouter({ topK: 2, normalizeTopK: true });
    const x = handX();
    const full = router.route(x);
    const lean = await expectNoLeak(() => router.route(x, { auxiliary: false }), 9); // 5 tensors and 4 statistics
    expect(Object.keys(full.auxLosses).sort()).toEqual(['loadBalance', 'zLoss']);
    expect(lean.auxLosses).toEqual({});
    expect(lean.expertIndices.arraySync()).toEqual(full.expertIndices.arraySync());
    expect(lean.combineWeights.arraySync()).toEqual(full.combineWeights.arraySync());
    expect(readRoutingStatsSync(lean.stats)).toEqual(readRoutingStatsSync(full.stats));
    disposeRouterOutput(full);
    disposeRouterOutput(lean);
    x.dispose();
    router.dispose();
  });
});
