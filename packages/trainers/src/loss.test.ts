import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { fusedOpsActive, ShapeError } from '@moepp/tensors-core';
import { checkGradients, expectNoLeak } from '@moepp/tensors-core/testing';
import { createModel, presetConfig } from '@moepp/models';
import { crossEntropyLoss, languageModelLoss, resolveLossConfig, tokenCrossEntropy } from './loss.js';

// [B=1, T=2, V=3]: token 0 has uniform logits (ce = ln 3), token 1 gives the target probability 2/4 (ce = ln 2).
const logitsValues = [[[0, 0, 0], [0, Math.log(2), 0]]];
const targetValues = [[1, 1]];

describe('tokenCrossEntropy / crossEntropyLoss', () => {
  it('gives hand-checkable values per token and on average', async () => {
    const logits = tf.tensor3d(logitsValues);
    const targets = tf.tensor2d(targetValues, [1, 2], 'int32');
    const perToken = tokenCrossEntropy(logits.reshape([2, 3]), targets.reshape([2]));
    expect(Array.from(perToken.dataSync())).toEqual([expect.closeTo(Math.log(3), 6), expect.closeTo(Math.log(2), 6)]);
    const mean = await expectNoLeak(() => crossEntropyLoss(logits, targets), 1);
    expect(mean.dataSync()[0]).toBeCloseTo(Math.log(6) / 2, 6);
    tf.dispose([logits, targets, perToken, mean]);
  });

  it('excludes masked tokens; an all-masked batch gives 0', () => {
    const logits = tf.tensor3d(logitsValues);
    const targets = tf.tensor2d(targetValues, [1, 2], 'int32');
    const onlyFirst = tf.tensor2d([[1, 0]]);
    const none = tf.tensor2d([[0, 0]]);
    expect(crossEntropyLoss(logits, targets, onlyFirst).dataSync()[0]).toBeCloseTo(Math.log(3), 6);
    expect(crossEntropyLoss(logits, targets, none).dataSync()[0]).toBe(0);
    tf.dispose([logits, targets, onlyFirst, none]);
  });

  it('is stable for large logits (log-softmax, no overflow)', () => {
    const logits = tf.tensor3d([[[1000, 0, -1000]]]);
    const targets = tf.tensor2d([[1]], [1, 1], 'int32');
    expect(crossEntropyLoss(logits, targets).dataSync()[0]).toBeCloseTo(1000, 3);
    tf.dispose([logits, targets]);
  });

  it('has the gradient (softmax − one-hot) / N (finite differences)', () => {
    const targets = tf.tensor2d([[2, 0]], [1, 2], 'int32');
    const logits = tf.tensor3d([[[0.3, -0.2, 0.5], [1.0, 0.1, -0.4]]]);
    checkGradients((x) => crossEntropyLoss(x as tf.Tensor3D, targets), [logits]);
    tf.dispose([targets, logits]);
  });

  it('runs one fused kernel each way when native acceleration is active on wasm', async () => {
    const logits = tf.tensor2d([[0.3, -0.2, 0.5], [1.0, 0.1, -0.4]]);
    const targets = tf.tensor1d([2, 0], 'int32');
    const profile = await tf.profile(() => tf.grad((x: tf.Tensor) => tf.sum(tokenCrossEntropy(x as tf.Tensor2D, targets)))(logits));
    expect(profile.kernelNames.includes('MoeppSoftmaxCrossEntropy')).toBe(fusedOpsActive());
    expect(profile.kernelNames.includes('MoeppSoftmaxCrossEntropyGrad')).toBe(fusedOpsActive());
    // softmax − one-hot: row 0 targets class 2, row 1 class 0
    const softmax = (row: number[]): number[] => row.map((x) => Math.exp(x) / row.reduce((sum, y) => sum + Math.exp(y), 0));
    const expected = [...softmax([0.3, -0.2, 0.5]).map((p, j) => p - (j === 2 ? 1 : 0)), ...softmax([1.0, 0.1, -0.4]).map((p, j) => p - (j === 0 ? 1 : 0))];
    expect(Array.from((profile.result as tf.Tensor).dataSync())).toEqual(expected.map((g) => expect.closeTo(g, 6)));
    tf.dispose([logits, targets, profile.result as tf.Tensor]);
  });

  it('checks shapes and dtypes, naming the argument', () => {
    const logits = tf.tensor3d(logitsValues);
    const floatTargets = tf.tensor2d(targetValues);
    expect(() => crossEntropyLoss(logits, floatTargets as tf.Tensor2D)).toThrow(ShapeError);
    expect(() => crossEntropyLoss(logits, floatTargets as tf.Tensor2D)).toThrow(/argument 'targets'/);
    tf.dispose([logits, floatTargets]);
  });
});

