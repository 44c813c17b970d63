import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom, ShapeError, type ExpertKind } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { heterogeneousLoadBalanceLoss, routerZLoss } from './losses.js';
import { MoEPlusPlusRouter, moeppRouterConfigFromOfficial, type MoEPlusPlusRouterConfig } from './moepp-router.js';
import { readRoutingStatsSync } from './stats.js';
import { checkVariableGradients, setVariable } from './test-utils.js';
import { disposeRouterOutput, type RouteOptions, type RouterOutput } from './types.js';

const KINDS: ExpertKind[] = ['ffn', 'ffn', 'copy', 'zero'];
const softmax = (row: number[]): number[] => {
  const max = Math.max(...row);
  const exps = row.map((v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((v) => v / sum);
};
const unbiasedStd = (row: number[]): number => {
  const mean = row.reduce((a, b) => a + b, 0) / row.length;
  return Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / (row.length - 1));
};

/** With x = I, token 0's logits are [2, 0, -1, 1.5] (picks FFN 0 + zero), token 1's [1, 0.5, -1, -2] (FFN 0 + FFN 1). */
const HAND_LOGITS = [[2, 0, -1, 1.5], [1, 0.5, -1, -2]];
function handRouter(config: Partial<MoEPlusPlusRouterConfig> = {}): MoEPlusPlusRouter {
  const router = new MoEPlusPlusRouter({ dim: 2, numExperts: 4, expertKinds: KINDS, useLogitsNorm: false, rng: new SeededRandom(1), ...config });
  if (router.weights.wg) setVariable(router.weights.wg, HAND_LOGITS);
  return router;
}
const identity = (): tf.Tensor2D => tf.tensor2d([[1, 0], [0, 1]]);

function withOutput<T>(router: MoEPlusPlusRouter, x: tf.Tensor2D, fn: (out: RouterOutput) => T, options: RouteOptions = {}): T {
  const out = router.route(x, options);
  try {
    return fn(out);
  } finally {
    disposeRouterOutput(out);
  }
}

describe('MoEPlusPlusRouter gating', () => {
  it("the code's rule drops the zero expert's gate and renormalises: {FFN e, zero} gives FFN e weight exactly 1", () => {
    const router = handRouter();
    const x = identity();
    const p1 = softmax(HAND_LOGITS[1]!);
    withOutput(router, x, (out) => {
      expect(out.expertIndices.arraySync()).toEqual([[0, 3], [0, 1]]);
      const weights = out.combineWeights.arraySync();
      expect(weights[0]).toEqual([1, 0]);
      expectTensorClose(out.combineWeights, [[1, 0], [p1[0]! / (p1[0]! + p1[1]!), p1[1]! / (p1[0]! + p1[1]!)]]);
      expectTensorClose(tf.sum(out.combineWeights, 1), [1, 1]);
      expectTensorClose(out.logits, HAND_LOGITS);
      expectTensorClose(out.probabilities, HAND_LOGITS.map(softmax));
      const stats = readRoutingStatsSync(out.stats);
      expect(stats.tokensPerExpert).toEqual([2, 1, 0, 1]);
      expect(stats.ffnExpertsPerToken).toBeCloseTo(1.5, 6); // token 0 uses 1 FFN expert, token 1 uses 2
    });
    router.dispose();
    x.dispose();
  });

  it("the paper's Eq. 1 keeps the raw softmax probabilities", () => {
    const router = handRouter({ zeroExpertGate: 'raw-softmax' });
    const x = identity();
    const [p0, p1] = HAND_LOGITS.map(softmax) as [number[], number[]];
    withOutput(router, x, (out) => expectTensorClose(out.combineWeights, [[p0[0]!, p0[3]!], [p1[0]!, p1[1]!]]));
    router.dispose();
    x.dispose();
  });

  it('gives gates 0, not NaN, to a token whose every pick is a zero expert', () => {
    const router = new MoEPlusPlusRouter({ dim: 1, numExperts: 2, topK: 1, expertKinds: ['ffn', 'zero'], rng: new SeededRandom(2) });
    setVariable(router.weights.wg!, [[-1, 1]]);
    const x = tf.tensor2d([[1]]);
    withOutput(router, x, (out) => {
      expect(out.expertIndices.arraySync()).toEqual([[1]]);
      expect(out.combineWeights.arraySync()).toEqual([[0]]);
    });
    router.dispose();
    x.dispose();
  });

  it('normalises each token\'s logits by their unbiased std / moe_gate_norm_std, and returns the logits from before', () => {
    const router = handRouter({ useLogitsNorm: true, gateNormStd: 2 });
    const x = identity();
    const normalised = HAND_LOGITS.map((row) => row.map((v) => v / (unbiasedStd(row) / 2)));
    withOutput(router, x, (out) => {
      expectTensorClose(out.logits, HAND_LOGITS);
      expectTensorClose(out.probabilities, normalised.map(softmax));
      expect(out.auxLosses.zLoss!.dataSync()[0]).toBeCloseTo(routerZLoss(tf.tensor2d(normalised)).dataSync()[0]!, 5);
    });
    router.dispose();
    x.dispose();
  });

  it('Mixtral gating is the softmax over the top-k (normalised) logits, with no zero-expert rule', () => {
    const router = handRouter({ useMixtralGating: true, useLogitsNorm: true });
    const x = identity();
    const normalised = HAND_LOGITS.map((row) => row.map((v) => v / unbiasedStd(row)));
    withOutput(router, x, (out) => {
      expect(out.expertIndices.arraySync()).toEqual([[0, 3], [0, 1]]);
      expectTensorClose(out.combineWeights, [softmax([normalised[0]![0]!, normalised[0]![3]!]), softmax([normalised[1]![0]!, normalised[1]![1]!])]);
      expect(out.expertInputScale).toBe(1);
    });
    router.dispose();
    x.dispose();
  });

  it('reports the expert input scale K only when moe_feature_no_mul_topk is false and Mixtral gating is off', () => {
    const cases: [Partial<MoEPlusPlusRouterConfig>, number][] = [
      [{}, 1],
      [{ featureNoMulTopK: false }, 2],
      [{ featureNoMulTopK: false, useMixtralGating: true }, 1],
    ];
    const x = identity();
    for (const [config, scale] of cases) {
      const router = handRouter(config);
      expect(router.expertInputScale).toBe(scale);
      withOutput(router, x, (out) => expect(out.expertInputScale).toBe(scale));
      router.dispose();
    }
    x.dispose();
  });

  it('reports the heterogeneous load-balance loss (Eq. 7) on the routing softmax', () => {
    const router = handRouter({ tau: 0.5 });
    const x = identity();
    withOutput(router, x, (out) => {
      const expected = heterogeneousLoadBalanceLoss(out.probabilities, out.expertIndices, KINDS, 0.5);
      // f = [1, 0.5, 0, 0.5]; by hand: Σ η f P.
      const [p0, p1] = HAND_LOGITS.map(softmax) as [number[], number[]];
      const P = p0.map((v, i) => (v + p1[i]!) / 2);
      const byHand = 1 * P[0]! + 0.5 * P[1]! + 0.5 * 0.5 * P[3]!;
      expect(out.auxLosses.loadBalance!.dataSync()[0]).toBeCloseTo(byHand, 6);
      expect(expected.dataSync()[0]).toBeCloseTo(byHand, 6);
      expected.dispose();
    });
    router.dispose();
    x.dispose();
  });
});

describe('MoEPlusPlusRouter invariants (random inputs)', () => {
  it("the code's rule gives gates that sum to 1, zero experts gate 0; raw gates are the top-K probabilities", () => {
    const kinds: ExpertKind[] = ['ffn', 'ffn', 'ffn', 'ffn', 'constant', 'constant', 'copy', 'zero'];
    const x = tf.randomNormal([32, 6], 0, 1, 'float32', 11) as tf.Tensor2D;
    const code = new MoEPlusPlusRouter({ dim: 6, numExperts: 8, topK: 3, expertKinds: kinds, rng: new SeededRandom(8), initializerRange: 1 });
    withOutput(code, x, (out) => {
      expectTensorClose(tf.sum(out.combineWeights, 1), new Array(32).fill(1));
      const indices = out.expertIndices.arraySync();
      const gates = out.combineWeights.arraySync();
      indices.forEach((row, n) => row.forEach((expert, k) => expert === 7 && expect(gates[n]![k]).toBe(0)));
      expect(indices.some((row) => row.includes(7))).toBe(true); // the case is exercised
    });
    const raw = new MoEPlusPlusRouter({ dim: 6, numExperts: 8, topK: 3, expertKinds: kinds, rng: new SeededRandom(8), initializerRange: 1, zeroExpertGate: 'raw-softmax' });
    withOutput(raw, x, (out) => {
      const probabilities = out.probabilities.arraySync();
      const expected = out.expertIndices.arraySync().map((row, n) => row.map((e) => probabilities[n]![e]!));
      expectTensorClose(out.combineWeights, expected);
    });
    [code, raw].forEach((r) => r.dispose());
    x.dispose();
  });
});

describe('MoEPlusPlusRouter gating residual (Eq. 6)', () => {
  it('adds previousLogits · gateMap to the logits', () => {
    const router = handRouter();
    setVariable(router.weights.gateMap!, [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 2, 0, 0]]);
    const x = identity();
    const previous = tf.tensor2d([[1, 0, 0, 0.5], [-1, 0, 0, 0]]);
    // Row 0: [1, 1, 0, 0] added; row 1: [-1, 0, 0, 0] added.
    withOutput(router, x, (out) => expectTensorClose(out.logits, [[3, 1, -1, 1.5], [0, 0.5, -1, -2]]), { previousLogits: previous });
    router.dispose();
    tf.dispose([x, previous]);
  });

  it('with W_g = 0 equals no residual', () => {
    const router = handRouter({ useLogitsNorm: true });
    setVariable(router.weights.gateMap!, tf.zeros([4, 4]).arraySync() as number[][]);
    const x = tf.tensor2d([[0.3, -1], [2, 0.5], [-0.4, 0.1]]);
    const previous = tf.randomNormal([3, 4], 0, 1, 'float32', 7) as tf.Tensor2D;
    const without = router.route(x);
    withOutput(router, x, (out) => {
      expect(out.expertIndices.arraySync()).toEqual(without.expertIndices.arraySync());
      expectTensorClose(out.combineWeights, without.combineWeights);
      expectTensorClose(out.logits, without.logits);
    }, { previousLogits: previous });
    disposeRouterOutput(without);
    router.dispose();
    tf.dispose([x, previous]);
  });

  it('has no gate_map when gatingResidual is off, and ignores previousLogits then', () => {
    const router = handRouter({ gatingResidual: false });
    expect(Object.keys(router.weights)).toEqual(['wg']);
    const x = identity();
    const previous = tf.ones([2, 4]) as tf.Tensor2D;
    withOutput(router, x, (out) => expectTensorClose(out.logits, HAND_LOGITS), { previousLogits: previous });
    router.dispose();
    tf.dispose([x, previous]);
  });
});

