import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, accelerationStatus, withAcceleration } from '@moepp/tensors-core';
import { expectNoLeak } from '@moepp/tensors-core/testing';
import { AdamW, defaultDecayRule, resolveAdamWConfig } from './adamw.js';
import { clipByGlobalNorm, clipScale, globalNorm } from './clip.js';

/** PyTorch's AdamW step on plain numbers (float64), the reference for the hand checks. */
function referenceStep(
  weights: number[],
  gradients: number[],
  state: { m: number[]; v: number[]; t: number },
  lr: number,
  config: { beta1: number; beta2: number; epsilon: number; weightDecay: number },
): number[] {
  state.t += 1;
  const { beta1, beta2, epsilon, weightDecay } = config;
  return weights.map((w, i) => {
    const g = gradients[i] as number;
    state.m[i] = beta1 * (state.m[i] as number) + (1 - beta1) * g;
    state.v[i] = beta2 * (state.v[i] as number) + (1 - beta2) * g * g;
    const denominator = Math.sqrt(state.v[i] as number) / Math.sqrt(1 - beta2 ** state.t) + epsilon;
    return w * (1 - lr * weightDecay) - (lr / (1 - beta1 ** state.t)) * ((state.m[i] as number) / denominator);
  });
}

describe('AdamW', () => {
  const config = { beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0.1 };

  it('matches a hand computation on a 2-element parameter', () => {
    const weight = tf.variable(tf.tensor1d([1, -2]));
    const optimizer = new AdamW([{ name: 'w', variable: weight, decay: true }], config);
    // Step 1: m = 0.1·g, v = 0.001·g², bias-corrected m̂ = g, v̂ = g², so the Adam direction is sign(g):
    // w = w·(1 − 0.1·0.1) − 0.1·sign(g) = [0.99 − 0.1, −1.98 + 0.1].
    const g1 = tf.tensor1d([0.5, -1]);
    optimizer.applyGradients(new Map([['w', g1]]), 0.1);
    expect(Array.from(weight.dataSync())).toEqual([expect.closeTo(0.89, 6), expect.closeTo(-1.88, 6)]);
    expect(optimizer.step).toBe(1);
    // Step 2 against the float64 reference (bias correction with t = 2).
    const g2 = tf.tensor1d([-0.25, 2]);
    optimizer.applyGradients(new Map([['w', g2]]), 0.05);
    const state = { m: [0, 0], v: [0, 0], t: 0 };
    const expected = referenceStep(referenceStep([1, -2], [0.5, -1], state, 0.1, config), [-0.25, 2], state, 0.05, config);
    Array.from(weight.dataSync()).forEach((w, i) => expect(w).toBeCloseTo(expected[i] as number, 6));
    tf.dispose([weight, g1, g2]);
    optimizer.dispose();
  });

  it('decouples weight decay: a zero gradient only shrinks the weight, by lr·λ', () => {
    const weight = tf.variable(tf.tensor2d([[2, -4]]));
    const norm = tf.variable(tf.tensor1d([2, -4]));
    const optimizer = new AdamW(
      [
        { name: 'matrix', variable: weight, decay: true },
        { name: 'norm', variable: norm, decay: false },
      ],
      { weightDecay: 0.5 },
    );
    optimizer.applyGradients(new Map(), 0.1); // no gradients at all: both count as zero
    expect(Array.from(weight.dataSync())).toEqual([expect.closeTo(2 * 0.95, 6), expect.closeTo(-4 * 0.95, 6)]);
    expect(Array.from(norm.dataSync())).toEqual([2, -4]);
    tf.dispose([weight, norm]);
    optimizer.dispose();
  });

  it('decays matrices but not vectors by default', () => {
    expect(defaultDecayRule('model.layers.0.self_attn.q_proj.weight', [64, 64])).toBe(true);
    expect(defaultDecayRule('model.embed_tokens.weight', [256, 64])).toBe(true);
    expect(defaultDecayRule('model.norm.weight', [64])).toBe(false);
    expect(defaultDecayRule('model.layers.0.mlp.moe.experts.experts.5.constant', [64])).toBe(false);
  });

  it('exports and imports its state: a copy continues with identical numbers', () => {
    const make = () => tf.variable(tf.tensor2d([[0.3, -0.7], [1.1, 0.2]]));
    const a = make();
    const b = make();
    const optimizerA = new AdamW([{ name: 'w', variable: a, decay: true }]);
    const optimizerB = new AdamW([{ name: 'w', variable: b, decay: true }]);
    const gradient = tf.tensor2d([[0.1, -0.2], [0.3, 0.05]]);
    optimizerA.applyGradients(new Map([['w', gradient]]), 1e-2);
    optimizerA.applyGradients(new Map([['w', gradient]]), 1e-2);
    const state = optimizerA.exportState();
    expect(state.step).toBe(2);
    expect([...state.tensors.keys()]).toEqual(['w.exp_avg', 'w.exp_avg_sq']);
    expect(state.tensors.get('w.exp_avg')?.shape).toEqual([2, 2]);
    b.assign(a);
    optimizerB.importState(state);
    optimizerA.applyGradients(new Map([['w', gradient]]), 1e-2);
    optimizerB.applyGradients(new Map([['w', gradient]]), 1e-2);
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    tf.dispose([a, b, gradient]);
    optimizerA.dispose();
    optimizerB.dispose();
  });

  it('gradientScale gives the same weights and moments, bit for bit, as updating with the clipped gradients', () => {
    const make = () => tf.variable(tf.tensor2d([[0.3, -0.7, 0.25], [1.1, 0.2, -0.4]]));
    const [a, b] = [make(), make()];
    const optimizerA = new AdamW([{ name: 'w', variable: a, decay: true }]);
    const optimizerB = new AdamW([{ name: 'w', variable: b, decay: true }]);
    const gradient = tf.tensor2d([[0.9, -2.2, 0.3], [3.1, 0.05, -1.7]]);
    const scale = clipScale(globalNorm([gradient]), 1); // about 0.23
    expect(scale).toBeLessThan(0.3);
    const clipped = clipByGlobalNorm([gradient], 1);
    for (let step = 0; step < 3; step++) {
      optimizerA.applyGradients(new Map([['w', gradient]]), 1e-2, { gradientScale: scale });
      optimizerB.applyGradients(new Map([['w', clipped.gradients[0] as tf.Tensor]]), 1e-2);
    }
    expect(Array.from(a.dataSync())).toEqual(Array.from(b.dataSync()));
    const [stateA, stateB] = [optimizerA.exportState(), optimizerB.exportState()];
    expect(Array.from(stateA.tensors.get('w.exp_avg_sq')!.data)).toEqual(Array.from(stateB.tensors.get('w.exp_avg_sq')!.data));
    expect(() => optimizerA.applyGradients(new Map(), 1e-2, { gradientScale: Number.NaN })).toThrow(/AdamW.applyGradients: 'gradientScale' must be a finite number >= 0/);
    tf.dispose([a, b, gradient, ...clipped.gradients]);
    optimizerA.dispose();
    optimizerB.dispose();
  });

  it('rejects a mismatched state without changing anything', () => {
    const weight = tf.variable(tf.tensor1d([1, 2]));
    const optimizer = new AdamW([{ name: 'w', variable: weight, decay: true }]);
    const good = { shape: [2], data: new Float32Array(2) };
    const source = 'runs/x/optimizer.safetensors';
    expect(() => optimizer.importState({ step: 1, tensors: new Map([['w.exp_avg', good]]) }, source)).toThrow(
      /runs\/x\/optimizer.safetensors: optimizer tensor 'w.exp_avg_sq' is missing/,
    );
    expect(() =>
      optimizer.importState({ step: 1, tensors: new Map([['w.exp_avg', good], ['w.exp_avg_sq', { shape: [3], data: new Float32Array(3) }]]) }, source),
    ).toThrow(/'w.exp_avg_sq' must have shape \[2\], got \[3\]/);
    expect(() =>
      optimizer.importState({ step: 1, tensors: new Map([['w.exp_avg', good], ['w.exp_avg_sq', good], ['other.exp_avg', good]]) }, source),
    ).toThrow(/match no trainable parameter, e.g. 'other.exp_avg'/);
    expect(() => optimizer.importState({ step: -1, tensors: new Map() }, source)).toThrow(/'step'/);
    expect(optimizer.step).toBe(0);
    tf.dispose(weight);
    optimizer.dispose();
  });

  it('validates gradients and hyper-parameters', () => {
    const weight = tf.variable(tf.tensor1d([1, 2]));
    const optimizer = new AdamW([{ name: 'w', variable: weight, decay: true }]);
    const wrong = tf.tensor1d([1, 2, 3]);
    expect(() => optimizer.applyGradients(new Map([['w', wrong]]), 0.1)).toThrow(/gradient of 'w' must have shape \[2\], got \[3\]/);
    expect(() => optimizer.applyGradients(new Map([['v', wrong]]), 0.1)).toThrow(/no parameter named 'v'/);
    expect(() => optimizer.applyGradients(new Map(), -1)).toThrow(/'learningRate'/);
    expect(() => resolveAdamWConfig({ beta2: 1 })).toThrow(/'beta2' must be < 1, got 1/);
    expect(() => resolveAdamWConfig({ epsilon: 0 })).toThrow(ConfigError);
    expect(() => new AdamW([{ name: 'w', variable: weight, decay: true }, { name: 'w', variable: weight, decay: true }])).toThrow(/appears twice/);
    tf.dispose([weight, wrong]);
    optimizer.dispose();
  });

  it('leaks no tensor per step; state lives in two tensors per parameter', async () => {
    const weight = tf.variable(tf.randomNormal([3, 4]));
    const optimizer = await expectNoLeak(() => new AdamW([{ name: 'w', variable: weight, decay: true }]), 2);
    const gradient = tf.onesLike(weight);
    await expectNoLeak(() => {
      for (let i = 0; i < 3; i++) optimizer.applyGradients(new Map([['w', gradient]]), 1e-3);
    });
    await expectNoLeak(() => optimizer.dispose(), -2);
    tf.dispose([weight, gradient]);
  });

  it('gives the same numbers with and without native acceleration, one MoeppAdamW kernel per parameter when accelerated', async () => {
    /** Three updates of a decayed matrix and an undecayed vector; the vector misses its gradient once. */
    const run = async (): Promise<{ values: number[][]; kernels: string[] }> => {
      const matrix = tf.variable(tf.tensor2d([[0.3, -0.7, 0.1], [1.1, 0.2, -2]]));
      const vector = tf.variable(tf.tensor1d([1, -0.5, 0.25]));
      const optimizer = new AdamW([
        { name: 'matrix', variable: matrix, decay: true },
        { name: 'vector', variable: vector, decay: false },
      ]);
      const matrixGradient = tf.tensor2d([[0.1, -0.2, 0.3], [0.05, 0, -1]]);
      const vectorGradient = tf.tensor1d([-0.3, 0.02, 0]);
      optimizer.applyGradients(new Map<string, tf.Tensor>([['matrix', matrixGradient], ['vector', vectorGradient]]), 1e-2);
      optimizer.applyGradients(new Map([['matrix', matrixGradient]]), 5e-3);
      const profile = await tf.profile(() => optimizer.applyGradients(new Map<string, tf.Tensor>([['matrix', matrixGradient], ['vector', vectorGradient]]), 1e-3));
      const values = [Array.from(matrix.dataSync()), Array.from(vector.dataSync())];
      tf.dispose([matrix, vector, matrixGradient, vectorGradient]);
      optimizer.dispose();
      return { values, kernels: profile.kernels.map((kernel) => kernel.name) };
    };
    const composite = await withAcceleration(false, run);
    expect(composite.kernels).not.toContain('MoeppAdamW');
    const current = await run();
    expect(current.values).toEqual(composite.values);
    const accelerated = accelerationStatus().active && tf.getBackend() === 'wasm';
    expect(current.kernels).toEqual(accelerated ? ['MoeppAdamW', 'MoeppAdamW'] : composite.kernels);
  });
});
