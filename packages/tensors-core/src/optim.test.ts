import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accelerationStatus, suspendAcceleration } from './accel.js';
import { ConfigError, ShapeError } from './errors.js';
import { adamwUpdate, type AdamWUpdateScalars } from './optim.js';
import { SeededRandom } from './random.js';
import { expectNoLeak, valuesOn, withBackend, type TensorValues } from './testing.js';

const f32 = Math.fround;
const sizeOf = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);

/** The scalars of update `t` of PyTorch's AdamW with learning rate `lr`, computed in float64 as the trainer does. */
function scalarsAt(t: number, lr: number, decay: boolean): AdamWUpdateScalars {
  const [beta1, beta2, weightDecay] = [0.9, 0.95, 0.1];
  return {
    beta1,
    beta2,
    epsilon: 1e-8,
    stepSize: lr / (1 - beta1 ** t),
    inverseRootCorrection2: 1 / Math.sqrt(1 - beta2 ** t),
    decayFactor: decay ? 1 - lr * weightDecay : 1,
  };
}

/** The update on plain numbers, every operation rounded to float32 in the composite form's order. */
function reference(w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, s: AdamWUpdateScalars): Float32Array[] {
  const [weight, first, second] = [new Float32Array(w.length), new Float32Array(w.length), new Float32Array(w.length)];
  for (let i = 0; i < w.length; i++) {
    const gi = g[i] as number;
    const mi = f32(f32((m[i] as number) * f32(s.beta1)) + f32(gi * f32(1 - s.beta1)));
    const vi = f32(f32((v[i] as number) * f32(s.beta2)) + f32(f32(gi * gi) * f32(1 - s.beta2)));
    const denominator = f32(f32(f32(Math.sqrt(vi)) * f32(s.inverseRootCorrection2)) + f32(s.epsilon));
    first[i] = mi;
    second[i] = vi;
    weight[i] = f32(f32((w[i] as number) * f32(s.decayFactor)) - f32(f32(mi / denominator) * f32(s.stepSize)));
  }
  return [weight, first, second];
}

/** Weight, gradient and moments as after a few steps: some zero gradients and zero second moments (v' = 0: ε alone). */
function randomState(size: number, seed: number): Float32Array[] {
  const rng = new SeededRandom(seed);
  const weight = Float32Array.from({ length: size }, () => rng.normal());
  const gradient = Float32Array.from({ length: size }, (_, i) => (i % 5 === 3 ? 0 : rng.normal() * 0.1));
  const first = Float32Array.from({ length: size }, (_, i) => (i % 5 === 3 ? 0 : rng.normal() * 0.01));
  const second = Float32Array.from({ length: size }, (_, i) => (i % 5 === 3 ? 0 : rng.normal() ** 2 * 1e-3));
  return [weight, gradient, first, second];
}

function expectBitwiseEqual(actual: TensorValues, expected: Float32Array, shape: readonly number[], what: string): void {
  expect(actual.shape, what).toEqual(shape);
  expect(actual.dtype, what).toBe('float32');
  const differing = Array.from(actual.values).findIndex((value, i) => value !== expected[i]);
  expect(differing, `${what}: first differing element ${differing}: ${actual.values[differing]} vs ${expected[differing]}`).toBe(-1);
}

/** Fused (when acceleration is active) and composite, on wasm; cpu always runs the composite form. */
const PATHS = [
  ...(accelerationStatus().active ? [{ path: 'fused native kernel', accelerated: true }] : []),
  { path: 'composite ops', accelerated: false },
] as const;

