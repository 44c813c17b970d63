import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accelerationStatus, suspendAcceleration, withAcceleration } from './accel.js';
import { ConfigError, ShapeError } from './errors.js';
import { fusedOpsActive, gelu, rmsNorm, rotaryEmbedding, swiglu } from './fused.js';
import { accelerationPaths, seededNormals, checkGradients, expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from './testing.js';


const sizeOf = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);

/** Fused (when acceleration is active) and composite, on wasm; cpu is always the composite reference. */
const PATHS = accelerationPaths();

const TOLERANCE = { atol: 2e-5, rtol: 2e-5 };

describe.each(PATHS)('fused ops on wasm: $path', ({ accelerated }) => {
  let resume: (() => void) | undefined;
  beforeAll(() => {
    if (!accelerated) resume = suspendAcceleration();
  });
  afterAll(() => resume?.());

  it('take the path this block is about', async () => {
    const up = tf.ones([2, 4]);
    const x = tf.ones([2, 3]);
    const weight = tf.ones([3]);
    try {
      await withBackend('wasm', async () => {
        expect(fusedOpsActive()).toBe(accelerated);
        const profile = await tf.profile(() => [swiglu(up), rmsNorm(x, weight), gelu(x)]);
        const names = profile.kernelNames;
        expect(names.includes('MoeppSwiGLU')).toBe(accelerated);
        expect(names.includes('MoeppRmsNorm')).toBe(accelerated);
        expect(names.includes('MoeppGelu')).toBe(accelerated);
        expect(names.includes('Erf')).toBe(!accelerated);
        expect(names.includes('Sigmoid')).toBe(!accelerated);
        tf.dispose(profile.result as tf.Tensor[]);
      });
    } finally {
      tf.dispose([up, x, weight]);
    }
  });

  it.each([
    { shape: [5, 8] },
    { shape: [2, 3, 6] },
    { shape: [1, 2] },
    { shape: [3, 64] },
  ])('swiglu $shape: values and gradient match cpu', async ({ shape }) => {
    const upValues = seededNormals(sizeOf(shape), 1, 3);
    const outShape = [...shape.slice(0, -1), (shape[shape.length - 1] as number) / 2];
    const weights = seededNormals(sizeOf(outShape), 2);
    const forward = (): tf.Tensor => swiglu(tf.tensor(upValues, shape));
    const gradient = (): tf.Tensor =>
      tf.grad((up: tf.Tensor) => tf.sum(tf.mul(swiglu(up), tf.tensor(weights, outShape))))(tf.tensor(upValues, shape));
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', forward)) as [TensorValues];
      const [cpu] = (await valuesOn('cpu', forward)) as [TensorValues];
      expect(wasm.shape).toEqual(outShape);
      expectValuesClose(wasm, cpu, TOLERANCE);
      const [wasmGrad] = (await valuesOn('wasm', gradient)) as [TensorValues];
      const [cpuGrad] = (await valuesOn('cpu', gradient)) as [TensorValues];
      expect(wasmGrad.shape).toEqual(shape);
      expectValuesClose(wasmGrad, cpuGrad, TOLERANCE);
    });
  });

  it.each([{ shape: [5, 8] }, { shape: [2, 3, 7] }, { shape: [1000] }])('gelu $shape: values and gradient match cpu', async ({ shape }) => {
    // spread over [-6, 6] and beyond, where erf saturates
    const xValues = seededNormals(sizeOf(shape), 12, 3);
    xValues[0] = -30;
    xValues[1] = 30;
    const weights = seededNormals(sizeOf(shape), 13);
    const forward = (): tf.Tensor => gelu(tf.tensor(xValues, shape));
    const gradient = (): tf.Tensor => tf.grad((x: tf.Tensor) => tf.sum(tf.mul(gelu(x), tf.tensor(weights, shape))))(tf.tensor(xValues, shape));
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', forward)) as [TensorValues];
      const [cpu] = (await valuesOn('cpu', forward)) as [TensorValues];
      expectValuesClose(wasm, cpu, { atol: 1e-6, rtol: 1e-5 });
      const [wasmGrad] = (await valuesOn('wasm', gradient)) as [TensorValues];
      const [cpuGrad] = (await valuesOn('cpu', gradient)) as [TensorValues];
      expectValuesClose(wasmGrad, cpuGrad, { atol: 1e-5, rtol: 1e-4 });
    });
  });

  it.each([
    { shape: [4, 6], eps: 1e-6 },
    { shape: [2, 3, 8], eps: 1e-2 },
    { shape: [1, 1], eps: 1e-6 },
    { shape: [7, 192], eps: 1e-5 },
  ])('rmsNorm $shape eps $eps: values and gradients (x and weight) match cpu', async ({ shape, eps }) => {
    const d = shape[shape.length - 1] as number;
    const xValues = seededNormals(sizeOf(shape), 3);
    const weightValues = seededNormals(d, 4);
    const upstream = seededNormals(sizeOf(shape), 5);
    const forward = (): tf.Tensor => rmsNorm(tf.tensor(xValues, shape), tf.tensor1d(weightValues), eps);
    const gradients = (): tf.Tensor[] =>
      tf.grads((x: tf.Tensor, weight: tf.Tensor) => tf.sum(tf.mul(rmsNorm(x, weight, eps), tf.tensor(upstream, shape))))([
        tf.tensor(xValues, shape),
        tf.tensor1d(weightValues),
      ]);
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', forward)) as [TensorValues];
      const [cpu] = (await valuesOn('cpu', forward)) as [TensorValues];
      expectValuesClose(wasm, cpu, TOLERANCE);
      const wasmGrads = await valuesOn('wasm', gradients);
      const cpuGrads = await valuesOn('cpu', gradients);
      expect(wasmGrads.map((g) => g.shape)).toEqual([shape, [d]]);
      wasmGrads.forEach((g, i) => expectValuesClose(g, cpuGrads[i] as TensorValues, { atol: 1e-4, rtol: 1e-4 }));
    });
  });

  it('gradients agree with finite differences', async () => {
    await withBackend('wasm', () =>
      tf.tidy(() => {
        const up = tf.tensor(seededNormals(3 * 6, 6), [3, 6]);
        checkGradients((u) => tf.sum(tf.square(swiglu(u))), [up]);
        checkGradients((u) => tf.sum(tf.mul(gelu(u), u)), [up]);
        const x = tf.tensor(seededNormals(3 * 5, 7), [3, 5]);
        const weight = tf.tensor1d(seededNormals(5, 8));
        checkGradients((a, w) => tf.sum(tf.mul(rmsNorm(a, w as tf.Tensor), tf.range(0, 15).reshape([3, 5]))), [x, weight]);
      }),
    );
  });

  it('a tf.Variable weight gets its gradient through variableGrads, without leaks', async () => {
    await withBackend('wasm', async () => {
      const weight = tf.variable(tf.tensor1d([1, 2, 3]));
      const x = tf.tensor2d([
        [1, 2, 3],
        [-1, 0, 4],
      ]);
      try {
        await expectNoLeak(() => {
          const { value, grads } = tf.variableGrads(() => tf.sum(rmsNorm(x, weight)) as tf.Scalar, [weight]);
          const gradient = grads[weight.name] as tf.Tensor;
          // dWeight_j = Σ_rows x_j·s_row, s_row = (mean(x²) + eps)^-½
          const s = [1 / Math.sqrt(14 / 3 + 1e-6), 1 / Math.sqrt(17 / 3 + 1e-6)];
          const expected = [1 * (s[0] as number) - (s[1] as number), 2 * (s[0] as number), 3 * (s[0] as number) + 4 * (s[1] as number)];
          expect(Array.from(gradient.dataSync())).toEqual(expected.map((v) => expect.closeTo(v, 5)));
          tf.dispose([value, gradient]);
        });
      } finally {
        tf.dispose([weight, x]);
      }
    });
  });
});