describe('MoEPlusPlusRouter 2-layer gate (moe_2layer_gate)', () => {
  it('computes tanh(x·wg0)·wg2 with an 8E-wide hidden layer', () => {
    const router = new MoEPlusPlusRouter({ dim: 3, numExperts: 4, twoLayerGate: true, rng: new SeededRandom(5), initializerRange: 0.5 });
    expect(Object.keys(router.weights).sort()).toEqual(['gateMap', 'wg0', 'wg2']);
    expect(router.weights.wg0!.shape).toEqual([3, 32]);
    expect(router.weights.wg2!.shape).toEqual([32, 4]);
    const x = tf.tensor2d([[0.5, -1, 2], [1, 1, 0]]);
    withOutput(router, x, (out) => {
      tf.tidy(() => expectTensorClose(out.logits, tf.matMul(tf.tanh(tf.matMul(x, router.weights.wg0!)), router.weights.wg2!)));
    });
    router.dispose();
    x.dispose();
  });
});

describe('MoEPlusPlusRouter capacity', () => {
  it('respects the heterogeneous capacities of Eq. 8 and is dropless by default', () => {
    const rng = new SeededRandom(9);
    const x = tf.randomNormal([16, 3], 0, 1, 'float32', 4) as tf.Tensor2D;
    const dropless = new MoEPlusPlusRouter({ dim: 3, numExperts: 4, expertKinds: KINDS, rng, initializerRange: 1 });
    withOutput(dropless, x, (out) => expect(readRoutingStatsSync(out.stats).droppedAssignments).toBe(0));
    dropless.dispose();
    // T = 16·2 = 32 slots, τ·N_ffn + N_zc = 0.5·2 + 2 = 3: FFN C = ceil(0.5·0.5·32/3) = 3, ZC C = ceil(0.5·32/3) = 6.
    const router = new MoEPlusPlusRouter({
      dim: 3,
      numExperts: 4,
      expertKinds: KINDS,
      rng,
      initializerRange: 1,
      capacity: { mode: 'heterogeneous', capacityFactor: 0.5, tau: 0.5 },
    });
    withOutput(router, x, (out) => {
      const stats = readRoutingStatsSync(out.stats);
      [3, 3, 6, 6].forEach((capacity, e) => expect(stats.tokensPerExpert[e]).toBeLessThanOrEqual(capacity));
      expect(stats.droppedAssignments).toBeGreaterThan(0);
      expect(stats.tokensPerExpert.reduce((a, b) => a + b, 0) + stats.droppedAssignments).toBe(32);
      expectTensorClose(tf.mul(out.combineWeights, tf.sub(1, out.keepMask)), tf.zeros([16, 2]));
    });
    router.dispose();
    x.dispose();
  });
});

