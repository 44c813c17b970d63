/** Keeps the README's example compiled and running: the block below must match the README's `ts` block. */
import { expect, it } from 'vitest';
import { expectReadmeExample } from '@moepp/tensors-core/testing';
// example:start
import * as tf from '@tensorflow/tfjs';
import { initBackend, SeededRandom, randomNormal, checkShape, planDispatch, gatherRows, scatterAddRows, matmulFlops } from '@moepp/tensors-core';

const backend = await initBackend({ backend: 'wasm' }); // wasm + the kit's kernel fixes; backend.summary says which
const x = randomNormal([4, 8], new SeededRandom(0)) as tf.Tensor2D; // [N, D] tokens, the same on every run
checkShape('myLayer', 'x', x, ['N', 8], 'float32'); // else: ShapeError "myLayer: argument 'x' must have shape [N, 8] ..."
const expertIndices = tf.tensor2d([[0, 2], [1, 0], [2, 1], [0, 1]], [4, 2], 'int32'); // [N, K] from a router
const plan = planDispatch(expertIndices, 3); // slots grouped by expert: plan.counts = [3, 3, 2]
const rows = gatherRows(x, plan.tokenIds[0]!); // [3, D] the tokens of expert 0 (tokens 0, 1, 3)
const back = scatterAddRows(rows, plan.tokenIds[0]!, 4); // [N, D] in token order, zeros for token 2
const flops = matmulFlops(3, 8, 16); // 2·3·8·16 = 768 FLOPs for expert 0's first matmul
tf.dispose([x, expertIndices, rows, back]);
plan.dispose();
// example:end

it('matches the README and runs', () => {
  expectReadmeExample(import.meta.url);
  expect(backend.backend).toBe('wasm');
  expect(backend.kernelFixes).toContain('wasm-batch-matmul');
  expect(backend.summary).toContain("on 'wasm'");
  expect(plan.counts).toEqual([3, 3, 2]);
  expect(flops).toBe(768);
  expect([x, expertIndices, rows, back].every((t) => t.isDisposed)).toBe(true);
  expect(() => checkShape('myLayer', 'x', { shape: [4, 9], dtype: 'float32' }, ['N', 8], 'float32')).toThrow(
    "myLayer: argument 'x' must have shape [N, 8] and dtype float32, got [4, 9] float32",
  );
});

it('the example computes what its comments say', () => {
  const values = randomNormal([4, 8], new SeededRandom(0)) as tf.Tensor2D;
  const indices = tf.tensor2d([[0, 2], [1, 0], [2, 1], [0, 1]], [4, 2], 'int32');
  const again = planDispatch(indices, 3);
  const gathered = gatherRows(values, again.tokenIds[0]!);
  const scattered = scatterAddRows(gathered, again.tokenIds[0]!, 4);
  expect(Array.from(again.tokenIds[0]!.dataSync())).toEqual([0, 1, 3]);
  const original = values.arraySync();
  const result = scattered.arraySync();
  expect(result[2]).toEqual(new Array(8).fill(0));
  for (const token of [0, 1, 3]) result[token]!.forEach((v, d) => expect(v).toBeCloseTo(original[token]![d]!, 6));
  tf.dispose([values, indices, gathered, scattered]);
  again.dispose();
});