describe.each(PATHS)('adamwUpdate on wasm: $path', ({ accelerated }) => {
  let resume: (() => void) | undefined;
  beforeAll(() => {
    if (!accelerated) resume = suspendAcceleration();
  });
  afterAll(() => resume?.());

  it('takes the path this block is about: one MoeppAdamW kernel, or the composite ops', async () => {
    const [weight, gradient, first, second] = [tf.ones([2, 3]), tf.ones([2, 3]), tf.zeros([2, 3]), tf.zeros([2, 3])];
    try {
      await withBackend('wasm', async () => {
        const profile = await tf.profile(() => {
          const update = adamwUpdate(weight, gradient, first, second, scalarsAt(1, 1e-3, true));
          return [update.weight, update.firstMoment, update.secondMoment];
        });
        expect(profile.kernelNames.includes('MoeppAdamW')).toBe(accelerated);
        expect(profile.kernelNames.includes('Sqrt')).toBe(!accelerated);
        if (accelerated) expect(profile.kernelNames).toEqual(['MoeppAdamW']);
        tf.dispose(profile.result as tf.Tensor[]);
      });
    } finally {
      tf.dispose([weight, gradient, first, second]);
    }
  });

  it.each([
    { shape: [1], t: 1, decay: true },
    { shape: [7], t: 3, decay: false },
    { shape: [3, 5], t: 1, decay: false },
    { shape: [2, 3, 4], t: 10, decay: true },
    { shape: [64, 33], t: 2, decay: true },
    { shape: [1003], t: 500, decay: false },
  ])('$shape at step $t, decay $decay: equals the float32 formula and cpu bit for bit, without leaks', async ({ shape, t, decay }) => {
    const [w, g, m, v] = randomState(sizeOf(shape), sizeOf(shape) + t) as [Float32Array, Float32Array, Float32Array, Float32Array];
    const scalars = scalarsAt(t, 5e-4, decay);
    const compute = (): tf.Tensor[] => {
      const update = adamwUpdate(tf.tensor(w, shape), tf.tensor(g, shape), tf.tensor(m, shape), tf.tensor(v, shape), scalars);
      return [update.weight, update.firstMoment, update.secondMoment];
    };
    const expected = reference(w, g, m, v, scalars);
    await expectNoLeak(async () => {
      const wasm = await valuesOn('wasm', compute);
      const cpu = await valuesOn('cpu', compute);
      ['weight', 'firstMoment', 'secondMoment'].forEach((name, i) => {
        expectBitwiseEqual(wasm[i] as TensorValues, expected[i] as Float32Array, shape, `wasm ${name}`);
        expectBitwiseEqual(cpu[i] as TensorValues, expected[i] as Float32Array, shape, `cpu ${name}`);
      });
    });
  });

  it('returns new tensors and leaves its inputs alone, even when they share data', async () => {
    await withBackend('wasm', async () => {
      const weight = tf.variable(tf.tensor1d([0.5, -1, 2]));
      const moments = tf.tensor1d([0.01, 0.02, 0.03]);
      const alias = tf.reshape(moments, [3]); // shares the moments' data
      try {
        await expectNoLeak(() => {
          const scalars = scalarsAt(2, 0.1, true);
          const update = adamwUpdate(weight, weight, moments, alias, scalars);
          const w = new Float32Array([0.5, -1, 2]);
          const m = new Float32Array([0.01, 0.02, 0.03]);
          const [expectedWeight, expectedFirst, expectedSecond] = reference(w, w, m, m, scalars) as [Float32Array, Float32Array, Float32Array];
          expect(Array.from(update.weight.dataSync())).toEqual(Array.from(expectedWeight));
          expect(Array.from(update.firstMoment.dataSync())).toEqual(Array.from(expectedFirst));
          expect(Array.from(update.secondMoment.dataSync())).toEqual(Array.from(expectedSecond));
          expect(Array.from(weight.dataSync())).toEqual(Array.from(w));
          expect(Array.from(moments.dataSync())).toEqual(Array.from(m));
          tf.dispose([update.weight, update.firstMoment, update.secondMoment]);
        });
      } finally {
        tf.dispose([weight, moments, alias]);
      }
    });
  });

  it('an empty parameter gives empty results', async () => {
    await expectNoLeak(async () => {
      const out = await valuesOn('wasm', () => {
        const update = adamwUpdate(tf.zeros([0, 3]), tf.zeros([0, 3]), tf.zeros([0, 3]), tf.zeros([0, 3]), scalarsAt(1, 1e-3, true));
        return [update.weight, update.firstMoment, update.secondMoment];
      });
      expect(out.map((o) => o.shape)).toEqual([[0, 3], [0, 3], [0, 3]]);
    });
  });
});

describe('adamwUpdate: argument checks', () => {
  const scalars = scalarsAt(1, 1e-3, true);

  it('rejects tensors whose shape or dtype differs from the weight, naming the argument', () => {
    const [weight, other] = [tf.zeros([2, 3]), tf.zeros([3, 2])];
    const ints = tf.zeros([2, 3], 'int32');
    expect(() => adamwUpdate(weight, other, weight, weight, scalars)).toThrow(
      new ShapeError("adamwUpdate: argument 'gradient' must have the weight's shape [2, 3], got [3, 2]"),
    );
    expect(() => adamwUpdate(weight, weight, weight, ints, scalars)).toThrow(new ConfigError("adamwUpdate: argument 'secondMoment' must be float32, got int32"));
    tf.dispose([weight, other, ints]);
  });

  it('rejects scalars out of range, naming the field', () => {
    const weight = tf.zeros([2]);
    const call = (overrides: Partial<AdamWUpdateScalars>) => () => adamwUpdate(weight, weight, weight, weight, { ...scalars, ...overrides });
    expect(call({ beta1: 1 })).toThrow(new ConfigError("adamwUpdate: 'beta1' must be < 1, got 1"));
    expect(call({ beta2: -0.1 })).toThrow(/adamwUpdate: 'beta2' must be a finite number >= 0/);
    expect(call({ epsilon: -1 })).toThrow(/'epsilon'/);
    expect(call({ stepSize: Number.NaN })).toThrow(/'stepSize'/);
    expect(call({ inverseRootCorrection2: 0 })).toThrow(/'inverseRootCorrection2' must be a finite number > 0/);
    expect(call({ decayFactor: Infinity })).toThrow(/'decayFactor'/);
    tf.dispose(weight);
  });
});
