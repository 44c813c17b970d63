import { describe, expect, it } from 'vitest';
import { ConfigError, SeededRandom, ShapeError } from '@moepp/tensors-core';
import { sampleToken, samplingProbabilities, type SamplingOptions } from './sampling.js';

/** Reference softmax(logits / T) in float64, written independently of the implementation. */
function softmax(logits: number[], temperature = 1): number[] {
  const exps = logits.map((l) => Math.exp(l / temperature));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

/** Counts of each token over `draws` samples, as frequencies. */
function frequencies(logits: Float32Array, options: SamplingOptions, draws: number, seed: number): number[] {
  const rng = new SeededRandom(seed);
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++) {
    const token = sampleToken(logits, options, rng);
    counts[token] = (counts[token] as number) + 1;
  }
  return counts.map((c) => c / draws);
}

function expectClose(actual: ArrayLike<number>, expected: number[], tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  expected.forEach((value, i) => {
    expect(Math.abs((actual[i] as number) - value), `index ${i}: ${actual[i]} vs ${value}`).toBeLessThanOrEqual(tolerance);
  });
}

/** Logits whose softmax is exactly `probabilities` (up to rounding). */
const logitsOf = (probabilities: number[]): Float32Array => Float32Array.from(probabilities, Math.log);

describe('sampleToken: greedy', () => {
  it('takes the argmax, the lowest index on ties, and draws no random numbers', () => {
    const rng = new SeededRandom(1);
    const before = rng.getState();
    expect(sampleToken(new Float32Array([1, 3, 3, -Infinity, 2]), { strategy: 'greedy' }, rng)).toBe(1);
    expect(sampleToken(new Float32Array([-Infinity, -Infinity, -5]), { strategy: 'greedy' }, rng)).toBe(2);
    expect(sampleToken(new Float32Array([0, 0, 0]), { strategy: 'greedy' }, rng)).toBe(0);
    expect(sampleToken(new Float32Array([-7]), { strategy: 'greedy' }, rng)).toBe(0);
    expect(rng.getState()).toEqual(before);
    expect(Array.from(samplingProbabilities(new Float32Array([1, 3, 3]), { strategy: 'greedy' }))).toEqual([0, 1, 0]);
  });
});

