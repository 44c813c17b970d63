/**
 * The sparse dispatch path of an MoE layer, end to end through the kernel fixes: for each expert,
 * gather the rows routed to it, run an FFN, scale by the gates, scatter-add back (with the kit's
 * dispatch primitives, `gatherRows` / `scatterAddRows`, as the MoE layer does). Forward and backward
 * on wasm (with the fixes) must match the stock cpu reference.
 */
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { gatherRows, planDispatch, scatterAddRows } from '../dispatch.js';
import { SeededRandom } from '../random.js';
import { seededNormals, expectNoLeak, expectValuesClose, valuesOn, type TensorValues } from '../testing.js';
import { registerKernelFixes, withStockKernels } from './index.js';

const N = 12; // tokens
const D = 8; // model width
const F = 16; // FFN width
const E = 4; // experts
const K = 2; // experts per token

/** A fixed top-2 assignment: per expert, the token ids and the slots (token·K + k) of their gates. */
function assignment(): { tokenIds: number[][]; gateSlots: number[][] } {
  const rng = new SeededRandom(7);
  const tokenIds: number[][] = Array.from({ length: E }, () => []);
  const gateSlots: number[][] = Array.from({ length: E }, () => []);
  for (let token = 0; token < N; token++) {
    // Expert 3 never gets a token: an empty expert must work too.
    const chosen = rng.shuffle([0, 1, 2]).slice(0, K);
    chosen.forEach((expert, k) => {
      (tokenIds[expert] as number[]).push(token);
      (gateSlots[expert] as number[]).push(token * K + k);
    });
  }
  return { tokenIds, gateSlots };
}


const { tokenIds, gateSlots } = assignment();
const xValues = seededNormals(N * D, 1);
const gateValues = seededNormals(N * K, 2).map((v) => 1 / (1 + Math.exp(-v)));
const w1Values = Array.from({ length: E }, (_, e) => seededNormals(D * F, 10 + e, 0.3));
const w2Values = Array.from({ length: E }, (_, e) => seededNormals(F * D, 20 + e, 0.3));
const targetValues = seededNormals(N * D, 3);

/**
 * One MoE layer's output and a loss.
 *
 * @param x - [N, D]
 * @param gates - [N·K], the gate of each (token, choice)
 * @param weights - W1_e [D, F] then W2_e [F, D] for each expert
 * @returns the loss, a scalar
 */
function moeLoss(x: tf.Tensor, gates: tf.Tensor, ...weights: tf.Tensor[]): tf.Scalar {
  let output: tf.Tensor = tf.zeros([N, D]); // [N, D]
  for (let expert = 0; expert < E; expert++) {
    const ids = tf.tensor1d(tokenIds[expert] as number[], 'int32'); // [n_e]
    const rows = gatherRows(x as tf.Tensor2D, ids); // [n_e, D]
    const hidden = tf.tanh(tf.matMul(rows, weights[2 * expert] as tf.Tensor)); // [n_e, F]
    const expertOut = tf.matMul(hidden, weights[2 * expert + 1] as tf.Tensor); // [n_e, D]
    const expertGates = tf.reshape(tf.gather(gates, tf.tensor1d(gateSlots[expert] as number[], 'int32')), [-1, 1]); // [n_e, 1]
    output = tf.add(output, scatterAddRows(tf.mul(expertOut, expertGates) as tf.Tensor2D, ids, N));
  }
  return tf.sum(tf.mul(output, tf.tensor(targetValues, [N, D])));
}

function forwardAndGradients(): tf.Tensor[] {
  const inputs = [
    tf.tensor(xValues, [N, D]),
    tf.tensor(gateValues, [N * K]),
    ...w1Values.flatMap((w1, e) => [tf.tensor(w1, [D, F]), tf.tensor(w2Values[e] as Float32Array, [F, D])]),
  ];
  const { value, grads } = tf.valueAndGrads(moeLoss)(inputs);
  return [value, ...grads];
}

beforeAll(() => {
  registerKernelFixes('wasm');
  registerKernelFixes('cpu');
});

describe('MoE dispatch: gather -> FFN -> gates -> unsortedSegmentSum', () => {
  it('has an empty expert, to cover it', () => {
    expect(tokenIds[3]).toEqual([]);
    expect(tokenIds.flat().length).toBe(N * K);
  });

  it.each(['wasm', 'cpu'])('on %s with the fixes: loss and every gradient match stock cpu', async (backend) => {
    await expectNoLeak(async () => {
      const reference = await withStockKernels(() => valuesOn('cpu', forwardAndGradients));
      const actual = await valuesOn(backend, forwardAndGradients);
      expect(actual.length).toBe(2 + 2 * E + 1);
      actual.forEach((values, i) => expectValuesClose(values, reference[i] as TensorValues, { atol: 1e-4, rtol: 1e-4 }));
    });
  });

  it('planDispatch groups a realistic routing (N=1024, E=8, top-2) identically on wasm and cpu', async () => {
    const rng = new SeededRandom(11);
    const experts = Array.from({ length: 8 }, (_, e) => e);
    const indices = Array.from({ length: 1024 }, () => rng.shuffle(experts).slice(0, 2)).flat(); // [N·K]
    const groups = (): tf.Tensor[] => {
      const plan = planDispatch(tf.tensor2d(indices, [1024, 2], 'int32'), 8);
      return [plan.allTokenIds, plan.allSlotIds, tf.tensor1d([...plan.counts], 'int32')];
    };
    await expectNoLeak(async () => {
      const wasm = await valuesOn('wasm', groups);
      const cpu = await withStockKernels(() => valuesOn('cpu', groups));
      wasm.forEach((values, i) => expectValuesClose(values, cpu[i] as TensorValues, { atol: 0, rtol: 0 }));
    });
  });

  it('throws on stock wasm (no UnsortedSegmentSum kernel)', async () => {
    await expectNoLeak(async () => {
      await withStockKernels(async () => {
        await expect(valuesOn('wasm', () => moeLoss(tf.tensor(xValues, [N, D]), tf.tensor(gateValues, [N * K]), ...w1Values.flatMap((w1, e) => [tf.tensor(w1, [D, F]), tf.tensor(w2Values[e] as Float32Array, [F, D])])))).rejects.toThrow(
          "Kernel 'UnsortedSegmentSum' not registered for backend 'wasm'",
        );
      });
    });
  });
});