describe('languageModelLoss', () => {
  it('adds β·Σ loadBalance and w·Σ zLoss over the MoE layers and reports each term', async () => {
    const logits = tf.tensor3d(logitsValues);
    const targets = tf.tensor2d(targetValues, [1, 2], 'int32');
    const layers = [
      { auxLosses: { loadBalance: tf.scalar(2), zLoss: tf.scalar(10) } },
      { auxLosses: { loadBalance: tf.scalar(3), zLoss: tf.scalar(20) } },
    ];
    const terms = await expectNoLeak(
      () => languageModelLoss({ logits, moeLayers: layers }, targets, { balanceWeight: 0.01, zLossWeight: 0.001 }),
      4,
    );
    expect(terms.crossEntropy.dataSync()[0]).toBeCloseTo(Math.log(6) / 2, 6);
    expect(terms.loadBalance.dataSync()[0]).toBeCloseTo(5, 6);
    expect(terms.zLoss.dataSync()[0]).toBeCloseTo(30, 5);
    expect(terms.total.dataSync()[0]).toBeCloseTo(Math.log(6) / 2 + 0.05 + 0.03, 6);
    tf.dispose([logits, targets, ...layers.flatMap((l) => Object.values(l.auxLosses)), ...Object.values(terms)]);
  });

  it('defaults to β = 0.01 and no z-loss; a dense model has zero aux terms', () => {
    expect(resolveLossConfig()).toEqual({ balanceWeight: 0.01, zLossWeight: 0 });
    expect(() => resolveLossConfig({ balanceWeight: -1 })).toThrow(/'balanceWeight' must be a finite number >= 0, got -1/);
    const model = createModel(presetConfig('smoke', 'dense', { vocabSize: 16 }), 1);
    const tokens = tf.tensor2d([[1, 2, 3]], [1, 3], 'int32');
    const targets = tf.tensor2d([[2, 3, 4]], [1, 3], 'int32');
    tf.tidy(() => {
      const terms = languageModelLoss(model.forward(tokens), targets);
      expect(terms.loadBalance.dataSync()[0]).toBe(0);
      expect(terms.zLoss.dataSync()[0]).toBe(0);
      expect(terms.total.dataSync()[0]).toBeCloseTo(terms.crossEntropy.dataSync()[0] as number, 6);
      // An untrained model predicts about uniformly: ce ≈ ln V.
      expect(Math.abs((terms.crossEntropy.dataSync()[0] as number) - Math.log(16))).toBeLessThan(0.2);
    });
    tf.dispose([tokens, targets]);
    model.dispose();
  });

  it('reads the MoE++ layers of a real model: a positive load-balance term', () => {
    const model = createModel(presetConfig('smoke', 'moepp', { vocabSize: 16 }), 1);
    const tokens = tf.tensor2d([[1, 2, 3, 4]], [1, 4], 'int32');
    const targets = tf.tensor2d([[2, 3, 4, 5]], [1, 4], 'int32');
    tf.tidy(() => {
      const terms = languageModelLoss(model.forward(tokens), targets);
      expect(terms.loadBalance.dataSync()[0]).toBeGreaterThan(0);
      expect(terms.total.dataSync()[0]).toBeCloseTo(
        (terms.crossEntropy.dataSync()[0] as number) + 0.01 * (terms.loadBalance.dataSync()[0] as number),
        5,
      );
    });
    tf.dispose([tokens, targets]);
    model.dispose();
  });
});
