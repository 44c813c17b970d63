import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { expectNoLeak } from '@moepp/tensors-core/testing';
import { NonFiniteLossError, TensorLeakError, describeLossReport, nonFiniteVariables } from './guards.js';

describe('guards', () => {
  it('finds the variables holding NaN or infinity, without leaking', async () => {
    const variables = [
      { name: 'finite', variable: tf.variable(tf.tensor1d([1, 3e38, -2])) },
      { name: 'nan', variable: tf.variable(tf.tensor1d([1, Number.NaN])) },
      { name: 'infinite', variable: tf.variable(tf.tensor2d([[0, Number.NEGATIVE_INFINITY]])) },
    ];
    expect(await expectNoLeak(() => nonFiniteVariables(variables))).toEqual(['nan', 'infinite']);
    expect(nonFiniteVariables([])).toEqual([]);
    tf.dispose(variables.map((v) => v.variable));
  });

  it('describes the loss terms of a failed step', () => {
    const report = { loss: Number.NaN, crossEntropy: 3.21, loadBalance: 1, zLoss: Number.POSITIVE_INFINITY, gradNorm: 0.5, lr: 4e-4 };
    expect(describeLossReport(report)).toBe('total NaN, cross-entropy 3.2100, load balance 1.0000, z-loss Infinity, grad norm 0.500, lr 4.0e-4');
    const error = new NonFiniteLossError('loss', 7, report, 'message');
    expect([error.name, error.kind, error.step, error.report]).toEqual(['NonFiniteLossError', 'loss', 7, report]);
  });

  it('names the step and the counts of a leak', () => {
    const error = new TensorLeakError(5, 100, 103);
    expect(error.name).toBe('TensorLeakError');
    expect(error.message).toMatch(/^Trainer: 3 tensor\(s\) leaked: 103 live tensors after step 5, 100 after the warm-up steps/);
  });
});
