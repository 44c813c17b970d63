import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { SeededRandom, ShapeError, ConfigError } from '@moepp/tensors-core';
import { checkGradients, expectNoLeak, expectTensorClose, expectValuesClose, valuesOn, type TensorValues } from '@moepp/tensors-core/testing';
import { RmsNorm } from './rms-norm.js';
import { CausalSelfAttention, applyRotary, rotaryTables } from './attention.js';
import { DenseFfn } from './dense-ffn.js';

describe('RmsNorm', () => {
  it('divides by the root mean square and scales by the weight', async () => {
    const norm = new RmsNorm(2, 0);
    const x = tf.tensor2d([[3, 4]]); // rms = sqrt(12.5)
    const y = await expectNoLeak(() => norm.apply(x), 1);
    expectTensorClose(y, [[3 / Math.sqrt(12.5), 4 / Math.sqrt(12.5)]]);
    norm.weight.assign(tf.tensor1d([2, -1]));
    const z = norm.apply(x);
    expectTensorClose(z, [[6 / Math.sqrt(12.5), -4 / Math.sqrt(12.5)]]);
    expect(() => norm.apply(tf.zeros([1, 3]))).toThrow(ShapeError);
    tf.dispose([x, y, z]);
    norm.dispose();
  });
});

describe('rotary embeddings', () => {
  it('rotates each (i, i + hd/2) pair by t·theta^(-2i/hd)', () => {
    const { cos, sin } = rotaryTables(3, 4, 100);
    // position 2, pair 1: angle = 2 · 100^(-2/4) = 0.2
    const x = tf.tensor4d([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], [1, 1, 3, 4]); // t=2: x_1 = 1
    const y = applyRotary(x, cos, sin);
    const row = Array.from(y.dataSync().slice(8, 12));
    // rotate_half([0,1,0,0]) = [0,0,0,1] -> y = [0, cos 0.2, 0, sin 0.2]
    expect(row[1]).toBeCloseTo(Math.cos(0.2), 5);
    expect(row[3]).toBeCloseTo(Math.sin(0.2), 5);
    expect(row[0]).toBeCloseTo(0, 6);
    tf.dispose([cos, sin, x, y]);
  });

  it('keeps norms (a rotation)', () => {
    const { cos, sin } = rotaryTables(5, 8);
    const x = tf.randomNormal([2, 3, 5, 8], 0, 1, 'float32', 1) as tf.Tensor4D;
    const y = applyRotary(x, cos, sin);
    expectTensorClose(tf.norm(y, 'euclidean', -1), tf.norm(x, 'euclidean', -1), { atol: 1e-4 });
    tf.dispose([cos, sin, x, y]);
  });
});

