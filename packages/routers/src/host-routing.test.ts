import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom, ShapeError, randomNormal, type ExpertKind } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose, withBackend } from '@moepp/tensors-core/testing';
import { hostTokenChoiceRouting } from './host-routing.js';
import { MoEPlusPlusRouter, type MoEPlusPlusRouterConfig } from './moepp-router.js';
import { readRoutingStatsSync } from './stats.js';
import { disposeRouterOutput } from './types.js';

const KINDS: ExpertKind[] = ['ffn', 'ffn', 'ffn', 'ffn', 'constant', 'copy', 'zero', 'zero'];

/** Everything a route call returns that a test can compare, as plain numbers. */
interface RouteValues {
  readonly tensors: Record<string, number[]>;
  readonly stats: ReturnType<typeof readRoutingStatsSync>;
  readonly gradients: Record<string, number[]>;
}

/**
 * Routes `x` (and `previousLogits`) with the host tail or the composite one, and differentiates a loss
 * that uses every differentiable output: the gates (through fixed weights), the probabilities, both
 * aux losses and the logits; gradients with respect to x, the previous logits and every router weight.
 */
function routeAndDifferentiate(config: Partial<MoEPlusPlusRouterConfig>, hostRouting: boolean, seed: number): RouteValues {
  const numTokens = 37;
  const router = new MoEPlusPlusRouter({ dim: 6, numExperts: KINDS.length, expertKinds: KINDS, rng: new SeededRandom(seed), ...config, hostRouting });
  const rng = new SeededRandom(seed + 100);
  const x = tf.tidy(() => tf.variable(randomNormal([numTokens, 6], rng, 1)) as tf.Variable<tf.Rank.R2>);
  const previous = tf.tidy(() => tf.variable(randomNormal([numTokens, KINDS.length], rng, 0.5)) as tf.Variable<tf.Rank.R2>);
  const gateWeights = randomNormal([numTokens, router.topK], rng, 1);
  const probabilityWeights = randomNormal([numTokens, KINDS.length], rng, 1);
  const logitWeights = randomNormal([numTokens, KINDS.length], rng, 0.1);
  try {
    let tensors: Record<string, number[]> = {};
    let stats: RouteValues['stats'] | null = null;
    const variables = [x, previous, ...Object.values(router.weights)];
    const { grads, value } = tf.variableGrads(() => {
      const out = router.route(x, { previousLogits: config.gatingResidual === false ? null : previous });
      tensors = {
        probabilities: Array.from(out.probabilities.dataSync()),
        expertIndices: Array.from(out.expertIndices.dataSync()),
        combineWeights: Array.from(out.combineWeights.dataSync()),
        keepMask: Array.from(out.keepMask.dataSync()),
        loadBalance: Array.from(out.auxLosses.loadBalance!.dataSync()),
        zLoss: Array.from(out.auxLosses.zLoss!.dataSync()),
      };
      stats = readRoutingStatsSync(out.stats);
      return tf.addN([
        tf.sum(tf.mul(out.combineWeights, gateWeights)),
        tf.sum(tf.mul(out.probabilities, probabilityWeights)),
        tf.mul(out.auxLosses.loadBalance!, 3),
        tf.mul(out.auxLosses.zLoss!, 0.5),
        tf.sum(tf.mul(out.logits, logitWeights)),
      ]) as tf.Scalar;
    }, variables);
    const names = ['x', 'previousLogits', ...Object.keys(router.weights)];
    const gradients = Object.fromEntries(
      variables.flatMap((variable, i) => (grads[variable.name] ? [[names[i] as string, Array.from(grads[variable.name]!.dataSync())]] : [])),
    );
    tf.dispose([value, ...Object.values(grads)]);
    return { tensors, stats: stats!, gradients };
  } finally {
    router.dispose();
    tf.dispose([x, previous, gateWeights, probabilityWeights, logitWeights]);
  }
}

function expectClose(actual: readonly number[], expected: readonly number[], what: string, tolerance: number): void {
  expect(actual.length, what).toBe(expected.length);
  expect([actual.filter(Number.isNaN).length, expected.filter(Number.isNaN).length], `${what}: NaNs in [actual, expected]`).toEqual([0, 0]);
  const scale = Math.max(1e-3, ...expected.map(Math.abs));
  const worst = actual.reduce((max, value, i) => Math.max(max, Math.abs(value - (expected[i] as number))), 0);
  expect(worst / scale, `${what}: largest difference ${worst} (scale ${scale})`).toBeLessThan(tolerance);
}

const CONFIGS: ReadonlyArray<{ name: string; config: Partial<MoEPlusPlusRouterConfig> }> = [
  { name: 'official defaults (logits norm, drop-and-renormalize, gating residual, K=2)', config: {} },
  { name: 'no logits norm, tau 0.2', config: { useLogitsNorm: false, tau: 0.2 } },
  { name: 'raw-softmax gates, K=3, gate norm std 0.5', config: { zeroExpertGate: 'raw-softmax', topK: 3, gateNormStd: 0.5 } },
  { name: 'K=1, no gating residual, two-layer gate', config: { topK: 1, gatingResidual: false, twoLayerGate: true } },
  { name: 'uniform capacity 1.0 (drops)', config: { capacity: { mode: 'uniform', capacityFactor: 1 } } },
];