describe.runIf(accelerationStatus().active)('fused ops: forward with acceleration, backward without', () => {
  it('the backward pass falls back to the composite gradients and still matches cpu', async () => {
    const upValues = seededNormals(4 * 10, 9, 2);
    const xValues = seededNormals(4 * 6, 10);
    const weightValues = seededNormals(6, 11);
    const run = async (suspendBackward: boolean): Promise<TensorValues[]> =>
      valuesOn('wasm', () => {
        const up = tf.tensor2d(upValues, [4, 10]);
        const x = tf.tensor2d(xValues, [4, 6]);
        const weight = tf.tensor1d(weightValues);
        // tf.grads runs forward and backward in one call; suspending inside the loss's last op makes
        // the forward pass fused and the backward pass composite.
        return tf.grads((u: tf.Tensor, a: tf.Tensor, w: tf.Tensor) => {
          const loss = tf.addN([tf.sum(tf.square(swiglu(u))), tf.sum(tf.square(rmsNorm(a, w))), tf.sum(tf.square(gelu(a)))]);
          if (suspendBackward) resumeLater.push(suspendAcceleration());
          return loss as tf.Scalar;
        })([up, x, weight]);
      });
    const resumeLater: Array<() => void> = [];
    let mixed: TensorValues[];
    try {
      mixed = await run(true);
    } finally {
      resumeLater.forEach((resume) => resume());
    }
    const reference = await withAcceleration(false, () => run(false));
    const cpu = await valuesOn('cpu', () =>
      tf.grads((u: tf.Tensor, a: tf.Tensor, w: tf.Tensor) =>
        tf.addN([tf.sum(tf.square(swiglu(u))), tf.sum(tf.square(rmsNorm(a, w))), tf.sum(tf.square(gelu(a)))]) as tf.Scalar,
      )([tf.tensor2d(upValues, [4, 10]), tf.tensor2d(xValues, [4, 6]), tf.tensor1d(weightValues)]),
    );
    mixed.forEach((g, i) => {
      expectValuesClose(g, reference[i] as TensorValues, { atol: 1e-4, rtol: 1e-4 });
      expectValuesClose(g, cpu[i] as TensorValues, { atol: 1e-4, rtol: 1e-4 });
    });
  });
});