describe('MoEPlusPlusRouter gradients', () => {
  const lossOf = (router: MoEPlusPlusRouter, x: tf.Tensor2D, options: RouteOptions = {}) => (): tf.Scalar => {
    const out = router.route(x, options);
    const loss = tf.tidy(() =>
      tf.add(tf.sum(tf.mul(out.combineWeights, tf.tensor2d([[0.7, -0.4], [1.3, 0.2], [-0.5, 0.9]]))), tf.add(out.auxLosses.loadBalance!, tf.mul(0.1, out.auxLosses.zLoss!))),
    ) as tf.Scalar;
    disposeRouterOutput(out);
    return loss;
  };
  const x = (): tf.Tensor2D => tf.tensor2d([[1, 0.1], [0.2, 1], [0.6, -0.5]]);

  it('match finite differences for the linear gate (code rule, raw rule, Mixtral) with logit normalisation', () => {
    for (const config of [{}, { zeroExpertGate: 'raw-softmax' as const }, { useMixtralGating: true }]) {
      const router = handRouter({ useLogitsNorm: true, ...config });
      const input = x();
      checkVariableGradients(lossOf(router, input), [router.weights.wg!]);
      router.dispose();
      input.dispose();
    }
  });

  it('match finite differences for gate_map and the 2-layer gate', () => {
    const router = new MoEPlusPlusRouter({ dim: 2, numExperts: 4, expertKinds: KINDS, twoLayerGate: true, rng: new SeededRandom(3), initializerRange: 0.4 });
    setVariable(router.weights.gateMap!, [[0.5, -0.2, 0.1, 0], [0.3, 0.4, -0.6, 0.2], [0, 0.1, 0.2, -0.3], [0.2, 0, 0, 0.5]]);
    const input = x();
    const previous = tf.tensor2d([[1, -0.5, 0.2, 0.3], [-0.2, 0.8, 0.1, -1], [0.4, 0.4, -0.9, 0.6]]);
    checkVariableGradients(lossOf(router, input, { previousLogits: previous }), [router.weights.wg0!, router.weights.wg2!, router.weights.gateMap!], { maxElements: 12 });
    router.dispose();
    tf.dispose([input, previous]);
  });
});