describe.each(['cpu', 'wasm'] as const)('hostTokenChoiceRouting in MoEPlusPlusRouter on %s', (backend) => {
  it.each(CONFIGS)('$name: the same routing, losses, statistics and gradients as the composite tail', async ({ config }) => {
    await withBackend(backend, async () => {
      await expectNoLeak(() => {
        for (const seed of [1, 2]) {
          const host = routeAndDifferentiate(config, true, seed);
          const composite = routeAndDifferentiate(config, false, seed);
          expect(host.tensors.expertIndices).toEqual(composite.tensors.expertIndices);
          expect(host.tensors.keepMask).toEqual(composite.tensors.keepMask);
          for (const name of ['probabilities', 'combineWeights', 'loadBalance', 'zLoss']) {
            expectClose(host.tensors[name]!, composite.tensors[name]!, `${name} (seed ${seed})`, 2e-6);
          }
          expect(host.stats.tokensPerExpert).toEqual(composite.stats.tokensPerExpert);
          expect(host.stats.droppedAssignments).toBe(composite.stats.droppedAssignments);
          expect(host.stats.entropy).toBeCloseTo(composite.stats.entropy, 5);
          expect(Object.keys(host.gradients).sort()).toEqual(Object.keys(composite.gradients).sort());
          for (const [name, values] of Object.entries(composite.gradients)) {
            expectClose(host.gradients[name]!, values, `gradient of ${name} (seed ${seed})`, 2e-5);
          }
        }
      });
    });
  });
});

describe('hostTokenChoiceRouting', () => {
  it('computes the documented values on a hand example: norm off, drop-and-renormalize', () => {
    // token 0 picks experts 0 and 2 (zero: its gate is dropped, expert 0 gets 1); token 1 picks 1 and 0
    const logits = tf.tensor2d([[2, 0, 1.5], [1, 1.2, -3]]);
    const out = hostTokenChoiceRouting(logits, { topK: 2, gateNormStd: null, dropExperts: [false, false, true], balanceWeights: [1, 1, 0.5] });
    const softmax = (row: number[]) => row.map((v) => Math.exp(v) / row.reduce((s, w) => s + Math.exp(w), 0));
    const [p0, p1] = [softmax([2, 0, 1.5]), softmax([1, 1.2, -3])] as [number[], number[]];
    expect(out.expertIndices.arraySync()).toEqual([[0, 2], [1, 0]]);
    expectTensorClose(out.probabilities, [p0, p1]);
    expectTensorClose(out.gates, [[1, 0], [p1[1]! / (p1[1]! + p1[0]!), p1[0]! / (p1[1]! + p1[0]!)]]);
    // f = [2, 1, 1] / 2 assignments per token; P = mean probabilities; η = [1, 1, 0.5]
    const expected = [1, 1, 0.5].reduce((sum, eta, e) => sum + eta * ([1, 0.5, 0.5][e] as number) * (((p0[e] as number) + (p1[e] as number)) / 2), 0);
    expect(out.loadBalance.dataSync()[0]).toBeCloseTo(expected, 6);
    const lse = (row: number[]) => Math.log(row.reduce((s, v) => s + Math.exp(v), 0));
    expect(out.zLoss.dataSync()[0]).toBeCloseTo((lse([2, 0, 1.5]) ** 2 + lse([1, 1.2, -3]) ** 2) / 2, 5);
    expect(out.selection.arraySync()).toEqual([[[1, 0, 0], [0, 0, 1]], [[0, 1, 0], [1, 0, 0]]]);
    expect(out.assignmentsPerExpert).toEqual([2, 1, 1]);
    const entropy = (row: number[]) => -row.reduce((sum, p) => sum + p * Math.log(p), 0);
    expect(out.meanEntropy).toBeCloseTo((entropy(p0) + entropy(p1)) / 2, 7);
    tf.dispose([logits, out.probabilities, out.expertIndices, out.selection, out.gates, out.loadBalance, out.zLoss]);
  });

  it('gives all-zero gates (not NaN) to a token whose picks are all dropped experts, and no gradient through them', () => {
    const logits = tf.variable(tf.tensor2d([[0, 3, 3.5]]));
    const { grads, value } = tf.variableGrads(() => {
      const out = hostTokenChoiceRouting(logits, { topK: 2, gateNormStd: null, dropExperts: [false, true, true], balanceWeights: [1, 1, 1] });
      expect(Array.from(out.gates.dataSync())).toEqual([0, 0]);
      return tf.sum(out.gates) as tf.Scalar;
    }, [logits]);
    expect(Array.from(grads[logits.name]!.dataSync())).toEqual([0, 0, 0]);
    tf.dispose([logits, value, ...Object.values(grads)]);
  });

  it('rejects bad logits and settings, naming what was wrong', () => {
    const logits = tf.zeros([3, 4]) as tf.Tensor2D;
    const settings = { topK: 2, gateNormStd: 1, dropExperts: null, balanceWeights: [1, 1, 1, 1] };
    expect(() => hostTokenChoiceRouting(tf.zeros([3, 4, 1]) as unknown as tf.Tensor2D, settings)).toThrow(ShapeError);
    expect(() => hostTokenChoiceRouting(logits, { ...settings, topK: 5 })).toThrow(/hostTokenChoiceRouting: 'topK' must be .*<= 4/);
    expect(() => hostTokenChoiceRouting(logits, { ...settings, balanceWeights: [1] })).toThrow(
      new ConfigError("hostTokenChoiceRouting: 'balanceWeights' must have one entry per expert (4), got 1"),
    );
    expect(() => hostTokenChoiceRouting(logits, { ...settings, dropExperts: [true] })).toThrow(/'dropExperts' must have one entry per expert \(4\), got 1/);
    expect(() => hostTokenChoiceRouting(tf.zeros([3, 1]) as tf.Tensor2D, { ...settings, topK: 1, balanceWeights: [1] })).toThrow(/the logits norm needs E >= 2/);
    logits.dispose();
  });
});
