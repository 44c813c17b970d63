/** Keeps the README's example compiled and running: the block below must match the README's `ts` block. */
import { expect, it } from 'vitest';
import { expectReadmeExample } from '@moepp/tensors-core/testing';
// example:start
import * as tf from '@tensorflow/tfjs';
import { SeededRandom, type ExpertKind } from '@moepp/tensors-core';
import { MoEPlusPlusRouter, disposeRouterOutput, readRoutingStatsSync } from '@moepp/routers';

const kinds: ExpertKind[] = [...Array<ExpertKind>(16).fill('ffn'), 'constant', 'constant', 'copy', 'zero'];
const router = new MoEPlusPlusRouter({ dim: 64, numExperts: 20, topK: 2, expertKinds: kinds, rng: new SeededRandom(0) });
const x = tf.randomNormal([8, 64]) as tf.Tensor2D; // [N, D] tokens
const layer1 = router.route(x); // first MoE++ layer: no gating residual
const layer2 = router.route(x, { previousLogits: layer1.logits }); // later layers get the previous logits
const { expertIndices, combineWeights, auxLosses } = layer2; // [N, K] int32, [N, K] gates, { loadBalance, zLoss }
const stats = readRoutingStatsSync(layer2.stats); // { tokensPerExpert, ffnExpertsPerToken, ... }
[layer1, layer2].forEach(disposeRouterOutput);
// example:end

it('matches the README and runs', () => {
  expectReadmeExample(import.meta.url);
  expect(expertIndices.shape).toEqual([8, 2]);
  expect(combineWeights.isDisposed).toBe(true);
  expect(Object.keys(auxLosses)).toEqual(['loadBalance', 'zLoss']);
  expect(stats.tokensPerExpert.reduce((a, b) => a + b, 0)).toBe(16);
  expect(stats.ffnExpertsPerToken).toBeGreaterThanOrEqual(0);
  expect(stats.ffnExpertsPerToken).toBeLessThanOrEqual(2);
  router.dispose();
  x.dispose();
});