describe('MoEPlusPlusRouter validation', () => {
  const rng = new SeededRandom(0);
  const base = { dim: 2, numExperts: 4, rng };

  it('rejects bad configs with ConfigErrors naming the field', () => {
    expect(() => new MoEPlusPlusRouter({ ...base, topK: 5 })).toThrow("MoEPlusPlusRouter: 'topK' must be <= numExperts (4), got 5");
    expect(() => new MoEPlusPlusRouter({ ...base, topK: 0 })).toThrow(/'topK' must be an integer >= 1, got 0/);
    expect(() => new MoEPlusPlusRouter({ ...base, tau: -0.1 })).toThrow(/'tau' must be a finite number >= 0, got -0.1/);
    expect(() => new MoEPlusPlusRouter({ ...base, capacity: { mode: 'uniform', capacityFactor: -1 } })).toThrow(/'capacity.capacityFactor'/);
    expect(() => new MoEPlusPlusRouter({ ...base, zeroExpertGate: 'paper' as never })).toThrow(/'zeroExpertGate' must be one of 'drop-and-renormalize', 'raw-softmax', got 'paper'/);
    expect(() => new MoEPlusPlusRouter({ ...base, gateNormStd: 0 })).toThrow(/'gateNormStd' must be a finite number > 0, got 0/);
    expect(() => new MoEPlusPlusRouter({ ...base, numExperts: 1, topK: 1 })).toThrow(/'useLogitsNorm' needs numExperts >= 2/);
    expect(() => new MoEPlusPlusRouter({ ...base, useMixtralGating: 'yes' as never })).toThrow(/'useMixtralGating' must be a boolean, got 'yes'/);
    expect(() => new MoEPlusPlusRouter({ ...base, expertKinds: ['ffn', 'ffn', 'zero', 'one'] as never })).toThrow(/'expertKinds\[3\]' must be one of/);
    expect(() => new MoEPlusPlusRouter({ ...base, dim: 0 })).toThrow(ConfigError);
  });

  it('rejects mis-shaped x and previousLogits with ShapeErrors naming the argument', () => {
    const router = new MoEPlusPlusRouter(base);
    tf.tidy(() => {
      expect(() => router.route(tf.zeros([3, 5]) as tf.Tensor2D)).toThrow(ShapeError);
      expect(() => router.route(tf.zeros([3]) as unknown as tf.Tensor2D)).toThrow(/argument 'x' must have shape \[N, 2\].*rank 2 expected, got rank 1/);
      expect(() => router.route(tf.zeros([3, 2]) as tf.Tensor2D, { previousLogits: tf.zeros([3, 5]) as tf.Tensor2D })).toThrow(
        "MoEPlusPlusRouter.route: argument 'previousLogits' must have shape [3, 4] and dtype float32, got [3, 5] float32 (axis 1)",
      );
      expect(() => router.route(tf.zeros([3, 2]) as tf.Tensor2D, { previousLogits: tf.zeros([2, 4]) as tf.Tensor2D })).toThrow(/dimension N is 3 elsewhere, 2 on axis 0/);
      expect(() => router.route(tf.zeros([3, 2], 'int32') as tf.Tensor2D)).toThrow(/dtype float32/);
    });
    router.dispose();
  });
});

