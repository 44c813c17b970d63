import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { createModel, type DecoderLM } from './decoder.js';
import { MoeLayer } from './moe-layer.js';
import { DEFAULT_MOE_SETTINGS, type MoeLayerConfig } from './index.js';
import { countModelParameters } from './accounting.js';
import { addExperts, expertIndexMap, selectTrainable } from './grow.js';

const D = 8;
const F = 12;
const baseConfig = {
  vocabSize: 13,
  hiddenSize: D,
  intermediateSize: F,
  numLayers: 3,
  numHeads: 2,
  maxSeqLen: 6,
  initializerRange: 0.3,
  moe: { experts: { ffn: 2, zero: 1, copy: 1, constant: 1 }, topK: 2, logitsNorm: false },
} as const;
const added = { ffn: 2, constant: 1, zero: 1 } as const;

/** Rewrites a variable's values on the host. */
function edit(variable: tf.Variable | undefined, change: (values: Float32Array, cols: number) => void): void {
  if (!variable) throw new Error('missing variable');
  const values = variable.dataSync().slice() as Float32Array;
  change(values, variable.shape[variable.shape.length - 1] as number);
  const next = tf.tensor(values, variable.shape);
  variable.assign(next);
  next.dispose();
}

function snapshot(model: DecoderLM): Map<string, Float32Array> {
  return new Map(model.parameters().map((p) => [p.name, p.variable.dataSync().slice() as Float32Array]));
}

const moeLayers = (model: DecoderLM) => model.blocks.map((b) => b.ffn).filter((f): f is MoeLayer => f instanceof MoeLayer);

/**
 * Makes hidden coordinate 0 a constant positive "bias" channel in every block: a large embedding value
 * that nothing writes against (attention, FFN experts and constant experts add nothing negative to it)
 * and that the old routers ignore. The normalised router input then has x_0 > 0 for every token, so a
 * new expert whose router column is `-1000·e_0` has a very negative logit whatever the token.
 */
function reserveBiasChannel(model: DecoderLM): void {
  edit(model.embedding, (v, cols) => {
    for (let r = 0; r < v.length / cols; r++) v[r * cols] = 6;
  });
  for (const block of model.blocks) {
    edit(block.attention.oProj, (v, cols) => {
      for (let r = 0; r < v.length / cols; r++) v[r * cols] = 0;
    });
  }
  for (const layer of moeLayers(model)) {
    for (const expert of layer.experts) {
      if (expert.kind === 'ffn') {
        edit(expert.weights.downProj, (v, cols) => {
          for (let r = 0; r < v.length / cols; r++) v[r * cols] = 0;
        });
      }
      if (expert.kind === 'constant') edit(expert.weights.constant, (v) => void (v[0] = Math.abs(v[0]!)));
    }
    const { wg, wg0, wg2 } = layer.router.weights;
    if (wg) edit(wg, (v, cols) => v.fill(0, 0, cols)); // row 0: old experts ignore the bias channel
    if (wg0 && wg2) {
      // Hidden unit 0 = tanh(5·x_0) ≈ 1 is the bias unit; the old experts ignore it.
      edit(wg0, (v, cols) => {
        for (let r = 0; r < v.length / cols; r++) v[r * cols] = r === 0 ? 5 : 0;
      });
      edit(wg2, (v, cols) => v.fill(0, 0, cols));
    }
  }
}

/** Gives each new expert the router column `-1000·e_0` (one-layer gate) or `-1000·e_{unit 0}` (2-layer gate). */
function makeUnreachable(model: DecoderLM, newExperts: readonly number[]): void {
  for (const layer of moeLayers(model)) {
    const column = layer.router.weights.wg ?? layer.router.weights.wg2;
    edit(column, (v, cols) => {
      for (const j of newExperts) for (let r = 0; r < v.length / cols; r++) v[r * cols + j] = r === 0 ? -1000 : 0;
    });
  }
}