describe('CausalSelfAttention', () => {
  it('is causal: changing a later token leaves earlier outputs unchanged', () => {
    const attention = new CausalSelfAttention({ hiddenSize: 8, numHeads: 2 }, new SeededRandom(1));
    const a = tf.randomNormal([1, 4, 8], 0, 1, 'float32', 2) as tf.Tensor3D;
    const changed = tf.concat([a.slice([0, 0, 0], [1, 3, 8]), tf.ones([1, 1, 8])], 1) as tf.Tensor3D;
    const ya = attention.apply(a);
    const yb = attention.apply(changed);
    expectTensorClose(ya.slice([0, 0, 0], [1, 3, 8]), yb.slice([0, 0, 0], [1, 3, 8]), { atol: 1e-6 });
    const lastDiff = tf.sub(ya.slice([0, 3, 0], [1, 1, 8]), yb.slice([0, 3, 0], [1, 1, 8])).abs().max().dataSync()[0] as number;
    expect(lastDiff).toBeGreaterThan(1e-6);
    tf.dispose([a, changed, ya, yb]);
    attention.dispose();
  });

  it('equals a per-head reference on one sequence and does not leak', async () => {
    const attention = new CausalSelfAttention({ hiddenSize: 4, numHeads: 1, ropeTheta: 10000 }, new SeededRandom(3));
    const x = tf.randomNormal([1, 3, 4], 0, 1, 'float32', 4) as tf.Tensor3D;
    attention.apply(x).dispose(); // builds the cached tables
    const y = await expectNoLeak(() => attention.apply(x), 1);
    // Reference: plain loops over positions.
    const ref = tf.tidy(() => {
      const flat = x.reshape([3, 4]);
      const q = tf.matMul(flat, attention.qProj);
      const k = tf.matMul(flat, attention.kProj);
      const v = tf.matMul(flat, attention.vProj);
      const { cos, sin } = rotaryTables(3, 4, 10000);
      const rot = (m: tf.Tensor) => applyRotary(m.reshape([1, 1, 3, 4]) as tf.Tensor4D, cos, sin).reshape([3, 4]);
      const qr = rot(q).arraySync() as number[][];
      const kr = rot(k).arraySync() as number[][];
      const vv = v.arraySync() as number[][];
      const rows: number[][] = [];
      for (let t = 0; t < 3; t++) {
        const scores = Array.from({ length: t + 1 }, (_, s) => qr[t]!.reduce((acc, qi, i) => acc + qi * kr[s]![i]!, 0) / 2);
        const max = Math.max(...scores);
        const w = scores.map((s) => Math.exp(s - max));
        const total = w.reduce((p, c) => p + c, 0);
        rows.push([0, 1, 2, 3].map((i) => w.reduce((acc, wi, s) => acc + (wi / total) * vv[s]![i]!, 0)));
      }
      return tf.matMul(tf.tensor2d(rows), attention.oProj).reshape([1, 3, 4]);
    });
    expectTensorClose(y, ref, { atol: 1e-5 });
    tf.dispose([x, y, ref]);
    attention.dispose();
  });

  it.each(['cpu', 'wasm'])('on %s, the fused QKV product and rotary give the values and gradients of three projections and the composite rotary', async (backend) => {
    // D = 12, H = 3 (hd = 4), B = 2, T = 5: several heads, so a wrong head order in the fused product shows.
    const attention = new CausalSelfAttention({ hiddenSize: 12, numHeads: 3, initializerRange: 0.3 }, new SeededRandom(7));
    const xValues = tf.tidy(() => tf.randomNormal([2, 5, 12], 0, 1, 'float32', 8).dataSync() as Float32Array);
    const upstreamValues = tf.tidy(() => tf.randomNormal([2, 5, 12], 0, 1, 'float32', 9).dataSync() as Float32Array);
    // The attention as it was written before the fused product: one matmul per projection.
    const reference = (x: tf.Tensor3D): tf.Tensor3D =>
      tf.tidy(() => {
        const { cos, sin } = rotaryTables(5, 4);
        const mask = tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([5, 5]), -1, 0)), -1e9);
        const flat = x.reshape([10, 12]); // [B·T, D]
        const heads = (w: tf.Variable) => tf.matMul(flat, w).reshape([2, 5, 3, 4]).transpose([0, 2, 1, 3]) as tf.Tensor4D; // [B, H, T, hd]
        const q = applyRotary(heads(attention.qProj), cos, sin);
        const k = applyRotary(heads(attention.kProj), cos, sin);
        const weights = tf.softmax(tf.add(tf.mul(tf.matMul(q, k, false, true), 0.5), mask), -1);
        const context = tf.matMul(weights, heads(attention.vProj)).transpose([0, 2, 1, 3]).reshape([10, 12]);
        return tf.matMul(context, attention.oProj).reshape([2, 5, 12]) as tf.Tensor3D;
      });
    const run = (forward: (x: tf.Tensor3D) => tf.Tensor3D) => (): tf.Tensor[] => {
      const x = tf.tensor3d(xValues, [2, 5, 12]);
      const upstream = tf.tensor3d(upstreamValues, [2, 5, 12]);
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(forward(x), upstream)) as tf.Scalar, attention.variables);
      const inputGradient = tf.grad((input: tf.Tensor) => tf.sum(tf.mul(forward(input as tf.Tensor3D), upstream)))(x);
      return [forward(x), value, inputGradient, ...attention.variables.map((v) => grads[v.name] as tf.Tensor)];
    };
    try {
      await expectNoLeak(async () => {
        const fused = await valuesOn(backend, run((x) => attention.apply(x)));
        const composite = await valuesOn(backend, run(reference));
        expect(fused.map((t) => t.shape)).toEqual([[2, 5, 12], [], [2, 5, 12], [12, 12], [12, 12], [12, 12], [12, 12]]);
        fused.forEach((values, i) => expectValuesClose(values, composite[i] as TensorValues, { atol: 1e-5, rtol: 1e-4 }));
      }, 2); // the attention's cached tables (cos, sin)
    } finally {
      attention.dispose();
    }
  });

  it('has gradients that match finite differences', () => {
    const attention = new CausalSelfAttention({ hiddenSize: 4, numHeads: 2, initializerRange: 0.5 }, new SeededRandom(5));
    const x = tf.randomNormal([1, 3, 4], 0, 1, 'float32', 6);
    checkGradients((input) => attention.apply(input as tf.Tensor3D).square().sum() as tf.Scalar, [x], { maxElements: 12 });
    tf.dispose(x);
    attention.dispose();
  });

  it('rejects head counts that do not split D evenly', () => {
    expect(() => new CausalSelfAttention({ hiddenSize: 6, numHeads: 4 }, new SeededRandom(0))).toThrow(ConfigError);
    expect(() => new CausalSelfAttention({ hiddenSize: 6, numHeads: 2 }, new SeededRandom(0))).toThrow(/even head width/);
  });
});

describe('DenseFfn', () => {
  it('computes down(silu(x·gate) ⊙ (x·up)) and has matching gradients', () => {
    const ffn = new DenseFfn(2, 3, new SeededRandom(1), 0.5);
    const x = tf.tensor2d([[0.5, -1]]);
    const y = ffn.apply(x);
    const ref = tf.tidy(() => {
      const g = tf.matMul(x, ffn.gateProj);
      return tf.matMul(tf.mul(tf.mul(g, tf.sigmoid(g)), tf.matMul(x, ffn.upProj)), ffn.downProj);
    });
    expectTensorClose(y, ref);
    expect(ffn.flopsPerToken()).toBe(6 * 2 * 3 + 12);
    checkGradients((input) => ffn.apply(input as tf.Tensor2D).sum() as tf.Scalar, [x]);
    tf.dispose([x, y, ref]);
    ffn.dispose();
  });
});