describe('moeppRouterConfigFromOfficial', () => {
  it('maps the official config.json fields', () => {
    expect(
      moeppRouterConfigFromOfficial({
        hidden_size: 1536,
        num_experts: [20],
        moe_2layer_gate: false,
        moe_use_logits_norm: true,
        moe_gate_norm_std: 1.0,
        moe_use_mixtral_gating: false,
        moe_feature_no_mul_topk: true,
        initializer_range: 0.01,
      }),
    ).toEqual({
      dim: 1536,
      numExperts: 20,
      twoLayerGate: false,
      useLogitsNorm: true,
      gateNormStd: 1,
      useMixtralGating: false,
      featureNoMulTopK: true,
      initializerRange: 0.01,
    });
    expect(() => moeppRouterConfigFromOfficial({ hidden_size: 8, num_experts: [] })).toThrow(/'num_experts' must be an integer >= 1, got undefined/);
  });
});

describe('MoEPlusPlusRouter memory', () => {
  it('does not leak, with residual, mask and capacity', async () => {
    const router = handRouter({ useLogitsNorm: true, capacity: { mode: 'heterogeneous', capacityFactor: 1.1, tau: 0.75 } });
    const x = identity();
    const previous = tf.ones([2, 4]) as tf.Tensor2D;
    const mask = tf.tensor1d([1, 0]);
    const out = await expectNoLeak(() => router.route(x, { previousLogits: previous, tokenMask: mask }), 11);
    disposeRouterOutput(out);
    const twoLayer = new MoEPlusPlusRouter({ dim: 2, numExperts: 4, twoLayerGate: true, rng: new SeededRandom(1) });
    await expectNoLeak(() => disposeRouterOutput(twoLayer.route(x, { previousLogits: previous })));
    twoLayer.dispose();
    router.dispose();
    tf.dispose([x, previous, mask]);
  });
});

