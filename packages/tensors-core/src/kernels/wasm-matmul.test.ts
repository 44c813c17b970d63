import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { accelerationStatus, activeAccel, suspendAcceleration, withAcceleration } from '../accel.js';
import { accelerationPaths, seededNormals, checkGradients, expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from '../testing.js';
import { registerKernelFixes, withStockKernels } from './index.js';
import { stockKernel } from './registry.js';
import { wasmBatchMatMul, wasmFusedMatMul } from './wasm-matmul.js';

/** Float32 values from a fixed seed. */

const sizeOf = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);

/** The physical shape of an operand: `[..., R, C]`, or `[..., C, R]` when transposed. */
function physical(shape: readonly number[], transposed: boolean): number[] {
  if (!transposed) return [...shape];
  const rank = shape.length;
  return [...shape.slice(0, -2), shape[rank - 1] as number, shape[rank - 2] as number];
}

/** A plain-loop matmul with numpy broadcasting of batch dims; `aShape`/`bShape` are physical. */
function referenceMatMul(
  a: Float32Array,
  aShape: readonly number[],
  b: Float32Array,
  bShape: readonly number[],
  transposeA: boolean,
  transposeB: boolean,
): TensorValues {
  const ar = aShape.length;
  const br = bShape.length;
  const m = (transposeA ? aShape[ar - 1] : aShape[ar - 2]) as number;
  const k = (transposeA ? aShape[ar - 2] : aShape[ar - 1]) as number;
  const n = (transposeB ? bShape[br - 2] : bShape[br - 1]) as number;
  const outerA = aShape.slice(0, -2);
  const outerB = bShape.slice(0, -2);
  const rank = Math.max(outerA.length, outerB.length);
  const padA = [...new Array<number>(rank - outerA.length).fill(1), ...outerA];
  const padB = [...new Array<number>(rank - outerB.length).fill(1), ...outerB];
  const outer = padA.map((d, i) => Math.max(d, padB[i] as number));
  const batch = sizeOf(outer);
  const out = new Float32Array(batch * m * n);
  for (let index = 0; index < batch; index++) {
    let rest = index;
    let ia = 0;
    let ib = 0;
    let strideA = 1;
    let strideB = 1;
    for (let axis = rank - 1; axis >= 0; axis--) {
      const coordinate = rest % (outer[axis] as number);
      rest = Math.floor(rest / (outer[axis] as number));
      ia += ((padA[axis] as number) === 1 ? 0 : coordinate) * strideA;
      ib += ((padB[axis] as number) === 1 ? 0 : coordinate) * strideB;
      strideA *= padA[axis] as number;
      strideB *= padB[axis] as number;
    }
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let sum = 0;
        for (let p = 0; p < k; p++) {
          const av = a[ia * m * k + (transposeA ? p * m + i : i * k + p)] as number;
          const bv = b[ib * k * n + (transposeB ? j * k + p : p * n + j)] as number;
          sum += av * bv;
        }
        out[index * m * n + i * n + j] = sum;
      }
    }
  }
  return { shape: [...outer, m, n], dtype: 'float32', values: out };
}

interface MatMulCase {
  readonly name: string;
  /** Logical shapes `[..., M, K]` and `[..., K, N]` (before any transpose). */
  readonly a: readonly number[];
  readonly b: readonly number[];
  /** The stock cpu kernel (and tfjs's stock gradient) get this case wrong: compare with the plain loop only. */
  readonly broadcastsBothWays?: boolean;
}

const CASES: readonly MatMulCase[] = [
  { name: '2-D', a: [5, 7], b: [7, 4] },
  // TN and TT are computed as (op(B)ᵀ·op(A)ᵀ)ᵀ here: fewer elements to transpose
  { name: '2-D, tall and narrow output', a: [9, 6], b: [6, 2] },
  { name: 'batch 1', a: [1, 5, 7], b: [1, 7, 4] },
  { name: 'batch 3', a: [3, 5, 7], b: [3, 7, 4] },
  { name: 'batch 3 times a shared 2-D b', a: [3, 5, 7], b: [7, 4] },
  { name: 'a shared 2-D a times batch 3', a: [5, 7], b: [3, 7, 4] },
  { name: 'batch [2, 3]', a: [2, 3, 5, 7], b: [2, 3, 7, 4] },
  { name: 'broadcast batch [2, 1] x [1, 3]', a: [2, 1, 5, 7], b: [1, 3, 7, 4], broadcastsBothWays: true },
  { name: 'batch [2, 3] x batch [3]', a: [2, 3, 5, 7], b: [3, 7, 4] },
  { name: 'single row and column', a: [3, 1, 7], b: [3, 7, 1] },
];

const TRANSPOSES = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const;