describe('expertIndexMap', () => {
  it('keeps the official order: new experts after their kind, later kinds shift', () => {
    expect(expertIndexMap({ ffn: 4, constant: 1, copy: 1, zero: 1 }, { ffn: 6, constant: 1, copy: 1, zero: 1 })).toEqual({
      indexMap: [0, 1, 2, 3, 6, 7, 8],
      newExperts: [4, 5],
    });
    // ffn0 ffn1 | const0 CONST1 | copy0 | zero0 ZERO1
    expect(expertIndexMap({ ffn: 2, constant: 1, copy: 1, zero: 1 }, { ffn: 2, constant: 2, copy: 1, zero: 2 })).toEqual({
      indexMap: [0, 1, 2, 4, 5],
      newExperts: [3, 6],
    });
    expect(() => expertIndexMap({ ffn: 2, constant: 1, copy: 1, zero: 1 }, { ffn: 1, constant: 1, copy: 1, zero: 1 })).toThrow(ConfigError);
  });
});

describe('addExperts', () => {
  const tokens = () => tf.tensor2d([[1, 2, 3, 4, 5], [6, 7, 8, 9, 12]], [2, 5], 'int32');

  for (const twoLayerGate of [false, true]) {
    it(`${twoLayerGate ? '2-layer' : '1-layer'} gate: with the new experts' router columns very negative, the grown model computes the old one`, () => {
      const model = createModel({ ...baseConfig, moe: { ...baseConfig.moe, twoLayerGate } }, 1);
      reserveBiasChannel(model);
      const { grown, newExperts, indexMap } = addExperts(model, added, new SeededRandom(2));
      expect(newExperts).toEqual([2, 3, 5, 8]);
      expect(indexMap).toEqual([0, 1, 4, 6, 7]);
      expect(moeLayers(grown)[0]!.kinds).toEqual(['ffn', 'ffn', 'ffn', 'ffn', 'constant', 'constant', 'copy', 'zero', 'zero']);
      const input = tokens();
      tf.tidy(() => {
        // Fresh columns compete: the new experts get tokens and change the output.
        const fresh = grown.forward(input);
        expect(fresh.moeLayers.some((m) => newExperts.some((j) => (m.tokensPerExpert[j] ?? 0) > 0))).toBe(true);
        makeUnreachable(grown, newExperts);
        const before = model.forward(input);
        const after = grown.forward(input);
        expectTensorClose(after.logits, before.logits, { atol: 1e-5 });
        after.moeLayers.forEach((layer, l) => {
          const old = before.moeLayers[l]!;
          expect(newExperts.map((j) => layer.tokensPerExpert[j])).toEqual([0, 0, 0, 0]);
          expect(indexMap.map((j) => layer.tokensPerExpert[j])).toEqual(old.tokensPerExpert);
          // Not a trivial routing: the old experts share the tokens.
          expect(old.tokensPerExpert.filter((n) => n > 0).length).toBeGreaterThan(1);
        });
      });
      tf.dispose(input);
      grown.dispose();
      model.dispose();
    });
  }

  it('keeps every existing weight (moved to its new index), grows gate_map with zero rows, leaves the old model untouched', () => {
    const model = createModel(baseConfig, 3);
    const before = snapshot(model);
    const { grown, indexMap, newExperts } = addExperts(model, added, new SeededRandom(4));
    tf.tidy(() => {
      for (const { name, variable } of model.parameters()) expectTensorClose(variable, tf.tensor(before.get(name)!, variable.shape), { atol: 0, rtol: 0 });
      moeLayers(grown).forEach((layer, l) => {
        const old = moeLayers(model)[l]!;
        old.experts.forEach((expert, e) => {
          const moved = layer.experts[indexMap[e]!]!;
          expect(moved.kind).toBe(expert.kind);
          for (const [local, variable] of Object.entries(expert.weights)) expectTensorClose(moved.weights[local]!, variable, { atol: 0, rtol: 0 });
        });
        const index = tf.tensor1d([...indexMap], 'int32');
        const wg = layer.router.weights.wg!; // [D, E']
        expectTensorClose(tf.gather(wg, index, 1), old.router.weights.wg!, { atol: 0, rtol: 0 });
        const gateMap = layer.router.weights.gateMap!; // [E', E']
        expectTensorClose(tf.gather(tf.gather(gateMap, index, 0), index, 1), old.router.weights.gateMap!, { atol: 0, rtol: 0 });
        expectTensorClose(tf.gather(gateMap, tf.tensor1d([...newExperts], 'int32'), 0), tf.zeros([newExperts.length, 9]), { atol: 0 });
        // New columns are fresh, not zero.
        expect(tf.gather(gateMap, tf.tensor1d([...newExperts], 'int32'), 1).abs().sum().dataSync()[0]).toBeGreaterThan(0);
      });
      // Outside the MoE layers, every weight is copied.
      const grownParams = new Map(grown.parameters().map((p) => [p.name, p.variable]));
      for (const [name, values] of before) {
        if (!name.includes('.mlp.moe.')) expectTensorClose(grownParams.get(name)!, tf.tensor(values, grownParams.get(name)!.shape), { atol: 0 });
      }
    });
    grown.dispose();
    model.dispose();
  });

  for (const twoLayerGate of [false, true]) {
    it(`${twoLayerGate ? '2-layer' : '1-layer'} gate: the parameter count grows by exactly the new experts and router entries`, () => {
      const model = createModel({ ...baseConfig, moe: { ...baseConfig.moe, twoLayerGate } }, 5);
      const { grown } = addExperts(model, added, new SeededRandom(6));
      const count = (m: DecoderLM) => m.parameters().reduce((total, p) => total + p.variable.size, 0);
      const [E, E2] = [5, 9];
      const experts = added.ffn * (D * 2 * F + F * D) + added.constant * (D * 2 + D);
      const router = (twoLayerGate ? D * 8 * (E2 - E) + 8 * E2 * E2 - 8 * E * E : D * (E2 - E)) + (E2 * E2 - E * E);
      expect(count(grown) - count(model)).toBe(baseConfig.numLayers * (experts + router));
      expect(countModelParameters(grown.config).total).toBe(count(grown));
      grown.dispose();
      model.dispose();
    });
  }

  it('grows a lone MoeLayer the same way (positive inputs, very negative new columns: same output)', () => {
    const config: MoeLayerConfig = {
      ...DEFAULT_MOE_SETTINGS,
      hiddenSize: 4,
      intermediateSize: 6,
      initializerRange: 0.3,
      experts: { ffn: 3, zero: 1, copy: 1, constant: 1 },
      logitsNorm: false,
      gatingResidual: false,
    };
    const layer = new MoeLayer(config, new SeededRandom(7));
    const { grown, newExperts } = addExperts(layer, { ffn: 1, copy: 1 }, new SeededRandom(8));
    expect(grown.kinds).toEqual(['ffn', 'ffn', 'ffn', 'ffn', 'constant', 'copy', 'copy', 'zero']);
    edit(grown.router.weights.wg, (v, cols) => {
      for (const j of newExperts) for (let r = 0; r < v.length / cols; r++) v[r * cols + j] = -1000;
    });
    const x = tf.add(tf.abs(tf.randomNormal([6, 4], 0, 1, 'float32', 9)), 0.1) as tf.Tensor2D;
    tf.tidy(() => expectTensorClose(grown.forward(x).output, layer.forward(x).output, { atol: 1e-6 }));
    tf.dispose(x);
    grown.dispose();
    layer.dispose();
  });

  it('rejects a dense model and bad counts', () => {
    const dense = createModel({ ...baseConfig, moe: null }, 9);
    const model = createModel(baseConfig, 9);
    const rng = new SeededRandom(10);
    expect(() => addExperts(dense, { ffn: 1 }, rng)).toThrow(/addExperts: the model is dense/);
    expect(() => addExperts(model, {}, rng)).toThrow(/adds no experts/);
    expect(() => addExperts(model, { ffn: -1 }, rng)).toThrow(ConfigError);
    expect(() => addExperts(model, { ffn: 1.5 }, rng)).toThrow(ConfigError);
    expect(() => addExperts(model, { gelu: 1 } as never, rng)).toThrow(/unknown expert kind 'gelu'/);
    model.dispose();
    dense.dispose();
  });

  it('does not leak', async () => {
    const model = createModel(baseConfig, 11);
    await expectNoLeak(() => addExperts(model, added, new SeededRandom(12)).grown.dispose());
    model.dispose();
  });
});