describe('MoEPlusPlusRouter without aux losses (auxiliary: false)', () => {
  it('routes exactly as with them, computes the statistics, and returns auxLosses {}', () => {
    const kinds: ExpertKind[] = ['ffn', 'ffn', 'ffn', 'constant', 'copy', 'zero'];
    const rng = new SeededRandom(5);
    const router = new MoEPlusPlusRouter({ dim: 8, numExperts: 6, expertKinds: kinds, capacity: { mode: 'heterogeneous', capacityFactor: 1.1, tau: 0.5 }, rng });
    const x = tf.randomNormal([32, 8], 0, 1, 'float32', 3) as tf.Tensor2D;
    const previous = tf.randomNormal([32, 6], 0, 1, 'float32', 4) as tf.Tensor2D;
    const mask = tf.tensor1d(Array.from({ length: 32 }, (_, n) => (n % 7 === 6 ? 0 : 1)));
    const options: RouteOptions = { previousLogits: previous, tokenMask: mask };
    withOutput(router, x, (full) => {
      withOutput(
        router,
        x,
        (lean) => {
          expect(Object.keys(full.auxLosses).sort()).toEqual(['loadBalance', 'zLoss']);
          expect(lean.auxLosses).toEqual({});
          expect(lean.expertIndices.arraySync()).toEqual(full.expertIndices.arraySync());
          expect(lean.keepMask.arraySync()).toEqual(full.keepMask.arraySync());
          expect(lean.combineWeights.arraySync()).toEqual(full.combineWeights.arraySync());
          expect(lean.logits.arraySync()).toEqual(full.logits.arraySync());
          expect(readRoutingStatsSync(lean.stats)).toEqual(readRoutingStatsSync(full.stats));
          // The loss on the router's shared one-hot equals the public function on the indices alone.
          const expected = tf.tidy(() => heterogeneousLoadBalanceLoss(full.probabilities, full.expertIndices, kinds, 0.75, mask).arraySync());
          expectTensorClose(full.auxLosses.loadBalance!, expected);
        },
        { ...options, auxiliary: false },
      );
    }, options);
    router.dispose();
    tf.dispose([x, previous, mask]);
  });

  it('does not leak', async () => {
    const router = handRouter({ useLogitsNorm: true });
    const x = identity();
    await expectNoLeak(() => disposeRouterOutput(router.route(x, { auxiliary: false })));
    const out = await expectNoLeak(() => router.route(x, { auxiliary: false }), 9); // 5 tensors and 4 statistics
    disposeRouterOutput(out);
    router.dispose();
    x.dispose();
  });
});
