import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { suspendAcceleration } from './accel.js';
import { copyConstantMix } from './copy-constant.js';
import { ConfigError, ShapeError } from './errors.js';
import { accelerationPaths, seededNormals, expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from './testing.js';


/** Fused (when acceleration is active) and composite, on wasm; cpu always runs the composite form. */
const PATHS = accelerationPaths();

/** N tokens, D width, C constant experts. */
const CASES = [
  { n: 1, d: 4, c: 1 },
  { n: 7, d: 5, c: 2 }, // D odd
  { n: 33, d: 16, c: 3 },
  { n: 130, d: 24, c: 2 },
] as const;

/** Inputs of a case: gates with zeros (tokens that did not pick an expert) and sums below 1. */
function caseInputs({ n, d, c }: (typeof CASES)[number], seed: number) {
  const gates = Float32Array.from(seededNormals(n * (1 + c), seed), (v, i) => (i % 3 === 1 ? 0 : Math.abs(v) * 0.4));
  return {
    x: seededNormals(n * d, seed + 1),
    gates,
    mixWeight: seededNormals(d * 2 * c, seed + 2, 0.5),
    vectors: seededNormals(c * d, seed + 3),
    upstream: seededNormals(n * d, seed + 4),
  };
}

/** The output and the gradients of `sum(y · upstream)` with respect to the four inputs. */
function outputsAndGradients({ n, d, c }: (typeof CASES)[number], inputs: ReturnType<typeof caseInputs>): tf.Tensor[] {
  const tensors = [
    tf.tensor2d(inputs.x, [n, d]),
    tf.tensor2d(inputs.gates, [n, 1 + c]),
    tf.tensor2d(inputs.mixWeight, [d, 2 * c]),
    tf.tensor2d(inputs.vectors, [c, d]),
  ] as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
  const upstream = tf.tensor2d(inputs.upstream, [n, d]);
  const y = copyConstantMix(...tensors);
  const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, w: tf.Tensor, v: tf.Tensor) =>
    tf.sum(tf.mul(copyConstantMix(a as tf.Tensor2D, b as tf.Tensor2D, w as tf.Tensor2D, v as tf.Tensor2D), upstream)),
  )(tensors);
  tf.dispose([...tensors, upstream]);
  return [y, ...grads];
}

describe.each(PATHS)('copyConstantMix on wasm: $path', ({ accelerated }) => {
  let resume: (() => void) | undefined;
  beforeAll(() => {
    if (!accelerated) resume = suspendAcceleration();
  });
  afterAll(() => resume?.());

  it('takes the path this block is about, forward and backward', async () => {
    await withBackend('wasm', async () => {
      const inputs = caseInputs(CASES[1], 1);
      const profile = await tf.profile(() => outputsAndGradients(CASES[1], inputs));
      expect(profile.kernelNames.includes('MoeppCopyConstant')).toBe(accelerated);
      expect(profile.kernelNames.includes('MoeppCopyConstantGrad')).toBe(accelerated);
      expect(profile.kernelNames.includes('Softmax')).toBe(!accelerated);
      tf.dispose(profile.result as tf.Tensor[]);
    });
  });

  it.each(CASES)('N=$n D=$d C=$c: values and all four gradients equal the composite form on cpu, without leaks', async (shape) => {
    const inputs = caseInputs(shape, shape.n + shape.c);
    await expectNoLeak(async () => {
      const wasm = await valuesOn('wasm', () => outputsAndGradients(shape, inputs));
      const cpu = await valuesOn('cpu', () => outputsAndGradients(shape, inputs));
      ['y', 'dx', 'dGates', 'dMixWeight', 'dVectors'].forEach((name, i) => {
        expect((wasm[i] as TensorValues).shape, name).toEqual((cpu[i] as TensorValues).shape);
        expectValuesClose(wasm[i] as TensorValues, cpu[i] as TensorValues, { atol: 2e-5, rtol: 2e-4 });
      });
    });
  });
});

describe('copyConstantMix', () => {
  it('computes the documented formula on a hand example (one token, one constant expert)', async () => {
    // x = [1, 2], W = [[1, 0], [0, 1]] -> logits [1, 2], [a1, a2] = softmax; gates: copy 0.25, constant 0.5
    const out = copyConstantMix(tf.tensor2d([[1, 2]]), tf.tensor2d([[0.25, 0.5]]), tf.tensor2d([[1, 0], [0, 1]]), tf.tensor2d([[10, -10]]));
    const a1 = 1 / (1 + Math.exp(1));
    const a2 = 1 - a1;
    const w = 0.25 + 0.5 * a1;
    const values = Array.from(await out.data());
    expect(values[0]).toBeCloseTo(w * 1 + 0.5 * a2 * 10, 5);
    expect(values[1]).toBeCloseTo(w * 2 - 0.5 * a2 * 10, 5);
    out.dispose();
  });

  it('rejects mismatched shapes, missing constant experts and other dtypes, naming the argument', () => {
    tf.tidy(() => {
      const [x, gates, mixWeight, vectors] = [tf.zeros([3, 4]), tf.zeros([3, 3]), tf.zeros([4, 4]), tf.zeros([2, 4])] as tf.Tensor2D[] as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
      expect(() => copyConstantMix(x, tf.zeros([3, 2]) as tf.Tensor2D, mixWeight, vectors)).toThrow(
        new ShapeError("copyConstantMix: argument 'gates' must have shape [3, 3] for x [3, 4] and 2 constant experts, got [3, 2]"),
      );
      expect(() => copyConstantMix(x, gates, tf.zeros([4, 3]) as tf.Tensor2D, vectors)).toThrow(/'mixWeight' must have shape \[4, 4\]/);
      expect(() => copyConstantMix(x, gates, mixWeight, tf.zeros([0, 4]) as tf.Tensor2D)).toThrow(/'vectors' must be \[C, D\] with C >= 1/);
      expect(() => copyConstantMix(tf.zeros([3, 4], 'int32') as tf.Tensor2D, gates, mixWeight, vectors)).toThrow(
        new ConfigError("copyConstantMix: argument 'x' must be float32, got int32"),
      );
    });
  });

  it('gives empty outputs for no tokens', async () => {
    await withBackend('wasm', async () => {
      const out = copyConstantMix(tf.zeros([0, 4]) as tf.Tensor2D, tf.zeros([0, 3]) as tf.Tensor2D, tf.zeros([4, 4]) as tf.Tensor2D, tf.zeros([2, 4]) as tf.Tensor2D);
      expect(out.shape).toEqual([0, 4]);
      tf.dispose(out);
    });
  });
});
