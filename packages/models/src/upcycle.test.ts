import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { createModel, type DecoderLM } from './decoder.js';
import { DenseFfn } from './layers/dense-ffn.js';
import { MoeLayer } from './moe-layer.js';
import { upcycle } from './upcycle.js';

// A larger init std than the default 0.02 so that every block changes the logits visibly.
const denseConfig = { vocabSize: 13, hiddenSize: 8, intermediateSize: 12, numLayers: 2, numHeads: 2, maxSeqLen: 6, initializerRange: 0.3 } as const;
const vanilla = { zero: 0, copy: 0, constant: 0 } as const;

function snapshot(model: DecoderLM): Map<string, Float32Array> {
  return new Map(model.parameters().map((p) => [p.name, p.variable.dataSync().slice() as Float32Array]));
}

function logitsOf(model: DecoderLM, tokens: tf.Tensor2D): tf.Tensor3D {
  return tf.tidy(() => model.forward(tokens).logits);
}

describe('upcycle', () => {
  const tokens = () => tf.tensor2d([[1, 2, 3, 4, 5], [6, 7, 8, 9, 12]], [2, 5], 'int32');

  it('with one FFN expert and top-1 computes the dense model exactly', () => {
    const dense = createModel(denseConfig, 1);
    const moe = upcycle(dense, { experts: { ffn: 1, ...vanilla }, topK: 1, logitsNorm: false }, 2);
    const input = tokens();
    tf.tidy(() => expectTensorClose(moe.forward(input).logits, dense.forward(input).logits, { atol: 1e-5 }));
    expect(moe.blocks.every((b) => b.ffn instanceof MoeLayer)).toBe(true);
    tf.dispose(input);
    moe.dispose();
    dense.dispose();
  });

  it('with 4 identical experts and top-2 computes the dense model whatever the router picks (gates sum to 1)', () => {
    const dense = createModel({ ...denseConfig, tieEmbeddings: true }, 3);
    const moe = upcycle(dense, { experts: { ffn: 4, ...vanilla }, topK: 2 }, 4);
    const input = tokens();
    tf.tidy(() => {
      const out = moe.forward(input);
      expectTensorClose(out.logits, dense.forward(input).logits, { atol: 1e-5 });
      // Not a trivial case: the fresh router spreads the tokens over several experts.
      for (const layer of out.moeLayers) expect(layer.tokensPerExpert.filter((n) => n > 0).length).toBeGreaterThan(1);
    });
    tf.dispose(input);
    moe.dispose();
    dense.dispose();
  });

  it('keeps the dense blocks between MoE blocks (interval 2)', () => {
    const dense = createModel({ ...denseConfig, numLayers: 4 }, 5);
    const moe = upcycle(dense, { experts: { ffn: 3, ...vanilla }, topK: 2, interval: 2 }, 6);
    expect(moe.blocks.map((b) => b.ffn instanceof MoeLayer)).toEqual([false, true, false, true]);
    const input = tokens();
    tf.tidy(() => expectTensorClose(moe.forward(input).logits, dense.forward(input).logits, { atol: 1e-5 }));
    tf.dispose(input);
    moe.dispose();
    dense.dispose();
  });

  it('MoE++: FFN experts equal the dense MLP, everything else outside the MoE layers is copied, ZC experts and routers are fresh', () => {
    const dense = createModel(denseConfig, 7);
    const moe = upcycle(dense, { experts: { ffn: 3, zero: 1, copy: 1, constant: 2 }, topK: 2 }, 8);
    const x = tf.randomNormal([5, 8], 0, 1, 'float32', 9) as tf.Tensor2D;
    moe.blocks.forEach((block, layer) => {
      const mlp = dense.blocks[layer]!.ffn as DenseFfn;
      const moeLayer = block.ffn as MoeLayer;
      expect(moeLayer.kinds).toEqual(['ffn', 'ffn', 'ffn', 'constant', 'constant', 'copy', 'zero']);
      tf.tidy(() => {
        for (const expert of moeLayer.experts.filter((e) => e.kind === 'ffn')) {
          expectTensorClose(expert.weights.upProj!, tf.concat([mlp.gateProj, mlp.upProj], 1), { atol: 0 });
          expectTensorClose(expert.weights.downProj!, mlp.downProj, { atol: 0 });
          expectTensorClose(expert.apply(x), mlp.apply(x), { atol: 1e-6 });
        }
      });
    });
    const before = snapshot(dense);
    tf.tidy(() => {
      for (const { name, variable } of moe.parameters()) {
        if (name.includes('.mlp.')) continue;
        expectTensorClose(variable, tf.tensor(before.get(name)!, variable.shape), { atol: 0 });
      }
    });
    // Fresh routers: same seed, same router as a model built from scratch with that seed.
    const scratch = createModel(moe.config, 8);
    const scratchParams = new Map(scratch.parameters().map((p) => [p.name, p.variable]));
    for (const { name, variable } of moe.parameters()) {
      if (name.includes('.mlp.moe.gate.') || /experts\.experts\.[3-6]\./.test(name)) {
        expectTensorClose(variable, scratchParams.get(name)!, { atol: 0 });
      }
    }
    tf.dispose(x);
    scratch.dispose();
    moe.dispose();
    dense.dispose();
  });

  it('leaves the dense model untouched, even when the upcycled model trains and is disposed', () => {
    const dense = createModel(denseConfig, 10);
    const input = tokens();
    const denseLogits = logitsOf(dense, input);
    const before = snapshot(dense);
    const moe = upcycle(dense, { experts: { ffn: 2, zero: 1, copy: 1, constant: 1 } }, 11);
    const optimizer = tf.train.adam(0.05);
    for (let step = 0; step < 2; step++) {
      optimizer.minimize(() => tf.mean(tf.square(moe.forward(input).logits)) as tf.Scalar, false, moe.trainableVariables());
    }
    moe.dispose();
    optimizer.dispose();
    tf.tidy(() => {
      for (const { name, variable } of dense.parameters()) {
        expectTensorClose(variable, tf.tensor(before.get(name)!, variable.shape), { atol: 0 });
      }
    });
    tf.tidy(() => expectTensorClose(dense.forward(input).logits, denseLogits, { atol: 0 }));
    tf.dispose([input, denseLogits]);
    dense.dispose();
  });

  it('rejects an MoE model and an expert width other than the MLP width', () => {
    const dense = createModel(denseConfig, 12);
    const moe = createModel({ ...denseConfig, moe: { experts: { ffn: 2 } } }, 12);
    expect(() => upcycle(moe, { experts: { ffn: 2 } })).toThrow(ConfigError);
    expect(() => upcycle(dense, { experts: { ffn: 2 }, intermediateSize: 16 })).toThrow(
      /upcycle: 'moe.intermediateSize' must equal the dense MLP width 12 .*got 16/,
    );
    expect(() => upcycle(dense, { experts: { ffn: 2 }, topK: 9 })).toThrow(ConfigError);
    moe.dispose();
    dense.dispose();
  });

  it('does not leak: the new model holds exactly its own variables', async () => {
    const dense = createModel(denseConfig, 13);
    await expectNoLeak(() => {
      const moe = upcycle(dense, { experts: { ffn: 2, zero: 1, copy: 1, constant: 1 } }, 14);
      moe.dispose();
    });
    // Failing halfway (a bad setting) leaves nothing behind either.
    await expectNoLeak(() => expect(() => upcycle(dense, { experts: { ffn: 2 }, tau: -1 })).toThrow(ConfigError));
    dense.dispose();
  });
});
