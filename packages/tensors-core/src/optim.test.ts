import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { suspendAcceleration } from './accel.js';
import { ConfigError, ShapeError } from './errors.js';
import { adamwUpdate, sumOfSquares, type AdamWUpdateScalars } from './optim.js';
import { SeededRandom } from './random.js';
import { accelerationPaths, expectNoLeak, valuesOn, withBackend, type TensorValues } from './testing.js';

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
  const scale = f32(s.gradientScale ?? 1);
  for (let i = 0; i < w.length; i++) {
    const gi = f32((g[i] as number) * scale);
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
const PATHS = accelerationPaths('fused native kernel');

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
    { shape: [1], t: 1, decay: true, scale: 1 },
    { shape: [7], t: 3, decay: false, scale: 0.25 },
    { shape: [3, 5], t: 1, decay: false, scale: 1 },
    { shape: [2, 3, 4], t: 10, decay: true, scale: 0.731 },
    { shape: [64, 33], t: 2, decay: true, scale: 1 },
    { shape: [1003], t: 500, decay: false, scale: 0.0137 },
  ])('$shape at step $t, decay $decay, gradient scale $scale: equals the float32 formula and cpu bit for bit, without leaks', async ({ shape, t, decay, scale }) => {
    const [w, g, m, v] = randomState(sizeOf(shape), sizeOf(shape) + t) as [Float32Array, Float32Array, Float32Array, Float32Array];
    const scalars = { ...scalarsAt(t, 5e-4, decay), ...(scale === 1 ? {} : { gradientScale: scale }) };
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
    expect(call({ gradientScale: -0.5 })).toThrow(/adamwUpdate: 'gradientScale' must be a finite number >= 0/);
    tf.dispose(weight);
  });
});

describe.each(PATHS)('sumOfSquares on wasm: $path', ({ accelerated }) => {
  let resume: (() => void) | undefined;
  beforeAll(() => {
    if (!accelerated) resume = suspendAcceleration();
  });
  afterAll(() => resume?.());

  it('adds the squares of every element of every tensor (float64 reference), in one kernel when fused', async () => {
    const shapes = [[3, 5], [7], [0, 4], [2, 3, 4], [1003]];
    const arrays = shapes.map((shape, i) => randomState(sizeOf(shape), 40 + i)[0] as Float32Array);
    const exact = arrays.reduce((sum, values) => sum + Array.from(values).reduce((s, x) => s + x * x, 0), 0);
    await expectNoLeak(async () => {
      await withBackend('wasm', async () => {
        const tensors = shapes.map((shape, i) => tf.tensor(arrays[i] as Float32Array, shape));
        const profile = await tf.profile(() => sumOfSquares(tensors));
        const total = profile.result as tf.Scalar;
        expect(total.shape).toEqual([]);
        expect(total.dataSync()[0]).toBeCloseTo(exact, 3);
        expect(Math.abs((total.dataSync()[0] as number) - exact) / exact).toBeLessThan(1e-6);
        expect(profile.kernelNames.includes('MoeppSumOfSquares')).toBe(accelerated);
        if (accelerated) expect(profile.kernelNames).toEqual(['MoeppSumOfSquares']);
        tf.dispose([total, ...tensors]);
      });
      const cpu = await valuesOn('cpu', () => [sumOfSquares(shapes.map((shape, i) => tf.tensor(arrays[i] as Float32Array, shape)))]);
      expect(Math.abs((cpu[0]?.values[0] as number) - exact) / exact).toBeLessThan(1e-6);
    });
  });

  it('is 0 for no tensors and rejects a tensor that is not float32, naming its position', async () => {
    await withBackend('wasm', async () => {
      const zero = sumOfSquares([]);
      expect(zero.dataSync()[0]).toBe(0);
      const [a, ints] = [tf.ones([2]), tf.ones([2], 'int32')];
      expect(() => sumOfSquares([a, ints])).toThrow(new ConfigError('sumOfSquares: tensor 1 must be float32, got int32'));
      tf.dispose([zero, a, ints]);
    });
  });
});