describe('fused ops: argument checks', () => {
  it('swiglu rejects an odd last axis and a scalar, naming the shape', () => {
    expect(() => swiglu(tf.zeros([2, 3]))).toThrow(new ShapeError("swiglu: argument 'up' must have an even last axis [..., 2F], got [2, 3]"));
    expect(() => swiglu(tf.scalar(1))).toThrow(ShapeError);
  });

  it('rmsNorm rejects a weight of the wrong shape and a negative eps', () => {
    expect(() => rmsNorm(tf.zeros([2, 3]), tf.zeros([4]))).toThrow(new ShapeError("rmsNorm: argument 'weight' must have shape [3] for x [2, 3], got [4]"));
    expect(() => rmsNorm(tf.zeros([2, 3]), tf.zeros([3]), -1)).toThrow(ConfigError);
  });

  it('empty inputs give empty outputs on every path', async () => {
    await expectNoLeak(async () => {
      const [out] = (await valuesOn('wasm', () => swiglu(tf.zeros([0, 4])))) as [TensorValues];
      expect(out.shape).toEqual([0, 2]);
      const [normed] = (await valuesOn('wasm', () => rmsNorm(tf.zeros([0, 4]), tf.ones([4])))) as [TensorValues];
      expect(normed.shape).toEqual([0, 4]);
    });
  });
});

