import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { SeededRandom } from '@moepp/tensors-core';
import { checkVariableGradients, expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { MoeLayer, uniformAssignment, type MoeLayerConfig } from './moe-layer.js';
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
