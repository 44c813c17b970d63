import { expect, it } from 'vitest';
import { runBringYourOwnModel } from './bring-your-own-model.js';

it('an MoE++ layer trains inside your own model: the loss falls with tf.variableGrads and with model.fit (quick mode)', async () => {
  const result = await runBringYourOwnModel({ quick: true, seed: 0 });
  const first = (losses: readonly number[]) => losses[0]!;
  const last = (losses: readonly number[]) => losses[losses.length - 1]!;
  expect(last(result.functionalLosses)).toBeLessThan(0.6 * first(result.functionalLosses));
  expect(last(result.layersLosses)).toBeLessThan(0.6 * first(result.layersLosses));
  // 4 classes: chance is 25%.
  expect(result.functionalAccuracy).toBeGreaterThan(0.6);
  expect(result.layersAccuracy).toBeGreaterThan(0.6);
  // 8 experts (4 FFN, 2 constant, copy, zero); top-2 over 512 examples.
  expect(result.functionalTokensPerExpert).toHaveLength(8);
  expect(result.functionalTokensPerExpert.reduce((a, b) => a + b, 0)).toBe(2 * 512);
  expect(result.layersTokensPerExpert.reduce((a, b) => a + b, 0)).toBe(2 * 512);
});
