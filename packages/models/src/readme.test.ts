/** Keeps the README's example compiled and running: the block below must match the README's `ts` block. */
import { expect, it } from 'vitest';
import { expectReadmeExample, startReadmeExample } from '@moepp/tensors-core/testing';

const run = startReadmeExample(); // records console.log in run.printed
// example:start
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '@moepp/tensors-core';
import { createModel, presetConfig, countModelParameters } from '@moepp/models';

await initBackend({ backend: 'wasm' });
const config = presetConfig('smoke', 'moepp', { vocabSize: 256 });
const model = createModel(config, /* seed */ 0);
const tokens = tf.tensor2d([[72, 101, 108, 108, 111]], [1, 5], 'int32');
const { logits, moeLayers } = model.forward(tokens); // logits [1, 5, 256]
console.log(countModelParameters(config).total, moeLayers[0]?.tokensPerExpert);
// example:end
run.endExample();

it('matches the README and runs', () => {
  expectReadmeExample(import.meta.url);
  expect(logits.shape).toEqual([1, 5, 256]);
  // The smoke MoE++ preset: 2 blocks, each an MoE++ layer of 4 FFN + 2 constant + 1 copy + 1 zero experts, top-2.
  expect(moeLayers).toHaveLength(2);
  expect(moeLayers[0]!.tokensPerExpert).toHaveLength(8);
  expect(moeLayers[0]!.tokensPerExpert.reduce((a, b) => a + b, 0)).toBe(5 * 2);
  // The printed total is the exact count of the model's variables.
  const total = model.parameters().reduce((sum, p) => sum + p.variable.size, 0);
  expect(run.printed).toEqual([[total, moeLayers[0]!.tokensPerExpert]]);
  tf.dispose([tokens, logits]);
  model.dispose();
});