const TABLE = CASES.flatMap((c) => TRANSPOSES.map(([transposeA, transposeB]) => ({ ...c, transposeA, transposeB })));

beforeAll(async () => {
  await tf.setBackend('wasm');
  registerKernelFixes('wasm');
});

/**
 * The paths the kernels can take: OpenBLAS on the wasm heap when native acceleration is active (the
 * test setup's initBackend turned it on if it could), and the XNNPACK path always. Every value and
 * gradient test runs on each.
 */
const PATHS = accelerationPaths('OpenBLAS', 'XNNPACK');

/** Runs a describe block's tests on one path: suspends acceleration for the XNNPACK path. */
function onPath(accelerated: boolean): void {
  let resume: (() => void) | undefined;
  beforeAll(() => {
    if (!accelerated) resume = suspendAcceleration();
  });
  afterAll(() => resume?.());
}

describe('wasm matmul path selection', () => {
  it.runIf(accelerationStatus().active)('with acceleration active, products never reach the stock (XNNPACK) kernel; suspended, they do', async () => {
    const stock = stockKernel(tf.BatchMatMul, 'wasm') as tf.KernelConfig;
    const stockFused = stockKernel(tf._FusedMatMul, 'wasm') as tf.KernelConfig;
    const spy = vi.spyOn(stock, 'kernelFunc');
    const spyFused = vi.spyOn(stockFused, 'kernelFunc');
    try {
      const run = (): void =>
        tf.tidy(() => {
          tf.matMul(tf.ones([3, 4, 5]), tf.ones([5, 2]), false, false).dataSync();
          tf.matMul(tf.ones([4, 3]), tf.ones([2, 4]), true, true).dataSync();
          tf.fused.matMul({ a: tf.ones([3, 4]), b: tf.ones([4, 2]), bias: tf.ones([2]), activation: 'relu' }).dataSync();
        });
      await withBackend('wasm', run);
      expect(activeAccel()).not.toBeNull();
      expect(spy).not.toHaveBeenCalled();
      expect(spyFused).not.toHaveBeenCalled();
      await withAcceleration(false, () => withBackend('wasm', run));
      expect(spy).toHaveBeenCalled();
      expect(spyFused).toHaveBeenCalled();
    } finally {
      spy.mockRestore();
      spyFused.mockRestore();
    }
  });
});

