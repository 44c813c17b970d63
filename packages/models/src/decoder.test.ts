import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, ShapeError, countParameters } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { DecoderLM, createModel } from './decoder.js';
import { MoeLayer } from './moe-layer.js';
import { PRESET_SIZES, PRESET_VARIANTS, presetConfig } from './presets.js';
import { countModelFlops, countModelParameters, ffnShare } from './accounting.js';
import { resolveModelConfig } from './config.js';

const tinyMoepp = {
  vocabSize: 11,
  hiddenSize: 8,
  intermediateSize: 12,
  numLayers: 3,
  numHeads: 2,
  maxSeqLen: 6,
  moe: { experts: { ffn: 2, zero: 1, copy: 1, constant: 1 }, topK: 2 },
} as const;

describe('DecoderLM', () => {
  it('maps [B, T] tokens to [B, T, V] logits and reports each MoE block', () => {
    const model = createModel(tinyMoepp, 1);
    const tokens = tf.tensor2d([[1, 2, 3, 4], [5, 6, 7, 8]], [2, 4], 'int32');
    tf.tidy(() => {
      const out = model.forward(tokens);
      expect(out.logits.shape).toEqual([2, 4, 11]);
      expect(out.moeLayers.map((m) => m.block)).toEqual([0, 1, 2]);
      expect(out.moeLayers[0]!.logits.shape).toEqual([8, 5]);
      expect(out.moeLayers[0]!.tokensPerExpert.reduce((a, b) => a + b)).toBe(16);
    });
    tokens.dispose();
    model.dispose();
  });

  it('with auxiliary: false gives the same logits and routing, and no aux losses', () => {
    const model = createModel(tinyMoepp, 1);
    const tokens = tf.tensor2d([[1, 2, 3, 4], [5, 6, 7, 8]], [2, 4], 'int32');
    tf.tidy(() => {
      const full = model.forward(tokens);
      const lean = model.forward(tokens, { auxiliary: false });
      expect(lean.logits.arraySync()).toEqual(full.logits.arraySync());
      expect(full.moeLayers.map((m) => Object.keys(m.auxLosses).sort())).toEqual(Array(3).fill(['loadBalance', 'zLoss']));
      expect(lean.moeLayers.map((m) => m.auxLosses)).toEqual([{}, {}, {}]);
      expect(lean.moeLayers.map((m) => m.tokensPerExpert)).toEqual(full.moeLayers.map((m) => m.tokensPerExpert));
    });
    tokens.dispose();
    model.dispose();
  });

  it('is causal end to end: changing the last token leaves earlier logits unchanged', () => {
    const model = createModel(tinyMoepp, 2);
    const a = tf.tensor2d([[1, 2, 3, 4]], [1, 4], 'int32');
    const b = tf.tensor2d([[1, 2, 3, 9]], [1, 4], 'int32');
    tf.tidy(() => {
      const la = model.forward(a).logits.slice([0, 0, 0], [1, 3, 11]);
      const lb = model.forward(b).logits.slice([0, 0, 0], [1, 3, 11]);
      expectTensorClose(la, lb, { atol: 1e-5 });
    });
    tf.dispose([a, b]);
    model.dispose();
  });

  it('threads router logits through three MoE++ layers (hand computation)', () => {
    const model = createModel({ ...tinyMoepp, moe: { ...tinyMoepp.moe, logitsNorm: false } }, 3);
    const layers = model.blocks.map((b) => b.ffn as MoeLayer);
    // Layers 2 and 3 ignore their input (wg = 0): G2 = G1 · 2I, G3 = G2 · A.
    const a = tf.randomNormal([5, 5], 0, 1, 'float32', 4);
    layers[1]!.router.weights.wg!.assign(tf.zerosLike(layers[1]!.router.weights.wg!));
    layers[2]!.router.weights.wg!.assign(tf.zerosLike(layers[2]!.router.weights.wg!));
    layers[1]!.router.weights.gateMap!.assign(tf.mul(tf.eye(5), 2));
    layers[2]!.router.weights.gateMap!.assign(a);
    const tokens = tf.tensor2d([[1, 2, 3]], [1, 3], 'int32');
    tf.tidy(() => {
      const [g1, g2, g3] = model.forward(tokens).moeLayers.map((m) => m.logits);
      expectTensorClose(g2!, tf.mul(g1!, 2), { atol: 1e-6 });
      expectTensorClose(g3!, tf.matMul(tf.mul(g1!, 2), a), { atol: 1e-5 });
    });
    tf.dispose([a, tokens]);
    model.dispose();
  });

  it('does not thread logits when gating residuals are off', () => {
    const model = createModel({ ...tinyMoepp, moe: { ...tinyMoepp.moe, gatingResidual: false } }, 5);
    expect((model.blocks[1]!.ffn as MoeLayer).router.weights.gateMap).toBeUndefined();
    model.dispose();
  });

  it('builds dense blocks between MoE blocks with an interval (official rule (l + 1) % interval == 0)', () => {
    const model = createModel({ ...tinyMoepp, numLayers: 4, moe: { ...tinyMoepp.moe, interval: 2 } }, 6);
    expect(model.blocks.map((b) => b.ffn instanceof MoeLayer)).toEqual([false, true, false, true]);
    model.dispose();
  });

  it('does not leak over a forward and backward pass', async () => {
    const model = createModel(tinyMoepp, 7);
    const tokens = tf.tensor2d([[1, 2, 3, 4]], [1, 4], 'int32');
    tf.tidy(() => model.forward(tokens).logits); // builds cached tables
    await expectNoLeak(() =>
      tf.tidy(() => {
        const { grads } = tf.variableGrads(() => {
          const out = model.forward(tokens, { training: true });
          return tf.losses.softmaxCrossEntropy(tf.oneHot(tokens.reshape([4]), 11), out.logits.reshape([4, 11])) as tf.Scalar;
        }, model.trainableVariables().filter((v) => !v.name.includes('unused')));
        expect(Object.keys(grads).length).toBeGreaterThan(10);
      }),
    );
    tokens.dispose();
    model.dispose();
  });

  it('rejects sequences longer than maxSeqLen and float tokens', () => {
    const model = createModel(tinyMoepp, 8);
    const long = tf.zeros([1, 7], 'int32') as tf.Tensor2D;
    expect(() => model.forward(long)).toThrow('DecoderLM.forward: cannot forward a sequence of length 7, maxSeqLen is only 6');
    const floats = tf.zeros([1, 3]) as tf.Tensor2D;
    expect(() => model.forward(floats)).toThrow(ShapeError);
    tf.dispose([long, floats]);
    model.dispose();
  });

  it('gives the same weights for the same seed', () => {
    const a = createModel(tinyMoepp, 9);
    const b = createModel(tinyMoepp, 9);
    const c = createModel(tinyMoepp, 10);
    const pa = a.parameters();
    const pb = b.parameters();
    pa.forEach((p, i) => expect(Array.from(p.variable.dataSync())).toEqual(Array.from(pb[i]!.variable.dataSync())));
    expect(Array.from(c.embedding.dataSync())).not.toEqual(Array.from(a.embedding.dataSync()));
    [a, b, c].forEach((m) => m.dispose());
  });
});

