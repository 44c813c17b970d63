import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { SeededRandom, randomNormal, truncatedNormal, kaimingUniform, xavierUniform, fans } from './random.js';
import { ConfigError } from './errors.js';
import { expectNoLeak } from './testing.js';

describe('SeededRandom', () => {
  it('gives the same sequence for the same seed and a different one otherwise', () => {
    const a = new SeededRandom(42);
    const b = new SeededRandom(42);
    const c = new SeededRandom(43);
    const seqA = Array.from({ length: 5 }, () => a.nextUint32());
    const seqB = Array.from({ length: 5 }, () => b.nextUint32());
    const seqC = Array.from({ length: 5 }, () => c.nextUint32());
    expect(seqA).toEqual(seqB);
    expect(seqA).not.toEqual(seqC);
    seqA.forEach((v) => expect(Number.isInteger(v) && v >= 0 && v < 2 ** 32).toBe(true));
  });

  it('restores its state exactly, including a cached normal deviate', () => {
    const rng = new SeededRandom(7);
    rng.normal();
    const state = rng.getState();
    expect(state.spareNormal).not.toBeNull();
    const expected = [rng.normal(), rng.next(), rng.normal()];
    const restored = SeededRandom.fromState(JSON.parse(JSON.stringify(state)));
    expect([restored.normal(), restored.next(), restored.normal()]).toEqual(expected);
  });

  it('draws normals with mean 0 and std 1 and uniforms in [0, 1)', () => {
    const rng = new SeededRandom(1);
    const n = 20000;
    let sum = 0;
    let sumSq = 0;
    for (let i = 0; i < n; i++) {
      const z = rng.normal();
      sum += z;
      sumSq += z * z;
    }
    expect(Math.abs(sum / n)).toBeLessThan(0.03);
    expect(Math.abs(Math.sqrt(sumSq / n) - 1)).toBeLessThan(0.03);
    for (let i = 0; i < 1000; i++) {
      const u = rng.next();
      expect(u >= 0 && u < 1).toBe(true);
    }
  });

  it('shuffles deterministically into a permutation', () => {
    const a = new SeededRandom(3).shuffle([0, 1, 2, 3, 4, 5, 6, 7]);
    const b = new SeededRandom(3).shuffle([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(a).toEqual(b);
    expect([...a].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(a).not.toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('rejects bad seeds and states with a ConfigError that names the field', () => {
    expect(() => new SeededRandom(-1)).toThrow(ConfigError);
    expect(() => new SeededRandom(1.5)).toThrow(/'seed' must be an integer >= 0/);
    expect(() => new SeededRandom(0).setState({ words: [1, 2, 3, -4], spareNormal: null })).toThrow(/words\[3\]/);
  });
});

describe('initialisers', () => {
  it('are reproducible, shaped and without leaks', async () => {
    const t1 = await expectNoLeak(() => randomNormal([3, 4], new SeededRandom(5), 0.02), 1);
    const t2 = randomNormal([3, 4], new SeededRandom(5), 0.02);
    expect(t1.shape).toEqual([3, 4]);
    expect(t1.dtype).toBe('float32');
    expect(Array.from(t1.dataSync())).toEqual(Array.from(t2.dataSync()));
    tf.dispose([t1, t2]);
  });

  it('truncated normal stays within two standard deviations', () => {
    const t = truncatedNormal([1000], new SeededRandom(9), 0.5);
    const values = t.dataSync();
    expect(Math.max(...Array.from(values, Math.abs))).toBeLessThanOrEqual(1.0);
    t.dispose();
  });

  it('Kaiming and Xavier bounds follow the fans', () => {
    expect(fans([64, 16])).toEqual({ fanIn: 64, fanOut: 16 });
    expect(fans([16, 64], 'outIn')).toEqual({ fanIn: 64, fanOut: 16 });
    const k = kaimingUniform([64, 16], new SeededRandom(2), { gain: 1 });
    const bound = Math.sqrt(3 / 64);
    const kv = Array.from(k.dataSync(), Math.abs);
    expect(Math.max(...kv)).toBeLessThanOrEqual(bound);
    expect(Math.max(...kv)).toBeGreaterThan(0.9 * bound);
    const x = xavierUniform([64, 16], new SeededRandom(2));
    expect(Math.max(...Array.from(x.dataSync(), Math.abs))).toBeLessThanOrEqual(Math.sqrt(6 / 80));
    tf.dispose([k, x]);
  });
});
