import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accelerationStatus, suspendAcceleration, withAcceleration } from './accel.js';
import { causalAttention } from './attention.js';
import { ConfigError, ShapeError } from './errors.js';
import { fusedOpsActive } from './fused.js';
import { accelerationPaths, seededNormals, checkGradients, expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from './testing.js';


/** Fused (when acceleration is active) and composite, on wasm; cpu is always the composite reference. */
const PATHS = accelerationPaths();

/** `[B, H, T, hd]`, or `[B, T, H, hd]` for the output. */
type Shape4 = [number, number, number, number];

/** One case: `[B, H, T, hd]` and the scale (undefined: the default 1/√hd). */
interface AttentionCase {
  readonly shape: Shape4;
  readonly scale?: number;
}

const CASES: readonly AttentionCase[] = [
  { shape: [1, 1, 1, 4] }, // T = 1: the only key is the query's own
  { shape: [1, 2, 7, 5] }, // hd odd, T prime
  { shape: [3, 1, 13, 3], scale: 0.8 }, // H = 1
  { shape: [2, 3, 33, 8] }, // several heads and rows, T not a multiple of the vector width
  { shape: [2, 3, 33, 8], scale: -0.45 }, // a negative scale reverses the order of the scores
  { shape: [1, 4, 64, 16], scale: 0.5 },
];

/** q, k, v values of a case, with scores of order 1 (the weights are neither uniform nor one-hot). */
function caseInputs({ shape }: AttentionCase, seed: number): { q: Float32Array; k: Float32Array; v: Float32Array; upstream: Float32Array } {
  const size = shape.reduce((p, d) => p * d, 1);
  const spread = 1.5 / Math.sqrt(Math.sqrt(shape[3]));
  return { q: seededNormals(size, seed, spread), k: seededNormals(size, seed + 1, spread), v: seededNormals(size, seed + 2), upstream: seededNormals(size, seed + 3) };
}

/** `[B, H, T, hd]` -> `[B, T, H, hd]`. */
const outShape = ([batch, heads, seqLen, headDim]: Shape4): Shape4 => [batch, seqLen, heads, headDim];

const TOLERANCE = { atol: 2e-5, rtol: 2e-4 };

describe.each(PATHS)('causalAttention on wasm: $path', ({ accelerated }) => {
  let resume: (() => void) | undefined;
  beforeAll(() => {
    if (!accelerated) resume = suspendAcceleration();
  });
  afterAll(() => resume?.());

  it('takes the path this block is about, forward and backward', async () => {
    await withBackend('wasm', async () => {
      const x = tf.tensor4d(seededNormals(2 * 2 * 3 * 4, 1), [2, 2, 3, 4]);
      try {
        expect(fusedOpsActive()).toBe(accelerated);
        const profile = await tf.profile(() => tf.grads((q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.sum(causalAttention(q, k, v)))([x, x, x]));
        const names = profile.kernelNames;
        expect(names.includes('MoeppCausalAttention')).toBe(accelerated);
        expect(names.includes('MoeppCausalAttentionGrad')).toBe(accelerated);
        expect(names.includes('Softmax')).toBe(!accelerated);
        expect(names.includes('BatchMatMul')).toBe(!accelerated);
        tf.dispose(profile.result as tf.Tensor[]);
      } finally {
        x.dispose();
      }
    });
  });

  it('computes a hand-checked case: weights 1/4 and 3/4 at the second position', async () => {
    // B = H = 1, T = 2, hd = 1, scale 1: position 0 sees only itself; position 1 has scores
    // q1·k0 = 0 and q1·k1 = ln 3, so its weights are [1/4, 3/4] and its output 4/4 + 3·8/4 = 7.
    const forward = (): tf.Tensor =>
      causalAttention(tf.tensor4d([1, 1], [1, 1, 2, 1]), tf.tensor4d([0, Math.log(3)], [1, 1, 2, 1]), tf.tensor4d([4, 8], [1, 1, 2, 1]), 1);
    await expectNoLeak(async () => {
      const [out] = (await valuesOn('wasm', forward)) as [TensorValues];
      expect(out.shape).toEqual([1, 2, 1, 1]);
      expect(out.dtype).toBe('float32');
      expect(out.values[0]).toBe(4);
      expect(out.values[1]).toBeCloseTo(7, 5);
    });
  });

  it.each(CASES)('$shape, scale $scale: values and gradients (dq, dk, dv) match cpu', async (testCase) => {
    const { shape, scale } = testCase;
    const { q, k, v, upstream } = caseInputs(testCase, 10 + shape[2]);
    const inputs = (): tf.Tensor[] => [tf.tensor4d(q, shape), tf.tensor4d(k, shape), tf.tensor4d(v, shape)];
    const forward = (): tf.Tensor => {
      const [query, key, value] = inputs() as [tf.Tensor, tf.Tensor, tf.Tensor];
      return causalAttention(query, key, value, scale);
    };
    const gradients = (): tf.Tensor[] =>
      tf.grads((query: tf.Tensor, key: tf.Tensor, value: tf.Tensor) => tf.sum(tf.mul(causalAttention(query, key, value, scale), tf.tensor4d(upstream, outShape(shape)))))(inputs());
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', forward)) as [TensorValues];
      const [cpu] = (await valuesOn('cpu', forward)) as [TensorValues];
      expect(wasm.shape).toEqual(outShape(shape));
      expect(wasm.dtype).toBe('float32');
      expectValuesClose(wasm, cpu, TOLERANCE);
      const wasmGrads = await valuesOn('wasm', gradients);
      const cpuGrads = await valuesOn('cpu', gradients);
      expect(wasmGrads.map((g) => g.shape)).toEqual([shape, shape, shape]);
      wasmGrads.forEach((g, i) => expectValuesClose(g, cpuGrads[i] as TensorValues, TOLERANCE));
    });
  });

  it('the default scale is 1/√hd', async () => {
    const shape: Shape4 = [1, 2, 5, 6];
    const { q, k, v } = caseInputs({ shape }, 40);
    const run = (scale?: number) => (): tf.Tensor => causalAttention(tf.tensor4d(q, shape), tf.tensor4d(k, shape), tf.tensor4d(v, shape), scale);
    const [byDefault] = (await valuesOn('wasm', run())) as [TensorValues];
    const [explicit] = (await valuesOn('wasm', run(1 / Math.sqrt(6)))) as [TensorValues];
    const [other] = (await valuesOn('wasm', run(1))) as [TensorValues];
    expect(Array.from(byDefault.values)).toEqual(Array.from(explicit.values));
    expect(Array.from(byDefault.values)).not.toEqual(Array.from(other.values));
  });

  it.each(['k', 'v'] as const)('gives a later %s exactly zero weight: earlier outputs do not change at all', async (changed) => {
    // B = 2, H = 3, T = 9, hd = 4; position 6 of one head of one batch row gets a huge key or value.
    const shape: Shape4 = [2, 3, 9, 4];
    const { q, k, v } = caseInputs({ shape }, 50);
    const edited = Float32Array.from(changed === 'k' ? k : v);
    const position = 6;
    const first = ((1 * 3 + 2) * 9 + position) * 4; // b = 1, h = 2
    edited.fill(1e4, first, first + 4);
    const run = (swap: boolean) => (): tf.Tensor =>
      causalAttention(
        tf.tensor4d(q, shape),
        tf.tensor4d(swap && changed === 'k' ? edited : k, shape),
        tf.tensor4d(swap && changed === 'v' ? edited : v, shape),
      );
    const [before] = (await valuesOn('wasm', run(false))) as [TensorValues];
    const [after] = (await valuesOn('wasm', run(true))) as [TensorValues];
    // out [B, T, H, hd]: rows (b = 1, t < 6) are bit for bit the same; (b = 1, t >= 6, h = 2) moved
    const rowOf = (b: number, t: number) => Array.from(before.values).slice((b * 9 + t) * 12, (b * 9 + t + 1) * 12);
    const rowAfter = (b: number, t: number) => Array.from(after.values).slice((b * 9 + t) * 12, (b * 9 + t + 1) * 12);
    for (let t = 0; t < position; t++) expect(rowAfter(1, t)).toEqual(rowOf(1, t));
    for (let t = 0; t < 9; t++) expect(rowAfter(0, t)).toEqual(rowOf(0, t)); // the other batch row
    for (let t = position; t < 9; t++) expect(rowAfter(1, t).slice(8)).not.toEqual(rowOf(1, t).slice(8)); // head 2
  });

  it('gradients agree with finite differences', async () => {
    await withBackend('wasm', () =>
      tf.tidy(() => {
        const shape: Shape4 = [1, 2, 4, 3];
        const { q, k, v, upstream } = caseInputs({ shape }, 60);
        const weights = tf.tensor4d(upstream, outShape(shape));
        checkGradients(
          (query, key, value) => tf.sum(tf.mul(tf.square(causalAttention(query as tf.Tensor, key as tf.Tensor, value as tf.Tensor, 0.9)), weights)),
          [tf.tensor4d(q, shape), tf.tensor4d(k, shape), tf.tensor4d(v, shape)],
        );
      }),
    );
  });

  it('an empty batch or sequence gives an empty output', async () => {
    await expectNoLeak(async () => {
      const [noRows] = (await valuesOn('wasm', () => causalAttention(tf.zeros([0, 2, 3, 4]), tf.zeros([0, 2, 3, 4]), tf.zeros([0, 2, 3, 4])))) as [TensorValues];
      expect(noRows.shape).toEqual([0, 3, 2, 4]);
      const [noPositions] = (await valuesOn('wasm', () => causalAttention(tf.zeros([2, 2, 0, 4]), tf.zeros([2, 2, 0, 4]), tf.zeros([2, 2, 0, 4])))) as [TensorValues];
      expect(noPositions.shape).toEqual([2, 0, 2, 4]);
    });
  });
});