describe.each(PATHS)('wasm BatchMatMul fix ($path)', ({ accelerated }) => {
  onPath(accelerated);

  it('is the registered wasm kernel, and the stock kernel is restored under withStockKernels', async () => {
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).toBe(wasmBatchMatMul);
    expect(tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc).toBe(wasmFusedMatMul);
    await withStockKernels(() => {
      expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).not.toBe(wasmBatchMatMul);
      expect(tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc).not.toBe(wasmFusedMatMul);
    });
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).toBe(wasmBatchMatMul);
  });

  it.each(TABLE)('$name, transposeA $transposeA, transposeB $transposeB: values', async (c) => {
    const aShape = physical(c.a, c.transposeA);
    const bShape = physical(c.b, c.transposeB);
    const aValues = seededNormals(sizeOf(aShape), 1);
    const bValues = seededNormals(sizeOf(bShape), 2);
    const compute = (): tf.Tensor =>
      tf.matMul(tf.tensor(aValues, aShape), tf.tensor(bValues, bShape), c.transposeA, c.transposeB);
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', compute)) as [TensorValues];
      const reference = referenceMatMul(aValues, aShape, bValues, bShape, c.transposeA, c.transposeB);
      expectValuesClose(wasm, reference, { atol: 1e-4, rtol: 1e-4 });
      if (!c.broadcastsBothWays) {
        const [cpu] = (await valuesOn('cpu', compute)) as [TensorValues];
        expectValuesClose(wasm, cpu, { atol: 1e-4, rtol: 1e-4 });
      }
    });
  });

  it.each(TABLE)('$name, transposeA $transposeA, transposeB $transposeB: gradients', async (c) => {
    const aShape = physical(c.a, c.transposeA);
    const bShape = physical(c.b, c.transposeB);
    const aValues = seededNormals(sizeOf(aShape), 3);
    const bValues = seededNormals(sizeOf(bShape), 4);
    const outShape = referenceMatMul(aValues, aShape, bValues, bShape, c.transposeA, c.transposeB).shape;
    const weights = seededNormals(sizeOf(outShape), 5);
    // A scalar loss with a different weight on every output element, so every gradient entry is tested.
    const loss = (a: tf.Tensor, b: tf.Tensor): tf.Scalar =>
      tf.sum(tf.mul(tf.matMul(a, b, c.transposeA, c.transposeB), tf.tensor(weights, [...outShape])));
    const gradients = (): tf.Tensor[] => tf.grads(loss)([tf.tensor(aValues, aShape), tf.tensor(bValues, bShape)]);
    await expectNoLeak(async () => {
      if (c.broadcastsBothWays) {
        // cpu's kernel is wrong here (and so is its gradient): check against finite differences.
        await withBackend('wasm', () =>
          tf.tidy(() => checkGradients(loss, [tf.tensor(aValues, aShape), tf.tensor(bValues, bShape)])),
        );
        return;
      }
      const wasm = await valuesOn('wasm', gradients);
      // The cpu reference runs with the kit's gradients too: tfjs's stock BatchMatMul gradient
      // throws for broadcast batch dims (see gradients.test.ts).
      const cpu = await valuesOn('cpu', gradients);
      expectValuesClose(wasm[0] as TensorValues, cpu[0] as TensorValues, { atol: 1e-4, rtol: 1e-4 });
      expectValuesClose(wasm[1] as TensorValues, cpu[1] as TensorValues, { atol: 1e-4, rtol: 1e-4 });
    });
  });

  it('fixes the broadcast batch case the stock kernel gets wrong', async () => {
    const aValues = seededNormals(2 * 5 * 7, 6);
    const bValues = seededNormals(3 * 7 * 4, 7);
    const compute = (): tf.Tensor => tf.matMul(tf.tensor(aValues, [2, 1, 5, 7]), tf.tensor(bValues, [1, 3, 7, 4]));
    await expectNoLeak(async () => {
      const reference = referenceMatMul(aValues, [2, 1, 5, 7], bValues, [1, 3, 7, 4], false, false);
      const stock = await withStockKernels(() => valuesOn('wasm', compute));
      expect(() => expectValuesClose(stock[0] as TensorValues, reference)).toThrow(/expectValuesClose/);
      const fixed = await valuesOn('wasm', compute);
      expectValuesClose(fixed[0] as TensorValues, reference, { atol: 1e-4, rtol: 1e-4 });
    });
  });

  it('leaves non-float32 inputs to the stock kernel (which rejects them)', async () => {
    await expectNoLeak(() =>
      withBackend('wasm', () => {
        expect(() => tf.tidy(() => tf.matMul(tf.ones([2, 2], 'int32'), tf.ones([2, 2], 'int32')))).toThrow(/float32/);
      }),
    );
  });

  it('names both shapes when the inner dimensions differ', async () => {
    await withBackend('wasm', () => {
      const a = { dataId: {}, shape: [2, 3], dtype: 'float32' as const };
      const b = { dataId: {}, shape: [4, 5], dtype: 'float32' as const };
      expect(() => wasmBatchMatMul({ inputs: { a, b }, backend: tf.backend(), attrs: {} })).toThrow(
        /BatchMatMul: inner dimensions must match, got 3 \(a \[2, 3\].*4 \(b \[4, 5\]/,
      );
    });
  });
});

type Activation = 'linear' | 'relu' | 'relu6' | 'leakyrelu' | 'sigmoid' | 'elu' | 'prelu';
const ACTIVATIONS: readonly Activation[] = ['linear', 'relu', 'relu6', 'leakyrelu', 'sigmoid', 'elu', 'prelu'];

interface FusedCase {
  readonly name: string;
  readonly a: readonly number[];
  readonly b: readonly number[];
  readonly transposeA: boolean;
  readonly transposeB: boolean;
  readonly activation: Activation;
  /** Bias shape, or null for none. */
  readonly bias: readonly number[] | null;
  /** PReLU weight shape (used with `prelu` only). */
  readonly prelu: readonly number[];
}

const FUSED_SHAPES = [
  { name: '2-D', a: [5, 7], b: [7, 4] },
  { name: 'batch 3', a: [3, 5, 7], b: [3, 7, 4] },
  { name: 'batch 3 times a shared 2-D b', a: [3, 5, 7], b: [7, 4] },
] as const;

const FUSED_TABLE: FusedCase[] = [
  // every activation, with and without a [N] bias, every transpose, every batch layout
  ...FUSED_SHAPES.flatMap((shape) =>
    TRANSPOSES.flatMap(([transposeA, transposeB]) =>
      ACTIVATIONS.flatMap((activation) =>
        [null, [4]].map((bias) => ({ ...shape, transposeA, transposeB, activation, bias, prelu: [4] })),
      ),
    ),
  ),
  // biases the stock wasm kernel rejects ([], [5, 1]) or misreads ([1]); PReLU weights of other shapes
  ...(['linear', 'relu', 'prelu'] as const).flatMap((activation) =>
    [[1], [], [5, 1], [1, 4]].map((bias) => ({
      ...FUSED_SHAPES[1],
      transposeA: false,
      transposeB: true,
      activation,
      bias,
      prelu: [4],
    })),
  ),
  ...[[], [1], [5, 4], [5, 1]].map((prelu) => ({
    ...FUSED_SHAPES[2],
    transposeA: true,
    transposeB: false,
    activation: 'prelu' as const,
    bias: [4],
    prelu,
  })),
];