describe('sampleToken: sampling', () => {
  it('with topK 1 equals greedy, for any temperature and with ties', () => {
    const rng = new SeededRandom(5);
    for (let trial = 0; trial < 200; trial++) {
      // rounded values make ties common
      const logits = Float32Array.from({ length: 1 + rng.int(12) }, () => Math.round(rng.normal() * 2) / 2);
      const temperature = 0.1 + 3 * rng.next();
      const greedy = sampleToken(logits, { strategy: 'greedy' }, rng);
      expect(sampleToken(logits, { strategy: 'sample', topK: 1, temperature }, rng), `${logits} at T=${temperature}`).toBe(greedy);
    }
  });

  it('is deterministic for a seed and takes exactly one rng.next() per token', () => {
    const logits = new Float32Array([0.3, -1, 2, 0.7, 0.1, -0.4]);
    const options = { strategy: 'sample', temperature: 1.3, topK: 5, topP: 0.95 } as const;
    const run = (seed: number) => {
      const rng = new SeededRandom(seed);
      return Array.from({ length: 100 }, () => sampleToken(logits, options, rng));
    };
    expect(run(11)).toEqual(run(11));
    expect(run(11)).not.toEqual(run(12));

    const sampler = new SeededRandom(99);
    const reference = new SeededRandom(99);
    sampleToken(logits, options, sampler);
    reference.next();
    expect(sampler.getState()).toEqual(reference.getState());
  });

  it('matches softmax(logits / T) over 20000 draws (T = 1 and T = 0.5)', () => {
    const logits = [1.2, 0.4, -0.3, 0.9];
    for (const temperature of [1, 0.5]) {
      const expected = softmax(logits, temperature);
      const empirical = frequencies(Float32Array.from(logits), { strategy: 'sample', temperature }, 20000, 31);
      // standard error <= sqrt(0.25 / 20000) = 0.0035; 0.015 is over 4 standard errors
      expectClose(empirical, expected, 0.015);
      expectClose(samplingProbabilities(Float32Array.from(logits), { strategy: 'sample', temperature }), expected, 1e-6);
    }
    // the temperatures give visibly different distributions, so the check above can tell them apart
    expect(softmax(logits, 0.5)[0]! - softmax(logits, 1)[0]!).toBeGreaterThan(0.1);
  });

  it('never samples a token masked with -Infinity', () => {
    const logits = new Float32Array([0, -Infinity, 0, -Infinity]);
    const empirical = frequencies(logits, { strategy: 'sample' }, 4000, 8);
    expect(empirical[1]).toBe(0);
    expect(empirical[3]).toBe(0);
    expectClose(empirical, [0.5, 0, 0.5, 0], 0.04);
  });

  it('top-p keeps the smallest set of most likely tokens reaching p, as computed by hand', () => {
    // probabilities 0.1, 0.5, 0.05, 0.2, 0.15; ranked: #1 (0.5), #3 (0.2), #4 (0.15), #0 (0.1), #2 (0.05)
    const logits = logitsOf([0.1, 0.5, 0.05, 0.2, 0.15]);
    const nucleus = (topP: number) => samplingProbabilities(logits, { strategy: 'sample', topP });
    // p = 0.5: 0.5 alone reaches it
    expectClose(nucleus(0.5), [0, 1, 0, 0, 0], 1e-6);
    // p = 0.6: 0.5 < 0.6, so #3 joins; 0.5 + 0.2 = 0.7 >= 0.6 stops -> renormalised 5/7, 2/7
    expectClose(nucleus(0.6), [0, 5 / 7, 0, 2 / 7, 0], 1e-6);
    // p = 0.7 exactly: {#1, #3} already reaches 0.7, so #4 stays out despite rounding
    expectClose(nucleus(0.7), [0, 5 / 7, 0, 2 / 7, 0], 1e-6);
    // p = 0.75: 0.7 < 0.75, so #4 joins; 0.85 stops
    expectClose(nucleus(0.75), [0, 0.5 / 0.85, 0, 0.2 / 0.85, 0.15 / 0.85], 1e-6);
    // 25 equal logits, p = 0.28 = 7/25: exactly 7 tokens (the lowest indices, as ties go) reach p, although
    // 0.28 * 25 rounds to 7.000000000000001 in float64
    const uniform = samplingProbabilities(new Float32Array(25), { strategy: 'sample', topP: 0.28 });
    expectClose(uniform, Array.from({ length: 25 }, (_, i) => (i < 7 ? 1 / 7 : 0)), 1e-12);
    // p = 1: no filtering
    expectClose(nucleus(1), [0.1, 0.5, 0.05, 0.2, 0.15], 1e-6);

    const empirical = frequencies(logits, { strategy: 'sample', topP: 0.75 }, 20000, 4);
    expect(empirical[0]).toBe(0);
    expect(empirical[2]).toBe(0);
    expectClose(empirical, [0, 0.5 / 0.85, 0, 0.2 / 0.85, 0.15 / 0.85], 0.015);
  });

  it('applies temperature before top-p', () => {
    const logits = logitsOf([0.625, 0.25, 0.125]);
    // at T = 0.5 the probabilities are proportional to p^2: 0.390625, 0.0625, 0.015625 / 0.46875
    const sharpened = [0.390625, 0.0625, 0.015625].map((v) => v / 0.46875); // 0.833, 0.133, 0.033
    expectClose(samplingProbabilities(logits, { strategy: 'sample', temperature: 0.5 }), sharpened, 1e-6);
    // p = 0.8: at T = 0.5 the first token alone (0.833) reaches it; at T = 1 (0.625) the second must join
    expectClose(samplingProbabilities(logits, { strategy: 'sample', temperature: 0.5, topP: 0.8 }), [1, 0, 0], 1e-6);
    expectClose(samplingProbabilities(logits, { strategy: 'sample', topP: 0.8 }), [0.625 / 0.875, 0.25 / 0.875, 0], 1e-6);
  });

  it('applies top-k before top-p, on the renormalised top-k distribution', () => {
    const logits = logitsOf([0.1, 0.5, 0.05, 0.2, 0.15]);
    // top-3 renormalised: 0.5, 0.2, 0.15 / 0.85 = 0.588, 0.235, 0.176; p = 0.8: 0.588 + 0.235 = 0.824 reaches it
    expectClose(samplingProbabilities(logits, { strategy: 'sample', topK: 3, topP: 0.8 }), [0, 5 / 7, 0, 2 / 7, 0], 1e-6);
    // (top-p first on the full distribution would have kept #4: 0.5 + 0.2 = 0.7 < 0.8)
    expectClose(samplingProbabilities(logits, { strategy: 'sample', topK: 3, topP: 0.85 }), [0, 0.5 / 0.85, 0, 0.2 / 0.85, 0.15 / 0.85], 1e-6);
    expectClose(samplingProbabilities(logits, { strategy: 'sample', topK: 2 }), [0, 5 / 7, 0, 2 / 7, 0], 1e-6);
    expectClose(samplingProbabilities(logits, { strategy: 'sample', topK: 5 }), [0.1, 0.5, 0.05, 0.2, 0.15], 1e-6);
  });

  it('top-k breaks ties at the cut towards the lower index', () => {
    const logits = new Float32Array([1, 2, 2, 2]);
    expect(Array.from(samplingProbabilities(logits, { strategy: 'sample', topK: 2 }))).toEqual([0, 0.5, 0.5, 0]);
    const empirical = frequencies(logits, { strategy: 'sample', topK: 2 }, 2000, 6);
    expect(empirical[0]).toBe(0);
    expect(empirical[3]).toBe(0);
  });

  it('stays finite for a tiny temperature and extreme logits', () => {
    const logits = new Float32Array([3e38, -3e38, 0, 3e38]);
    const probabilities = samplingProbabilities(logits, { strategy: 'sample', temperature: 1e-30 });
    expect(Array.from(probabilities)).toEqual([0.5, 0, 0, 0.5]);
    const rng = new SeededRandom(2);
    for (let i = 0; i < 50; i++) expect([0, 3]).toContain(sampleToken(logits, { strategy: 'sample', temperature: 1e-30 }, rng));
  });
});