describe.runIf(accelerationStatus().active)('causalAttention: forward with acceleration, backward without', () => {
  it('the backward pass falls back to the composite gradients and still matches cpu', async () => {
    const shape: Shape4 = [2, 3, 11, 4];
    const { q, k, v, upstream } = caseInputs({ shape }, 70);
    const loss = (query: tf.Tensor, key: tf.Tensor, value: tf.Tensor): tf.Scalar =>
      tf.sum(tf.mul(causalAttention(query, key, value), tf.tensor4d(upstream, outShape(shape))));
    const inputs = (): tf.Tensor[] => [tf.tensor4d(q, shape), tf.tensor4d(k, shape), tf.tensor4d(v, shape)];
    const resumeLater: Array<() => void> = [];
    let mixed: TensorValues[];
    try {
      mixed = await valuesOn('wasm', () =>
        tf.grads((query: tf.Tensor, key: tf.Tensor, value: tf.Tensor) => {
          const value_ = loss(query, key, value);
          // suspended after the forward pass: the backward pass takes the composite gradients
          resumeLater.push(suspendAcceleration());
          return value_;
        })(inputs()),
      );
    } finally {
      resumeLater.forEach((resume) => resume());
    }
    const reference = await withAcceleration(false, () => valuesOn('wasm', () => tf.grads(loss)(inputs())));
    const cpu = await valuesOn('cpu', () => tf.grads(loss)(inputs()));
    mixed.forEach((g, i) => {
      expectValuesClose(g, reference[i] as TensorValues, TOLERANCE);
      expectValuesClose(g, cpu[i] as TensorValues, TOLERANCE);
    });
  });
});

