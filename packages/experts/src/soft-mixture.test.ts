import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom, ShapeError } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { createLinearSoftMixture, mixtureNegativeLogLikelihood, SoftMixture } from './soft-mixture.js';
import { checkVariableGradients } from './test-utils.js';

/** Gate probabilities [0.25, 0.75]; experts output [1, 1] and [3, 5] for every input. */
function handMixture(): SoftMixture {
  return new SoftMixture({
    gate: (x) => tf.tile(tf.tensor2d([[0, Math.log(3)]]), [x.shape[0], 1]) as tf.Tensor2D,
    experts: [(x) => tf.ones([x.shape[0], 2]) as tf.Tensor2D, (x) => tf.tile(tf.tensor2d([[3, 5]]), [x.shape[0], 1]) as tf.Tensor2D],
  });
}

describe('SoftMixture (Jacobs et al. 1991)', () => {
  it('mixes every expert by the softmax gate (hand example)', () => {
    const mixture = handMixture();
    const x = tf.zeros([2, 4]) as tf.Tensor2D;
    const out = mixture.apply(x);
    expectTensorClose(out.gateProbabilities, [[0.25, 0.75], [0.25, 0.75]]);
    expectTensorClose(out.output, [[2.5, 4], [2.5, 4]]);
    expect(out.expertOutputs.shape).toEqual([2, 2, 2]);
    // d = [1, 1]: expert 0 is exact, expert 1 is 20 away in squared distance.
    const target = tf.ones([2, 2]) as tf.Tensor2D;
    const loss = mixtureNegativeLogLikelihood(target, out);
    expect(loss.dataSync()[0]).toBeCloseTo(-Math.log(0.25 + 0.75 * Math.exp(-10)), 5);
    tf.dispose([x, target, loss, out.output, out.gateProbabilities, out.expertOutputs]);
  });

  it('has gradients that match finite differences for the gate and the experts (linear mixture)', () => {
    const mixture = createLinearSoftMixture({ inputDim: 2, outputDim: 2, numExperts: 3, rng: new SeededRandom(1), initializerRange: 0.8 });
    expect(Object.keys(mixture.weights)).toEqual([
      'gateKernel', 'gateBias', 'expert0Kernel', 'expert0Bias', 'expert1Kernel', 'expert1Bias', 'expert2Kernel', 'expert2Bias',
    ]);
    const x = tf.tensor2d([[1, -0.5], [0.3, 0.9], [-1, 0.2]]);
    const target = tf.tensor2d([[0.5, 1], [-1, 0.2], [0.3, -0.7]]);
    checkVariableGradients(() => {
      const out = mixture.apply(x);
      const loss = mixtureNegativeLogLikelihood(target, out);
      tf.dispose([out.output, out.gateProbabilities, out.expertOutputs]);
      return loss;
    }, Object.values(mixture.weights));
    mixture.dispose();
    tf.dispose([x, target]);
  });

  it('learns two local linear maps better than their blend (SGD on the competitive loss)', () => {
    // y = 2x for x < 0, y = −x + 1 for x >= 0: one affine expert cannot fit it, two gated ones can.
    const mixture = createLinearSoftMixture({ inputDim: 1, outputDim: 1, numExperts: 2, rng: new SeededRandom(3), initializerRange: 0.5 });
    const xs = Array.from({ length: 16 }, (_, i) => -1 + (2 * i) / 15);
    const x = tf.tensor2d(xs, [16, 1]);
    const target = tf.tensor2d(xs.map((v) => (v < 0 ? 2 * v : -v + 1)), [16, 1]);
    const optimizer = tf.train.adam(0.05);
    const lossValue = (): number =>
      tf.tidy(() => {
        const out = mixture.apply(x);
        return tf.mean(tf.square(tf.sub(out.output, target))).dataSync()[0] as number;
      });
    const initial = lossValue();
    for (let step = 0; step < 300; step++) {
      optimizer.minimize(() => {
        const out = mixture.apply(x);
        return mixtureNegativeLogLikelihood(target, out);
      });
    }
    expect(lossValue()).toBeLessThan(initial / 5);
    optimizer.dispose();
    mixture.dispose();
    tf.dispose([x, target]);
  });

  it('rejects bad configs and shapes', () => {
    expect(() => new SoftMixture({ gate: (x) => x, experts: [] })).toThrow(ConfigError);
    const mixture = handMixture();
    tf.tidy(() => {
      const badGate = new SoftMixture({ gate: (x) => tf.zeros([x.shape[0], 3]) as tf.Tensor2D, experts: [(x) => x, (x) => x] });
      expect(() => badGate.apply(tf.zeros([2, 2]) as tf.Tensor2D)).toThrow("SoftMixture.apply: argument 'gate(x)' must have shape [2, 2] and dtype float32, got [2, 3] float32 (axis 1)");
      const badExperts = new SoftMixture({ gate: (x) => tf.zeros([x.shape[0], 2]) as tf.Tensor2D, experts: [(x) => x, (x) => tf.concat([x, x], 1)] });
      expect(() => badExperts.apply(tf.zeros([2, 2]) as tf.Tensor2D)).toThrow(ShapeError);
      const out = mixture.apply(tf.zeros([2, 1]) as tf.Tensor2D);
      expect(() => mixtureNegativeLogLikelihood(tf.zeros([2, 3]) as tf.Tensor2D, out)).toThrow(/'target' must have shape \[2, 2\]/);
    });
    expect(() => createLinearSoftMixture({ inputDim: 2, outputDim: 2, numExperts: 0, rng: new SeededRandom(0) })).toThrow(/'numExperts' must be an integer >= 1, got 0/);
  });

  it('does not leak', async () => {
    const mixture = createLinearSoftMixture({ inputDim: 2, outputDim: 3, numExperts: 2, rng: new SeededRandom(0) });
    const x = tf.ones([4, 2]) as tf.Tensor2D;
    const out = await expectNoLeak(() => mixture.apply(x), 3);
    const loss = await expectNoLeak(() => mixtureNegativeLogLikelihood(out.output, out), 1);
    tf.dispose([x, loss, out.output, out.gateProbabilities, out.expertOutputs]);
    mixture.dispose();
  });
});