describe('sampleToken: validation', () => {
  const logits = new Float32Array([0, 1, 2]);
  const rng = new SeededRandom(0);
  const bad: [string, unknown, RegExp][] = [
    ['temperature 0', { strategy: 'sample', temperature: 0 }, /'temperature' must be > 0, got 0; for deterministic decoding use \{ strategy: 'greedy' \}/],
    ['negative temperature', { strategy: 'sample', temperature: -1 }, /'temperature' must be a finite number > 0, got -1/],
    ['NaN temperature', { strategy: 'sample', temperature: Number.NaN }, /'temperature' .* got NaN/],
    ['infinite temperature', { strategy: 'sample', temperature: Infinity }, /'temperature' .* got Infinity/],
    ['topK 0', { strategy: 'sample', topK: 0 }, /'topK' must be an integer >= 1 <= 3, got 0/],
    ['topK above V', { strategy: 'sample', topK: 4 }, /'topK' must be an integer >= 1 <= 3, got 4/],
    ['fractional topK', { strategy: 'sample', topK: 1.5 }, /'topK' .* got 1.5/],
    ['topP 0', { strategy: 'sample', topP: 0 }, /'topP' must be a finite number > 0 <= 1, got 0/],
    ['topP above 1', { strategy: 'sample', topP: 1.1 }, /'topP' .* got 1.1/],
    ['unknown strategy', { strategy: 'beam' }, /'strategy' must be one of 'greedy', 'sample', got 'beam'/],
    ['missing strategy', {}, /'strategy' must be one of/],
    ['greedy with temperature', { strategy: 'greedy', temperature: 0.7 }, /'temperature' only applies to strategy 'sample'/],
    ['greedy with topK', { strategy: 'greedy', topK: 2 }, /'topK' only applies to strategy 'sample'/],
    ['no options', null, /'options' must be/],
  ];
  it.each(bad)('%s', (_label, options, pattern) => {
    expect(() => sampleToken(logits, options as SamplingOptions, rng)).toThrow(ConfigError);
    expect(() => sampleToken(logits, options as SamplingOptions, rng)).toThrow(pattern);
    expect(() => sampleToken(logits, options as SamplingOptions, rng)).toThrow(/^sampleToken: /);
    expect(() => samplingProbabilities(logits, options as SamplingOptions)).toThrow(ConfigError);
  });

  it('rejects empty, NaN, +Infinity and all-masked logits', () => {
    const sample = { strategy: 'sample' } as const;
    expect(() => sampleToken(new Float32Array(0), sample, rng)).toThrow(ShapeError);
    expect(() => sampleToken(new Float32Array(0), sample, rng)).toThrow(/'logits' must be a non-empty Float32Array \[V\], got \[0\]/);
    expect(() => sampleToken([1, 2] as unknown as Float32Array, sample, rng)).toThrow(ShapeError);
    expect(() => sampleToken(new Float32Array([0, Number.NaN]), sample, rng)).toThrow(/'logits\[1\]' must be finite or -Infinity \(masked\), got NaN/);
    expect(() => sampleToken(new Float32Array([Infinity, 0]), { strategy: 'greedy' }, rng)).toThrow(/'logits\[0\]' .* got Infinity/);
    expect(() => sampleToken(new Float32Array([-Infinity, -Infinity]), sample, rng)).toThrow(/every one of the 2 logits is -Infinity/);
  });
});