describe('causalAttention: argument checks', () => {
  it('rejects a wrong rank, mismatched shapes, non-float32 tensors and a non-finite scale, naming the argument', () => {
    const x = tf.zeros([2, 3, 5, 4]);
    try {
      expect(() => causalAttention(tf.zeros([3, 5, 4]), x, x)).toThrow(new ShapeError("causalAttention: argument 'q' must be [B, H, T, hd], got [3, 5, 4]"));
      expect(() => causalAttention(x, tf.zeros([2, 3, 5, 2]), x)).toThrow(
        new ShapeError("causalAttention: argument 'k' must have the shape of q [2, 3, 5, 4], got [2, 3, 5, 2]"),
      );
      expect(() => causalAttention(x, x, tf.zeros([2, 3, 6, 4]))).toThrow(
        new ShapeError("causalAttention: argument 'v' must have the shape of q [2, 3, 5, 4], got [2, 3, 6, 4]"),
      );
      expect(() => causalAttention(x, tf.zeros([2, 3, 5, 4, 1]), x)).toThrow(ShapeError);
      expect(() => causalAttention(x, x, tf.zeros([2, 3, 5, 4], 'int32'))).toThrow(new ConfigError("causalAttention: argument 'v' must be float32, got int32"));
      expect(() => causalAttention(x, x, x, Number.NaN)).toThrow(ConfigError);
      expect(() => causalAttention(x, x, x, Number.POSITIVE_INFINITY)).toThrow(/causalAttention: 'scale'/);
    } finally {
      tf.dispose(x);
    }
  });
});
