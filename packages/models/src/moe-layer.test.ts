import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { planDispatch, SeededRandom } from '@moepp/tensors-core';
import { checkVariableGradients, expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { MoeLayer, uniformAssignment, type MoeForwardOptions, type MoeLayerConfig } from './moe-layer.js';
import { DEFAULT_MOE_SETTINGS } from './config.js';
import { DenseFfn } from './layers/dense-ffn.js';

function layerConfig(overrides: Partial<MoeLayerConfig>): MoeLayerConfig {
  return { ...DEFAULT_MOE_SETTINGS, hiddenSize: 4, intermediateSize: 6, initializerRange: 0.3, ...overrides };
}

const setWeight = (v: tf.Variable | undefined, values: tf.Tensor) => {
  if (!v) throw new Error('missing weight');
  v.assign(values);
  values.dispose();
};

describe('MoeLayer', () => {
  it('a 1-expert MoE equals a dense FFN, in outputs and gradients', () => {
    const layer = new MoeLayer(
      layerConfig({ experts: { ffn: 1, zero: 0, copy: 0, constant: 0 }, topK: 1, logitsNorm: false, gatingResidual: false }),
      new SeededRandom(1),
    );
    const dense = new DenseFfn(4, 6, new SeededRandom(2));
    // The fused up_proj [D, 2F] is [gate_proj | up_proj].
    const expert = layer.experts[0]!;
    const [gate, up] = tf.split(expert.weights.upProj!, 2, 1);
    setWeight(dense.gateProj, gate!);
    setWeight(dense.upProj, up!);
    dense.downProj.assign(expert.weights.downProj!);
    const x = tf.randomNormal([5, 4], 0, 1, 'float32', 3) as tf.Tensor2D;
    tf.tidy(() => {
      expectTensorClose(layer.forward(x).output, dense.apply(x), { atol: 1e-5 });
      const moeGrads = tf.grads((input: tf.Tensor) => layer.forward(input as tf.Tensor2D).output.square().sum())([x]);
      const denseGrads = tf.grads((input: tf.Tensor) => dense.apply(input as tf.Tensor2D).square().sum())([x]);
      expectTensorClose(moeGrads[0]!, denseGrads[0]!, { atol: 1e-5 });
      const moeWeightGrad = tf.variableGrads(() => layer.forward(x).output.square().sum() as tf.Scalar, [expert.weights.downProj!]);
      const denseWeightGrad = tf.variableGrads(() => dense.apply(x).square().sum() as tf.Scalar, [dense.downProj]);
      expectTensorClose(Object.values(moeWeightGrad.grads)[0]!, Object.values(denseWeightGrad.grads)[0]!, { atol: 1e-5 });
    });
    tf.dispose(x);
    layer.dispose();
    dense.dispose();
  });

  it('MoE++ whose router never picks a zero-computation expert equals vanilla MoE with the same weights', () => {
    const common = { topK: 2, logitsNorm: false, gatingResidual: false } as const;
    const vanilla = new MoeLayer(layerConfig({ ...common, experts: { ffn: 3, zero: 0, copy: 0, constant: 0 } }), new SeededRandom(4));
    const plus = new MoeLayer(layerConfig({ ...common, experts: { ffn: 3, zero: 1, copy: 1, constant: 2 } }), new SeededRandom(5));
    // Positive inputs and positive FFN gate columns: FFN logits > 0 = the zero-computation logits.
    const ffnColumns = tf.add(tf.abs(tf.randomNormal([4, 3], 0, 1, 'float32', 6)), 0.5);
    setWeight(vanilla.router.weights.wg, ffnColumns.clone());
    setWeight(plus.router.weights.wg, tf.concat([ffnColumns, tf.zeros([4, 4])], 1));
    ffnColumns.dispose();
    vanilla.experts.forEach((expert, e) => {
      for (const [name, variable] of Object.entries(expert.weights)) plus.experts[e]!.weights[name]!.assign(variable);
    });
    const x = tf.add(tf.abs(tf.randomNormal([6, 4], 0, 1, 'float32', 7)), 0.1) as tf.Tensor2D;
    tf.tidy(() => {
      const a = vanilla.forward(x);
      const b = plus.forward(x);
      expect(Array.from(b.expertIndices.dataSync()).every((e) => e < 3)).toBe(true);
      expectTensorClose(b.output, a.output, { atol: 1e-5 });
      expect(b.tokensPerExpert.slice(3)).toEqual([0, 0, 0, 0]);
    });
    tf.dispose(x);
    vanilla.dispose();
    plus.dispose();
  });

  it('a token routed to {FFN, zero} gets the FFN output with weight 1 under the code gate rule', () => {
    const layer = new MoeLayer(
      layerConfig({ experts: { ffn: 1, zero: 1, copy: 0, constant: 0 }, topK: 2, logitsNorm: false, gatingResidual: false }),
      new SeededRandom(8),
    );
    const x = tf.randomNormal([3, 4], 0, 1, 'float32', 9) as tf.Tensor2D;
    tf.tidy(() => {
      const out = layer.forward(x);
      expectTensorClose(out.output, layer.experts[0]!.apply(x), { atol: 1e-6 });
      expect(out.tokensPerExpert).toEqual([3, 3]);
    });
    const paper = new MoeLayer(
      layerConfig({ experts: { ffn: 1, zero: 1, copy: 0, constant: 0 }, topK: 2, logitsNorm: false, gatingResidual: false, zeroGateRule: 'raw-softmax' }),
      new SeededRandom(8),
    );
    tf.tidy(() => {
      // Eq. 1: the FFN output is weighted by its raw softmax probability (< 1).
      const out = paper.forward(x);
      const probabilities = tf.softmax(tf.matMul(x, paper.router.weights.wg!)); // [N, 2]
      const ffnWeight = probabilities.slice([0, 0], [3, 1]);
      expectTensorClose(out.output, tf.mul(paper.experts[0]!.apply(x), ffnWeight), { atol: 1e-6 });
    });
    tf.dispose(x);
    layer.dispose();
    paper.dispose();
  });

  it('copy and constant experts add their elementwise outputs, weighted by the gates', () => {
    const layer = new MoeLayer(
      layerConfig({ experts: { ffn: 0 + 1, zero: 0, copy: 1, constant: 0 }, topK: 1, logitsNorm: false, gatingResidual: false }),
      new SeededRandom(10),
    );
    // Route everything to the copy expert (index 1): E(x) = x with gate 1 (softmax over top-1 renormalised).
    setWeight(layer.router.weights.wg, tf.tensor2d([[0, 10], [0, 10], [0, 10], [0, 10]]));
    const x = tf.tensor2d([[1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5]]);
    tf.tidy(() => expectTensorClose(layer.forward(x).output, x));
    tf.dispose(x);
    layer.dispose();
  });

  it('does no work for the zero expert: all-zero routing gives zeros and no expert rows', () => {
    const layer = new MoeLayer(
      layerConfig({ experts: { ffn: 2, zero: 1, copy: 0, constant: 0 }, topK: 1, logitsNorm: false, gatingResidual: false, zeroGateRule: 'raw-softmax' }),
      new SeededRandom(11),
    );
    const x = tf.randomNormal([4, 4], 0, 1, 'float32', 12) as tf.Tensor2D;
    tf.tidy(() => {
      const out = layer.forward(x, { uniformRouting: { ffnShare: 0 } });
      expect(out.tokensPerExpert).toEqual([0, 0, 4]);
      expectTensorClose(out.output, tf.zeros([4, 4]));
    });
    tf.dispose(x);
    layer.dispose();
  });

  it('uniform routing sends exactly the requested share of slots to FFN experts, evenly', () => {
    const kinds = ['ffn', 'ffn', 'ffn', 'ffn', 'constant', 'constant', 'copy', 'zero'] as const;
    const assignment = uniformAssignment(100, 2, kinds, 0.6);
    const values = Array.from(assignment.dataSync());
    const perExpert = kinds.map((_, e) => values.filter((v) => v === e).length);
    expect(perExpert.slice(0, 4).reduce((a, b) => a + b)).toBe(120);
    expect(perExpert.slice(0, 4)).toEqual([30, 30, 30, 30]);
    expect(perExpert.slice(4)).toEqual([20, 20, 20, 20]);
    assignment.dispose();
    expect(() => uniformAssignment(4, 2, ['ffn', 'ffn'], 0.5)).toThrow(/needs zero-computation experts/);
  });

  it('has router, constant-expert and FFN gradients that match finite differences', () => {
    const layer = new MoeLayer(
      layerConfig({ experts: { ffn: 2, zero: 1, copy: 1, constant: 1 }, topK: 2, gatingResidual: true }),
      new SeededRandom(13),
    );
    const x = tf.randomNormal([12, 4], 0, 1, 'float32', 14) as tf.Tensor2D;
    const previous = tf.randomNormal([12, 5], 0, 1, 'float32', 15) as tf.Tensor2D;
    const weights = [layer.router.weights.wg!, layer.router.weights.gateMap!, layer.experts[2]!.weights.wg!, layer.experts[0]!.weights.downProj!];
    const loss = () => layer.forward(x, { previousLogits: previous }).output.square().sum() as tf.Scalar;
    // Routing is piecewise constant in the router weights: a small step keeps the same top-k choices.
    checkVariableGradients(loss, weights, { epsilon: 1e-3, maxElements: 6, atol: 2e-3, rtol: 5e-2 });
    tf.dispose([x, previous]);
    layer.dispose();
  });

  it('does not leak over a forward and backward pass', async () => {
    const layer = new MoeLayer(layerConfig({}), new SeededRandom(16));
    const x = tf.randomNormal([8, 4], 0, 1, 'float32', 17) as tf.Tensor2D;
    layer.forward(x).output.dispose(); // first call may build caches
    await expectNoLeak(() => {
      tf.tidy(() => {
        const { grads } = tf.variableGrads(() => layer.forward(x, { training: true }).output.square().sum() as tf.Scalar);
        // Experts no token was routed to (and gate_map, with no previous logits) get no gradient.
        expect(Object.keys(grads)).toContain(layer.router.weights.wg!.name);
        expect(Object.keys(grads).length).toBeGreaterThan(2);
      });
    });
    tf.dispose(x);
    layer.dispose();
  });

  it('names its parameters with the official module paths', () => {
    const layer = new MoeLayer(layerConfig({ experts: { ffn: 2, zero: 1, copy: 1, constant: 2 } }), new SeededRandom(18));
    const names = layer.parameters('model.layers.0.mlp.moe').map((p) => p.name);
    expect(names).toEqual(
      expect.arrayContaining([
        'model.layers.0.mlp.moe.gate.wg.weight',
        'model.layers.0.mlp.moe.gate.gate_map.weight',
        'model.layers.0.mlp.moe.experts.experts.0.up_proj.weight',
        'model.layers.0.mlp.moe.experts.experts.1.down_proj.weight',
        'model.layers.0.mlp.moe.experts.experts.2.constant',
        'model.layers.0.mlp.moe.experts.experts.3.wg.weight',
      ]),
    );
    expect(names).toHaveLength(2 + 2 * 2 + 2 * 2);
    layer.dispose();
  });
});

/**
 * The layer's forward pass as it was before copy and constant experts were computed per token: every
 * non-zero expert (copy and constant included) gets its rows gathered, runs `expert.apply`, is scaled by
 * the gates, and all rows are scatter-added with one unsorted segment sum. The reference for the new path.
 */
function scatterReference(layer: MoeLayer, x: tf.Tensor2D, options: MoeForwardOptions = {}): tf.Tensor2D {
  const numTokens = x.shape[0];
  const topK = layer.config.topK;
  const routed = layer.router.route(x, {
    previousLogits: options.previousLogits ?? null,
    ...(options.tokenMask ? { tokenMask: options.tokenMask } : {}),
  });
  let { expertIndices, combineWeights, keepMask } = routed;
  if (options.uniformRouting) {
    const share = options.uniformRouting === true ? null : options.uniformRouting.ffnShare;
    expertIndices = uniformAssignment(numTokens, topK, layer.kinds, share);
    combineWeights = tf.fill([numTokens, topK], 1 / topK) as tf.Tensor2D;
    keepMask = tf.onesLike(combineWeights);
  }
  const expertInput = routed.expertInputScale === 1 ? x : (tf.mul(x, routed.expertInputScale) as tf.Tensor2D);
  const plan = planDispatch(expertIndices, layer.numExperts, keepMask);
  const flatGates = combineWeights.reshape([numTokens * topK]);
  const outputs: tf.Tensor2D[] = [];
  const destinations: tf.Tensor1D[] = [];
  layer.experts.forEach((expert, e) => {
    const count = plan.counts[e] as number;
    if (count === 0 || expert.kind === 'zero') return;
    const tokenIds = plan.tokenIds[e] as tf.Tensor1D;
    const rows = tf.gather(expertInput, tokenIds) as tf.Tensor2D;
    const gates = tf.gather(flatGates, plan.slotIds[e] as tf.Tensor1D).reshape([count, 1]);
    outputs.push(tf.mul(expert.apply(rows), gates) as tf.Tensor2D);
    destinations.push(tokenIds);
  });
  if (outputs.length === 0) return tf.zerosLike(x) as tf.Tensor2D;
  return tf.unsortedSegmentSum(tf.concat(outputs, 0), tf.concat(destinations, 0), numTokens) as tf.Tensor2D;
}

describe('MoeLayer combine: copy and constant experts per token, FFN rows gathered once', () => {
  const layerVariables = (layer: MoeLayer): tf.Variable[] => [
    ...Object.values(layer.router.weights),
    ...layer.experts.flatMap((expert) => Object.values(expert.weights)),
  ];
  /** Output, d/dx and d/d(every weight that gets a gradient) of sum(output · dy). */
  function outputAndGradients(layer: MoeLayer, forward: (x: tf.Tensor2D) => tf.Tensor2D, x: tf.Tensor2D, dy: tf.Tensor2D) {
    const output = forward(x).arraySync();
    const dx = tf.grad((input: tf.Tensor) => tf.sum(tf.mul(forward(input as tf.Tensor2D), dy)))(x).arraySync();
    const { grads } = tf.variableGrads(() => tf.sum(tf.mul(forward(x), dy)) as tf.Scalar, layerVariables(layer));
    return { output, dx, grads: Object.fromEntries(Object.entries(grads).map(([name, g]) => [name, g.arraySync()])) };
  }
  const cases: { name: string; settings: Partial<MoeLayerConfig>; options: (tokens: number) => MoeForwardOptions }[] = [
    { name: 'routed by the router, with gating residual and padding', settings: {}, options: (n) => ({ tokenMask: tf.tensor1d(Array.from({ length: n }, (_, i) => (i % 5 === 4 ? 0 : 1))) }) },
    { name: 'heterogeneous capacity dropping assignments', settings: { capacityFactor: 0.6 }, options: () => ({}) },
    { name: 'expert input scaled by K (moe_feature_no_mul_topk = false)', settings: { scaleInputByTopK: true }, options: () => ({}) },
    { name: 'forced routing, FFN share 0.25', settings: {}, options: () => ({ uniformRouting: { ffnShare: 0.25 } }) },
    { name: 'two copy experts', settings: { experts: { ffn: 2, zero: 1, copy: 2, constant: 1 } }, options: () => ({ uniformRouting: { ffnShare: 0.2 } }) },
  ];
  for (const { name, settings, options } of cases) {
    it(`equals the scatter-everything reference in values and gradients: ${name}`, () => {
      const layer = new MoeLayer(layerConfig({ experts: { ffn: 3, zero: 1, copy: 1, constant: 2 }, ...settings }), new SeededRandom(21));
      const numTokens = 40;
      const x = tf.randomNormal([numTokens, 4], 0, 1, 'float32', 22) as tf.Tensor2D;
      const dy = tf.randomNormal([numTokens, 4], 0, 1, 'float32', 23) as tf.Tensor2D;
      const forwardOptions = options(numTokens);
      tf.tidy(() => {
        const out = layer.forward(x, forwardOptions);
        // The test can fail: copy and constant experts (and at least one FFN expert) get tokens.
        const picked = (kind: string) => layer.kinds.some((k, e) => k === kind && (out.tokensPerExpert[e] as number) > 0);
        expect([picked('ffn'), picked('copy'), picked('constant')]).toEqual([true, true, true]);
        const actual = outputAndGradients(layer, (input) => layer.forward(input, forwardOptions).output, x, dy);
        const expected = outputAndGradients(layer, (input) => scatterReference(layer, input, forwardOptions), x, dy);
        expectTensorClose(tf.tensor(actual.output), expected.output, { atol: 1e-5 });
        expectTensorClose(tf.tensor(actual.dx), expected.dx, { atol: 1e-5 });
        expect(Object.keys(actual.grads).sort()).toEqual(Object.keys(expected.grads).sort());
        for (const [variable, gradient] of Object.entries(expected.grads)) {
          expectTensorClose(tf.tensor(actual.grads[variable] as number[]), gradient as number[], { atol: 1e-5 });
        }
      });
      tf.dispose([x, dy, ...(forwardOptions.tokenMask ? [forwardOptions.tokenMask] : [])]);
      layer.dispose();
    });
  }

  it('gives an expert that no token picked no gradient, as before', () => {
    const layer = new MoeLayer(layerConfig({ experts: { ffn: 2, zero: 1, copy: 1, constant: 2 } }), new SeededRandom(24));
    const x = tf.randomNormal([6, 4], 0, 1, 'float32', 25) as tf.Tensor2D;
    tf.tidy(() => {
      // Forced routing, FFN share 0.5: slots alternate FFN / zero-computation; 6 ZC slots go round-robin to
      // constant 2, constant 3, copy 4, zero 5 — so every kind is picked; share 1 picks no ZC expert at all.
      const { grads } = tf.variableGrads(() => layer.forward(x, { uniformRouting: { ffnShare: 1 } }).output.sum() as tf.Scalar, layerVariables(layer));
      const constantWeights = layer.experts.flatMap((expert) => (expert.kind === 'constant' ? Object.values(expert.weights).map((v) => v.name) : []));
      expect(constantWeights).toHaveLength(4);
      for (const name of constantWeights) expect(Object.keys(grads)).not.toContain(name);
    });
    x.dispose();
    layer.dispose();
  });
});

describe('MoeLayer without aux losses (auxiliary: false)', () => {
  it('gives the same output, routing and statistics, and auxLosses {}', () => {
    const layer = new MoeLayer(layerConfig({}), new SeededRandom(26));
    const x = tf.randomNormal([16, 4], 0, 1, 'float32', 27) as tf.Tensor2D;
    const previous = tf.randomNormal([16, layer.numExperts], 0, 1, 'float32', 28) as tf.Tensor2D;
    tf.tidy(() => {
      const full = layer.forward(x, { previousLogits: previous });
      const lean = layer.forward(x, { previousLogits: previous, auxiliary: false });
      expect(Object.keys(full.auxLosses).sort()).toEqual(['loadBalance', 'zLoss']);
      expect(lean.auxLosses).toEqual({});
      expect(lean.output.arraySync()).toEqual(full.output.arraySync());
      expect(lean.expertIndices.arraySync()).toEqual(full.expertIndices.arraySync());
      expect(lean.tokensPerExpert).toEqual(full.tokensPerExpert);
      for (const key of ['tokensPerExpert', 'droppedAssignments', 'ffnExpertsPerToken', 'entropy'] as const) {
        expect(lean.stats[key].arraySync()).toEqual(full.stats[key].arraySync());
      }
    });
    tf.dispose([x, previous]);
    layer.dispose();
  });

  it('does not leak', async () => {
    const layer = new MoeLayer(layerConfig({}), new SeededRandom(29));
    const x = tf.randomNormal([8, 4], 0, 1, 'float32', 30) as tf.Tensor2D;
    await expectNoLeak(() => tf.tidy(() => void layer.forward(x, { auxiliary: false })));
    // Outside a tidy: exactly the returned tensors are new (output, 5 routing tensors, 4 statistics).
    const out = await expectNoLeak(() => layer.forward(x, { auxiliary: false }), 10);
    const { tokensPerExpert: _counts, expertForwardMs: _ms, auxLosses, stats, ...tensors } = out;
    expect(auxLosses).toEqual({});
    tf.dispose([...Object.values(tensors), ...Object.values(stats)]);
    await expectNoLeak(() => tf.tidy(() => void layer.forward(x, { uniformRouting: { ffnShare: 0.5 }, auxiliary: false })));
    x.dispose();
    layer.dispose();
  });
});
