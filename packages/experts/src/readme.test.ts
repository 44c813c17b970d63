/** Keeps the README's example compiled and running: the block below must match the README's `ts` block. */
import { expect, it } from 'vitest';
import { expectReadmeExample } from '@moepp/tensors-core/testing';
// example:start
import * as tf from '@tensorflow/tfjs';
import { SeededRandom } from '@moepp/tensors-core';
import { createExpertPool, moeppExpertCounts } from '@moepp/experts';

const counts = moeppExpertCounts(16); // { ffn: 16, constant: 2, copy: 1, zero: 1 } (Eq. 10)
const pool = createExpertPool({ dim: 64, ffnDim: 128, counts, activation: 'swiglu', rng: new SeededRandom(0) });
const x = tf.randomNormal([8, 64]) as tf.Tensor2D; // [N, D] tokens routed to one expert
const ffnOut = pool.experts[0]!.apply(x); // SwiGLU: down(silu(a)·b), [N, D]
const zeroOut = pool.experts[pool.indicesOf('zero')[0]!]!.apply(x); // zeros, no matmul
const flops = pool.experts.map((expert) => expert.flopsPerToken()); // FFN 2·D·2F + 2·F·D + 3F, constant 7D + 5, others 0
const kinds = pool.kinds; // pass to a router as `expertKinds`; the zero expert is last
tf.dispose([x, ffnOut, zeroOut]);
// example:end

it('matches the README and runs', () => {
  expectReadmeExample(import.meta.url);
  expect(kinds).toEqual([...Array(16).fill('ffn'), 'constant', 'constant', 'copy', 'zero']);
  expect(flops[0]).toBe(2 * 64 * 256 + 2 * 128 * 64 + 3 * 128);
  expect(flops.slice(16)).toEqual([7 * 64 + 5, 7 * 64 + 5, 0, 0]);
  expect(ffnOut.isDisposed && zeroOut.isDisposed).toBe(true);
  pool.dispose();
});
