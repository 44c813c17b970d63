import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom, type ExpertKind } from '@moepp/tensors-core';
import { expectNoLeak } from '@moepp/tensors-core/testing';
import { capacityKeepMask, checkCapacityConfig, expertCapacities } from './capacity.js';

const keep = (indices: number[][], numExperts: number, capacities: number[] | null, options: Parameters<typeof capacityKeepMask>[3] = {}): number[][] =>
  tf.tidy(() => capacityKeepMask(tf.tensor2d(indices, undefined, 'int32'), numExperts, capacities, options).arraySync() as number[][]);

describe('checkCapacityConfig', () => {
  it('defaults to dropless and treats a capacity factor of 0 as a value', () => {
    expect(checkCapacityConfig('op', undefined)).toEqual({ mode: 'dropless' });
    expect(checkCapacityConfig('op', { mode: 'uniform', capacityFactor: 0 })).toEqual({ mode: 'uniform', capacityFactor: 0 });
  });

  it('rejects a negative capacity factor, a negative tau and an unknown mode, naming the field', () => {
    expect(() => checkCapacityConfig('Router', { mode: 'uniform', capacityFactor: -0.5 })).toThrow(ConfigError);
    expect(() => checkCapacityConfig('Router', { mode: 'uniform', capacityFactor: -0.5 })).toThrow(
      "Router: 'capacity.capacityFactor' must be a finite number >= 0, got -0.5",
    );
    expect(() => checkCapacityConfig('Router', { mode: 'heterogeneous', capacityFactor: 1.1, tau: -1 })).toThrow(/'capacity.tau' must be .* >= 0, got -1/);
    expect(() => checkCapacityConfig('Router', { mode: 'huge' } as never)).toThrow(/'capacity.mode' must be one of 'dropless', 'uniform', 'heterogeneous', got 'huge'/);
  });
});

describe('expertCapacities', () => {
  const kinds: ExpertKind[] = ['ffn', 'ffn', 'zero', 'copy'];

  it('gives ceil(γ·N·K/E) per expert in uniform mode and null when dropless', () => {
    expect(expertCapacities({ mode: 'uniform', capacityFactor: 1 }, 4, 2, kinds)).toEqual([2, 2, 2, 2]);
    expect(expertCapacities({ mode: 'uniform', capacityFactor: 1.25 }, 5, 1, kinds)).toEqual([2, 2, 2, 2]); // ceil(1.5625)
    expect(expertCapacities({ mode: 'uniform', capacityFactor: 0 }, 4, 2, kinds)).toEqual([0, 0, 0, 0]);
    expect(expertCapacities({ mode: 'dropless' }, 4, 2, kinds)).toBeNull();
  });

  it('follows MoE++ Eq. 8 with T = N·K slots', () => {
    // T = 4·2 = 8 slots; τ·N_ffn + N_zc = 0.5·2 + 2 = 3; FFN: ceil(0.5·8/3) = 2, ZC: ceil(8/3) = 3.
    expect(expertCapacities({ mode: 'heterogeneous', capacityFactor: 1, tau: 0.5 }, 4, 2, kinds)).toEqual([2, 2, 3, 3]);
    // Before rounding the capacities add up to γ·T: 2·(0.5·8/3) + 2·(8/3) = 8.
    // With τ = 1 it is the uniform capacity.
    expect(expertCapacities({ mode: 'heterogeneous', capacityFactor: 1.1, tau: 1 }, 10, 2, kinds)).toEqual(
      expertCapacities({ mode: 'uniform', capacityFactor: 1.1 }, 10, 2, kinds),
    );
  });

  it('rejects tau·N_ffn + N_zc = 0', () => {
    expect(() => expertCapacities({ mode: 'heterogeneous', capacityFactor: 1, tau: 0 }, 4, 1, ['ffn', 'ffn'])).toThrow(ConfigError);
  });
});

describe('capacityKeepMask', () => {
  it('keeps everything when dropless, except padding', () => {
    expect(keep([[0, 1], [1, 0]], 2, null)).toEqual([[1, 1], [1, 1]]);
    const tokenMask = tf.tensor1d([1, 0]);
    expect(keep([[0, 1], [1, 0]], 2, null, { tokenMask })).toEqual([[1, 1], [0, 0]]);
    tokenMask.dispose();
  });

  it('serves first choices before second choices (slot-major) or tokens in order (token-major)', () => {
    // Capacity 1 each. Slot-major: t0→e0, t1→e1 (first choices) win; second choices overflow.
    expect(keep([[0, 1], [1, 0]], 2, [1, 1])).toEqual([[1, 0], [1, 0]]);
    // Token-major: token 0 takes both experts, token 1 gets nothing.
    expect(keep([[0, 1], [1, 0]], 2, [1, 1], { priority: 'token-major' })).toEqual([[1, 1], [0, 0]]);
  });

  it('drops later tokens of an overflowing expert and takes per-expert capacities', () => {
    // Expert 0 holds 2, expert 1 holds 0, expert 2 holds 5.
    expect(keep([[0], [0], [1], [0], [2]], 3, [2, 0, 5])).toEqual([[1], [1], [0], [0], [1]]);
    expect(keep([[0], [0]], 1, [0])).toEqual([[0], [0]]);
  });

  it('lets padding take no capacity', () => {
    const tokenMask = tf.tensor1d([0, 1, 1]);
    // Without the mask token 2 would be dropped; padding token 0 does not count.
    expect(keep([[0], [0], [0]], 1, [2], { tokenMask })).toEqual([[0], [1], [1]]);
    tokenMask.dispose();
  });

  it('never exceeds capacity and fills it greedily (random cases)', () => {
    const rng = new SeededRandom(11);
    for (let trial = 0; trial < 20; trial++) {
      const numExperts = 2 + rng.int(5);
      const topK = 1 + rng.int(Math.min(3, numExperts));
      const numTokens = 1 + rng.int(12);
      const indices = Array.from({ length: numTokens }, () => rng.shuffle([...Array(numExperts).keys()]).slice(0, topK));
      const capacities = Array.from({ length: numExperts }, () => rng.int(5));
      const priority = rng.next() < 0.5 ? 'slot-major' : 'token-major';
      const mask = keep(indices, numExperts, capacities, { priority });
      for (let e = 0; e < numExperts; e++) {
        let load = 0;
        let kept = 0;
        indices.forEach((row, n) => row.forEach((expert, k) => {
          if (expert !== e) return;
          load++;
          kept += mask[n]?.[k] ?? 0;
        }));
        expect(kept).toBe(Math.min(load, capacities[e] as number));
      }
    }
  });

  it('does not leak', async () => {
    const indices = tf.tensor2d([[0, 1], [1, 0]], undefined, 'int32');
    const result = await expectNoLeak(() => capacityKeepMask(indices, 2, [1, 1]), 1);
    result.dispose();
    indices.dispose();
  });
});