/** Rotary tables `[T, hd/2]` of LLaMA's frequencies `θ[t, i] = t·base^(−2i/hd)`. */
function rotaryHalfTables(seqLen: number, headDim: number, base = 10000): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(seqLen * half);
  const sin = new Float32Array(seqLen * half);
  for (let t = 0; t < seqLen; t++) {
    for (let i = 0; i < half; i++) {
      const angle = t * Math.pow(base, (-2 * i) / headDim);
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

describe.each(PATHS)('rotaryEmbedding on wasm: $path', ({ accelerated }) => {
  let resume: (() => void) | undefined;
  beforeAll(() => {
    if (!accelerated) resume = suspendAcceleration();
  });
  afterAll(() => resume?.());

  it('takes the path this block is about', async () => {
    await withBackend('wasm', async () => {
      const x = tf.ones([1, 2, 4]);
      const table = tf.ones([2, 2]);
      try {
        const profile = await tf.profile(() => rotaryEmbedding(x, table, table));
        expect(profile.kernelNames.includes('MoeppRotary')).toBe(accelerated);
        expect(profile.kernelNames.includes('Concat')).toBe(!accelerated);
        tf.dispose(profile.result as tf.Tensor);
      } finally {
        tf.dispose([x, table]);
      }
    });
  });

  it('rotates each pair (x1_i, x2_i) by its angle: a hand-checked quarter turn and identity', async () => {
    // T = 2, hd = 4: position 0 has angle 0 (identity), position 1 angles 90° and 180°.
    const forward = (): tf.Tensor =>
      rotaryEmbedding(
        tf.tensor3d([[[1, 2, 3, 4], [1, 2, 3, 4]]]),
        tf.tensor2d([[1, 1], [0, -1]]),
        tf.tensor2d([[0, 0], [1, 0]]),
      );
    await expectNoLeak(async () => {
      const [y] = (await valuesOn('wasm', forward)) as [TensorValues];
      expect(y.shape).toEqual([1, 2, 4]);
      expect(y.dtype).toBe('float32');
      // pair (1, 3) by 90° -> (-3, 1); pair (2, 4) by 180° -> (-2, -4)
      expect(Array.from(y.values)).toEqual([1, 2, 3, 4, -3, -2, 1, -4]);
    });
  });

  it.each([
    { shape: [3, 4] },
    { shape: [2, 3, 5, 8] },
    { shape: [2, 4, 16, 32] },
    { shape: [1, 1, 7, 2] },
  ])('$shape: values and gradient match cpu', async ({ shape }) => {
    const seqLen = shape[shape.length - 2] as number;
    const headDim = shape[shape.length - 1] as number;
    const { cos, sin } = rotaryHalfTables(seqLen, headDim);
    const xValues = seededNormals(sizeOf(shape), 21, 2);
    const upstream = seededNormals(sizeOf(shape), 22);
    const tables = (): [tf.Tensor, tf.Tensor] => [tf.tensor2d(cos, [seqLen, headDim / 2]), tf.tensor2d(sin, [seqLen, headDim / 2])];
    const forward = (): tf.Tensor => rotaryEmbedding(tf.tensor(xValues, shape), ...tables());
    const gradient = (): tf.Tensor =>
      tf.grad((x: tf.Tensor) => tf.sum(tf.mul(rotaryEmbedding(x, ...tables()), tf.tensor(upstream, shape))))(tf.tensor(xValues, shape));
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', forward)) as [TensorValues];
      const [cpu] = (await valuesOn('cpu', forward)) as [TensorValues];
      expect(wasm.shape).toEqual(shape);
      expectValuesClose(wasm, cpu, TOLERANCE);
      const [wasmGrad] = (await valuesOn('wasm', gradient)) as [TensorValues];
      const [cpuGrad] = (await valuesOn('cpu', gradient)) as [TensorValues];
      expect(wasmGrad.shape).toEqual(shape);
      expectValuesClose(wasmGrad, cpuGrad, TOLERANCE);
    });
  });

  it('the gradient agrees with finite differences', async () => {
    const { cos, sin } = rotaryHalfTables(3, 4, 7);
    await withBackend('wasm', () =>
      tf.tidy(() => {
        const x = tf.tensor(seededNormals(2 * 3 * 4, 23), [2, 3, 4]);
        const weights = tf.tensor(seededNormals(2 * 3 * 4, 24), [2, 3, 4]);
        const cosTable = tf.tensor2d(cos, [3, 2]);
        const sinTable = tf.tensor2d(sin, [3, 2]);
        checkGradients((u) => tf.sum(tf.mul(tf.square(rotaryEmbedding(u, cosTable, sinTable)), weights)), [x]);
      }),
    );
  });
});