describe('presets and accounting', () => {
  it.each(PRESET_SIZES.flatMap((size) => PRESET_VARIANTS.map((variant) => [size, variant] as const)))(
    '%s/%s: the parameter count from the config equals the variables the model holds',
    (size, variant) => {
      const config = presetConfig(size, variant, { vocabSize: 256 });
      const model = new DecoderLM(config, 0);
      const names = model.parameters().map((p) => p.name);
      expect(new Set(names).size).toBe(names.length);
      expect(countModelParameters(config).total).toBe(countParameters(model.trainableVariables()));
      model.dispose();
    },
  );

  it('matches total parameters across the three variants within 2%, with the same FFN experts for MoE and MoE++', () => {
    const [dense, moe, moepp] = PRESET_VARIANTS.map((v) => countModelParameters(presetConfig('tiny', v, { vocabSize: 2048 })));
    expect(Math.abs(dense!.total - moe!.total) / moe!.total).toBeLessThan(0.02);
    expect(Math.abs(moepp!.total - moe!.total) / moe!.total).toBeLessThan(0.02);
    expect(moepp!.ffn).toBe(moe!.ffn);
  });

  it('counts parameters and FLOPs by hand on a small config', () => {
    const config = resolveModelConfig({
      vocabSize: 10, hiddenSize: 4, intermediateSize: 6, numLayers: 1, numHeads: 2, maxSeqLen: 8,
      moe: { experts: { ffn: 2, zero: 1, copy: 0, constant: 1 }, topK: 2, tau: 0.5, gatingResidual: true },
    });
    // embed 40 + head 40; attention 4·16 + norms 2·4; final norm 4; experts 2·3·4·6 = 144;
    // router 4·4 + gate_map 16; constant expert 3·4 = 12.
    const params = countModelParameters(config);
    expect(params.total).toBe(80 + 72 + 4 + 144 + 32 + 12);
    // r = 0.5·2 / (0.5·2 + 2) = 1/3; activated FFN experts per token = 2/3.
    expect(ffnShare(config.moe!)).toBeCloseTo(1 / 3, 12);
    expect(params.activated).toBeCloseTo(80 + 72 + 4 + (2 / 3) * 72 + 32 + 12, 9);
    const flops = countModelFlops(config, 8);
    const attention = 8 * 16 + 4 * 8 * 4;
    const head = 2 * 4 * 10;
    const router = 2 * 4 * 4 + 2 * 16;
    const constantShare = (2 - 2 / 3) * 0.5; // constant experts are half of the ZC experts
    expect(flops.activated).toBeCloseTo(attention + head + router + (2 / 3) * 6 * 24 + constantShare * 16, 9);
    expect(flops.total).toBe(attention + head + router + 2 * 6 * 24 + 16);
  });

  it('rejects invalid configs naming the field', () => {
    expect(() => resolveModelConfig({ ...tinyMoepp, moe: { ...tinyMoepp.moe, topK: 9 } })).toThrow(
      "ModelConfig: 'moe.topK' must be an integer >= 1 <= 5, got 9",
    );
    expect(() => resolveModelConfig({ ...tinyMoepp, moe: { ...tinyMoepp.moe, tau: -1 } })).toThrow(/'moe.tau'/);
    expect(() => resolveModelConfig({ ...tinyMoepp, moe: { ...tinyMoepp.moe, capacityFactor: -0.1 } })).toThrow(/'moe.capacityFactor'/);
    expect(() => resolveModelConfig({ ...tinyMoepp, numHeads: 3 })).toThrow(ConfigError);
    expect(() => resolveModelConfig({ ...tinyMoepp, vocabSize: 0 })).toThrow(/'vocabSize'/);
    expect(resolveModelConfig({ ...tinyMoepp, moe: { ...tinyMoepp.moe, capacityFactor: 0 } }).moe!.capacityFactor).toBe(0);
  });
});
