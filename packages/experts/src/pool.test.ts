import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom } from '@moepp/tensors-core';
import { FfnExpert } from './ffn.js';
import { constantExpertCount, createExpertPool, ExpertPool, moeppExpertCounts } from './pool.js';
import { CopyExpert, ZeroExpert } from './zero-computation.js';

describe('constantExpertCount (MoE++ Eq. 10)', () => {
  it('is max(N_FFN/4 − n_zero − n_copy, 1)', () => {
    expect(constantExpertCount({ ffn: 16 })).toBe(2); // Table 2: 1B/(16+4)E uses 1/1/2
    expect(constantExpertCount({ ffn: 32 })).toBe(6); // Table 2: 2B/(32+8)E uses 1/1/6
    expect(constantExpertCount({ ffn: 8 })).toBe(1); // Table 2 uses 2 here; Eq. 10 gives 1
    expect(constantExpertCount({ ffn: 64, zero: 2, copy: 0 })).toBe(14);
    expect(constantExpertCount({ ffn: 6, zero: 0, copy: 0 })).toBe(1); // floor(1.5) = 1
    expect(constantExpertCount({ ffn: 0, zero: 0, copy: 0 })).toBe(1);
    expect(() => constantExpertCount({ ffn: -4 })).toThrow(/'ffn' must be an integer >= 0, got -4/);
  });

  it('gives full MoE++ counts', () => {
    expect(moeppExpertCounts(16)).toEqual({ ffn: 16, constant: 2, copy: 1, zero: 1 });
    expect(moeppExpertCounts(32, { zero: 2 })).toEqual({ ffn: 32, constant: 5, copy: 1, zero: 2 });
  });
});

describe('createExpertPool', () => {
  it('lays experts out in the official order, the zero expert last', () => {
    const pool = createExpertPool({ dim: 4, ffnDim: 3, counts: { zero: 1, copy: 1, constant: 2, ffn: 3 }, rng: new SeededRandom(1) });
    expect(pool.kinds).toEqual(['ffn', 'ffn', 'ffn', 'constant', 'constant', 'copy', 'zero']);
    expect(pool.experts.map((e) => e.name)).toEqual(['ffn-0', 'ffn-1', 'ffn-2', 'constant-0', 'constant-1', 'copy-0', 'zero-0']);
    expect(pool.numExperts).toBe(7);
    expect(pool.dim).toBe(4);
    expect(pool.counts).toEqual({ ffn: 3, zero: 1, copy: 1, constant: 2 });
    expect(pool.indicesOf('constant')).toEqual([3, 4]);
    expect(pool.ffnIndices()).toEqual([0, 1, 2]);
    expect(pool.zeroComputationIndices()).toEqual([3, 4, 5, 6]);
    expect(pool.indicesOf('zero')).toEqual([6]);
    // SwiGLU: D·2F + F·D per FFN expert; constant: 3D.
    expect(pool.parameterCount()).toBe(3 * (4 * 6 + 3 * 4) + 2 * 3 * 4);
    expect(Object.keys(pool.weights())).toEqual([
      'ffn-0.upProj', 'ffn-0.downProj', 'ffn-1.upProj', 'ffn-1.downProj', 'ffn-2.upProj', 'ffn-2.downProj',
      'constant-0.constant', 'constant-0.wg', 'constant-1.constant', 'constant-1.wg',
    ]);
    pool.dispose();
    expect(pool.experts[0]!.weights.upProj!.isDisposed).toBe(true);
  });

  it('builds the same weights from the same seed and takes the activation', () => {
    const make = () => createExpertPool({ dim: 3, ffnDim: 2, counts: { ffn: 2, constant: 1 }, activation: 'gelu', rng: new SeededRandom(5) });
    const a = make();
    const b = make();
    expect((a.experts[0] as FfnExpert).activation).toBe('gelu');
    const weightsA = a.weights();
    const weightsB = b.weights();
    for (const key of Object.keys(weightsA)) expect(Array.from(weightsA[key]!.dataSync())).toEqual(Array.from(weightsB[key]!.dataSync()));
    a.dispose();
    b.dispose();
  });

  it('accepts a pool without FFN experts and without ffnDim', () => {
    const pool = createExpertPool({ dim: 2, counts: { zero: 1, copy: 1 }, rng: new SeededRandom(0) });
    expect(pool.kinds).toEqual(['copy', 'zero']);
    expect(pool.parameterCount()).toBe(0);
    pool.dispose();
  });

  it('validates counts explicitly', () => {
    const rng = new SeededRandom(0);
    const make = (counts: object, ffnDim?: number) => () => createExpertPool({ dim: 2, ...(ffnDim ? { ffnDim } : {}), counts: counts as never, rng });
    expect(make({ ffn: -1 }, 2)).toThrow("createExpertPool: 'counts.ffn' must be an integer >= 0, got -1");
    expect(make({ ffn: 1.5 }, 2)).toThrow(/'counts.ffn' must be an integer/);
    expect(make({ ffn: 0, zero: 0 }, 2)).toThrow(/'counts' must give at least one expert/);
    expect(make({ ffns: 2 }, 2)).toThrow(/unknown expert kind 'ffns'/);
    expect(make({ ffn: 2 })).toThrow(/'ffnDim' must be an integer >= 1, got undefined/);
    expect(() => createExpertPool({ dim: 2, ffnDim: 2, counts: { ffn: 1 }, activation: 'swish' as never, rng })).toThrow(ConfigError);
  });
});

describe('ExpertPool', () => {
  it('rejects an empty list, mixed widths and repeated names', () => {
    expect(() => new ExpertPool([])).toThrow(/at least one expert/);
    expect(() => new ExpertPool([new ZeroExpert({ dim: 2 }), new CopyExpert({ dim: 3 })])).toThrow(/expert 1 \('copy'\) has dim 3, expert 0 has 2/);
    expect(() => new ExpertPool([new ZeroExpert({ dim: 2 }), new ZeroExpert({ dim: 2 })])).toThrow(/'zero' is used twice/);
  });

  it('applies every expert to the same tokens', () => {
    const pool = createExpertPool({ dim: 2, ffnDim: 2, counts: { ffn: 1, constant: 1, copy: 1, zero: 1 }, rng: new SeededRandom(2) });
    const x = tf.tensor2d([[1, -1], [0.5, 2]]);
    const before = tf.memory().numTensors;
    for (const expert of pool.experts) {
      tf.tidy(() => {
        expect(expert.apply(x).shape).toEqual([2, 2]);
      });
    }
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
    pool.dispose();
  });
});