describe.runIf(accelerationStatus().active)('rotaryEmbedding: fused and composite', () => {
  it('give the same float32 values on wasm, bit for bit (same products and sums, no FMA)', async () => {
    const shape = [2, 3, 33, 64];
    const { cos, sin } = rotaryHalfTables(33, 64);
    const xValues = seededNormals(sizeOf(shape), 25, 3);
    const forward = (): tf.Tensor => rotaryEmbedding(tf.tensor(xValues, shape), tf.tensor2d(cos, [33, 32]), tf.tensor2d(sin, [33, 32]));
    const [fused] = (await valuesOn('wasm', forward)) as [TensorValues];
    const [composite] = (await withAcceleration(false, () => valuesOn('wasm', forward))) as [TensorValues];
    expect(Array.from(fused.values)).toEqual(Array.from(composite.values));
  });

  it('a fused forward pass with a composite backward pass (acceleration suspended) still gives the gradient', async () => {
    const { cos, sin } = rotaryHalfTables(4, 6);
    const xValues = seededNormals(2 * 4 * 6, 26);
    const resumeLater: Array<() => void> = [];
    let mixed: TensorValues[];
    try {
      mixed = await valuesOn('wasm', () =>
        tf.grads((x: tf.Tensor) => {
          const loss = tf.sum(tf.square(tf.sub(rotaryEmbedding(x, tf.tensor2d(cos, [4, 3]), tf.tensor2d(sin, [4, 3])), 1)));
          resumeLater.push(suspendAcceleration());
          return loss as tf.Scalar;
        })([tf.tensor3d(xValues, [2, 4, 6])]),
      );
    } finally {
      resumeLater.forEach((resume) => resume());
    }
    const cpu = await valuesOn('cpu', () =>
      tf.grads((x: tf.Tensor) => tf.sum(tf.square(tf.sub(rotaryEmbedding(x, tf.tensor2d(cos, [4, 3]), tf.tensor2d(sin, [4, 3])), 1))) as tf.Scalar)([
        tf.tensor3d(xValues, [2, 4, 6]),
      ]),
    );
    expectValuesClose(mixed[0] as TensorValues, cpu[0] as TensorValues, { atol: 1e-5, rtol: 1e-5 });
  });
});

describe('rotaryEmbedding: argument checks', () => {
  it('rejects an odd head width, tables of the wrong shape and non-float32 tensors, naming the argument', () => {
    const table = tf.zeros([3, 2]);
    expect(() => rotaryEmbedding(tf.zeros([3, 5]), table, table)).toThrow(new ShapeError("rotaryEmbedding: argument 'x' must be [..., T, hd] with an even hd, got [3, 5]"));
    expect(() => rotaryEmbedding(tf.zeros([4]), table, table)).toThrow(ShapeError);
    expect(() => rotaryEmbedding(tf.zeros([2, 3, 4]), tf.zeros([3, 4]), table)).toThrow(
      new ShapeError("rotaryEmbedding: argument 'cos' must have shape [3, 2] for x [2, 3, 4], got [3, 4]"),
    );
    expect(() => rotaryEmbedding(tf.zeros([2, 3, 4]), table, tf.zeros([2, 2]))).toThrow(ShapeError);
    expect(() => rotaryEmbedding(tf.zeros([3, 4], 'int32'), table, table)).toThrow(new ConfigError("rotaryEmbedding: argument 'x' must be float32, got int32"));
  });

  it('an empty batch gives an empty output on every path', async () => {
    await expectNoLeak(async () => {
      const [out] = (await valuesOn('wasm', () => rotaryEmbedding(tf.zeros([0, 3, 4]), tf.ones([3, 2]), tf.ones([3, 2])))) as [TensorValues];
      expect(out.shape).toEqual([0, 3, 4]);
    });
  });
});