describe('selectTrainable', () => {
  it('selects groups by official name', () => {
    const model = createModel(baseConfig, 13);
    const names = (spec: Parameters<typeof selectTrainable>[1]) => {
      const chosen = new Set(selectTrainable(model, spec));
      return model.parameters().filter((p) => chosen.has(p.variable)).map((p) => p.name);
    };
    expect(names({ embeddings: true })).toEqual(['model.embed_tokens.weight', 'lm_head.weight']);
    expect(names({ router: true }).every((n) => /\.mlp\.moe\.gate\.(wg|gate_map)\.weight$/.test(n))).toBe(true);
    expect(names({ router: true })).toHaveLength(3 * 2);
    expect(names({ experts: [0, 2] })).toEqual(
      [0, 1, 2].flatMap((l) => [
        `model.layers.${l}.mlp.moe.experts.experts.0.up_proj.weight`,
        `model.layers.${l}.mlp.moe.experts.experts.0.down_proj.weight`,
        `model.layers.${l}.mlp.moe.experts.experts.2.constant`,
        `model.layers.${l}.mlp.moe.experts.experts.2.wg.weight`,
      ]),
    );
    expect(names({ norms: true })).toHaveLength(3 * 2 + 1);
    expect(names({ attention: true, exclude: /layers\.[12]\./ })).toEqual(
      ['q', 'k', 'v', 'o'].map((p) => `model.layers.0.self_attn.${p}_proj.weight`),
    );
    expect(names({ include: /^model\.norm\./ })).toEqual(['model.norm.weight']);
    expect(names({ experts: 'all', router: true, attention: true, norms: true, embeddings: true })).toHaveLength(model.parameters().length);
    expect(() => selectTrainable(model, {})).toThrow(/selects no variable/);
    expect(() => selectTrainable(model, { experts: [5] })).toThrow(ConfigError);
    model.dispose();
  });

  it('a few Adam steps on the selection change only the router and the new experts', () => {
    const model = createModel({ ...baseConfig, moe: { ...baseConfig.moe, logitsNorm: true } }, 14);
    const { grown, newExperts } = addExperts(model, { ffn: 2 }, new SeededRandom(15));
    model.dispose();
    const variables = selectTrainable(grown, { router: true, experts: newExperts });
    const chosen = new Set(variables);
    const before = snapshot(grown);
    const input = tf.tensor2d([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], [2, 4, 6, 8, 10, 12]], [3, 6], 'int32');
    const targets = tf.tensor2d([[2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 0], [3, 5, 7, 9, 11, 1]], [3, 6], 'int32');
    const optimizer = tf.train.adam(0.05);
    const newExpertTokens: number[] = [];
    for (let step = 0; step < 3; step++) {
      optimizer.minimize(
        () => {
          const out = grown.forward(input, { training: true });
          for (const m of out.moeLayers) newExpertTokens.push(...newExperts.map((j) => m.tokensPerExpert[j] ?? 0));
          const logits = out.logits.reshape([18, 13]);
          const crossEntropy = tf.losses.softmaxCrossEntropy(tf.oneHot(targets.reshape([18]), 13).cast('float32'), logits);
          const balance = tf.addN(out.moeLayers.map((m) => m.auxLosses.loadBalance!));
          return tf.add(crossEntropy, tf.mul(0.01, balance)) as tf.Scalar;
        },
        false,
        variables,
      );
    }
    expect(Math.min(...newExpertTokens)).toBeGreaterThan(0); // precondition: the new experts see tokens every step
    for (const { name, variable } of grown.parameters()) {
      const [now, then] = [variable.dataSync(), before.get(name)!];
      const changed = now.some((value, i) => value !== then[i]);
      // The first MoE layer's gate_map has no previous logits to map (as in the official code): no gradient.
      const trained = chosen.has(variable) && name !== 'model.layers.0.mlp.moe.gate.gate_map.weight';
      expect({ name, changed }).toEqual({ name, changed: trained });
    }
    optimizer.dispose();
    tf.dispose([input, targets]);
    grown.dispose();
  });

  it('markFrozen sets variable.trainable, and a full selection resets it', () => {
    const model = createModel(baseConfig, 16);
    const chosen = new Set(selectTrainable(model, { router: true, markFrozen: true }));
    for (const { variable } of model.parameters()) expect(variable.trainable).toBe(chosen.has(variable));
    selectTrainable(model, { experts: 'all', router: true, attention: true, norms: true, embeddings: true, markFrozen: true });
    expect(model.parameters().every((p) => p.variable.trainable)).toBe(true);
    model.dispose();
  });
});