const describeShape = (shape: readonly number[] | null): string => (shape === null ? 'none' : `[${shape.join(', ')}]`);

describe.each(PATHS)('wasm _FusedMatMul fix ($path)', ({ accelerated }) => {
  onPath(accelerated);

  it.each(FUSED_TABLE.map((c) => ({ ...c, biasName: describeShape(c.bias), preluName: describeShape(c.prelu) })))(
    '$name, transposes $transposeA/$transposeB, $activation, bias $biasName, prelu weights $preluName: values match cpu',
    async (c) => {
      const aShape = physical(c.a, c.transposeA);
      const bShape = physical(c.b, c.transposeB);
      const aValues = seededNormals(sizeOf(aShape), 11);
      const bValues = seededNormals(sizeOf(bShape), 12);
      const biasValues = c.bias === null ? null : seededNormals(sizeOf(c.bias), 13);
      const preluValues = seededNormals(sizeOf(c.prelu), 14).map((v) => Math.abs(v) * 0.5);
      const compute = (): tf.Tensor =>
        tf.fused.matMul({
          a: tf.tensor(aValues, aShape),
          b: tf.tensor(bValues, bShape),
          transposeA: c.transposeA,
          transposeB: c.transposeB,
          ...(biasValues && c.bias ? { bias: tf.tensor(biasValues, [...c.bias]) } : {}),
          activation: c.activation,
          ...(c.activation === 'prelu' ? { preluActivationWeights: tf.tensor(preluValues, [...c.prelu]) } : {}),
          leakyreluAlpha: 0.3,
        });
      await expectNoLeak(async () => {
        const [wasm] = (await valuesOn('wasm', compute)) as [TensorValues];
        const [cpu] = (await valuesOn('cpu', compute)) as [TensorValues];
        expectValuesClose(wasm, cpu, { atol: 1e-4, rtol: 1e-4 });
      });
    },
  );

  // tfjs-core's fused.matMul computes its gradient in the op and does not sum over broadcast batch
  // dims, so the shared-b layout has no gradient there on any backend.
  it.each(
    FUSED_SHAPES.slice(0, 2).flatMap((shape) =>
      TRANSPOSES.flatMap(([transposeA, transposeB]) =>
        (['linear', 'relu'] as const).map((activation) => ({ ...shape, transposeA, transposeB, activation })),
      ),
    ),
  )('$name, transposes $transposeA/$transposeB, $activation with bias: gradients match cpu', async (c) => {
    const aShape = physical(c.a, c.transposeA);
    const bShape = physical(c.b, c.transposeB);
    const aValues = seededNormals(sizeOf(aShape), 21);
    const bValues = seededNormals(sizeOf(bShape), 22);
    const biasValues = seededNormals(4, 23);
    const outShape = [...c.a.slice(0, -1), 4];
    const weights = seededNormals(sizeOf(outShape), 24);
    const loss = (a: tf.Tensor, b: tf.Tensor, bias: tf.Tensor): tf.Scalar =>
      tf.sum(
        tf.mul(
          tf.fused.matMul({ a, b, bias, transposeA: c.transposeA, transposeB: c.transposeB, activation: c.activation }),
          tf.tensor(weights, outShape),
        ),
      );
    const gradients = (): tf.Tensor[] =>
      tf.grads(loss)([tf.tensor(aValues, aShape), tf.tensor(bValues, bShape), tf.tensor(biasValues, [4])]);
    await expectNoLeak(async () => {
      const wasm = await valuesOn('wasm', gradients);
      const cpu = await valuesOn('cpu', gradients);
      wasm.forEach((g, i) => expectValuesClose(g, cpu[i] as TensorValues, { atol: 1e-4, rtol: 1e-4 }));
    });
  });

  it('fixes the [1] bias the stock kernel reads past its end', async () => {
    const compute = (): tf.Tensor =>
      tf.fused.matMul({ a: tf.tensor2d([[1, 2, 3], [4, 5, 6]]), b: tf.tensor2d([[1, 0], [0, 1], [1, 1]]), bias: tf.tensor1d([10]) });
    const expected: TensorValues = { shape: [2, 2], dtype: 'float32', values: [14, 15, 20, 21] };
    await expectNoLeak(async () => {
      const fixed = await valuesOn('wasm', compute);
      expectValuesClose(fixed[0] as TensorValues, expected);
      const stock = await withStockKernels(() => valuesOn('wasm', compute));
      expect(() => expectValuesClose(stock[0] as TensorValues, expected)).toThrow(/values differ/);
    });
  });
});
