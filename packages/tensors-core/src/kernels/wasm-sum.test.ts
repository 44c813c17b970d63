import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { seededNormals, expectNoLeak, expectValuesClose, valuesOn, type TensorValues } from '../testing.js';
import { registerKernelFixes, withStockKernels } from './index.js';
import { stockKernel } from './registry.js';
import { wasmSum } from './wasm-sum.js';

beforeAll(() => {
  registerKernelFixes('wasm');
});


interface SumCase {
  readonly name: string;
  readonly shape: readonly number[];
  readonly axis: number | number[];
  /** True when the fix handles it itself (consecutive axes that are not innermost). */
  readonly handled: boolean;
}

const CASES: readonly SumCase[] = [
  { name: 'bias gradient: [N, D] over axis 0', shape: [37, 19], axis: 0, handled: true },
  { name: 'leading axes [2, 3, 5, 4] over [0, 1]', shape: [2, 3, 5, 4], axis: [0, 1], handled: true },
  { name: 'middle axis [3, 6, 5] over 1', shape: [3, 6, 5], axis: 1, handled: true },
  { name: 'middle axis, large blocks [3, 130, 128] over 1 (a product per block when native)', shape: [3, 130, 128], axis: 1, handled: true },
  { name: 'middle axes [2, 3, 4, 5] over [1, 2], negative axis', shape: [2, 3, 4, 5], axis: [1, -2], handled: true },
  { name: 'a single row [1, 8] over 0', shape: [1, 8], axis: 0, handled: true },
  { name: 'innermost axis (stock)', shape: [7, 9], axis: 1, handled: false },
  { name: 'all axes (stock)', shape: [4, 5], axis: [0, 1], handled: false },
  { name: 'axes not consecutive (stock)', shape: [3, 4, 5], axis: [0, 2], handled: false },
];

describe('wasm Sum fix', () => {
  it('is the registered wasm kernel', () => {
    expect(tf.getKernel(tf.Sum, 'wasm').kernelFunc).toBe(wasmSum);
  });

  it.each(CASES.flatMap((c) => [false, true].map((keepDims) => ({ ...c, keepDims }))))(
    '$name, keepDims $keepDims: matches cpu and the stock wasm kernel',
    async (c) => {
      const values = seededNormals(c.shape.reduce((p, d) => p * d, 1), 1);
      const compute = (): tf.Tensor => tf.sum(tf.tensor(values, [...c.shape]), c.axis, c.keepDims);
      const stock = stockKernel(tf.Sum, 'wasm') as tf.KernelConfig;
      const spy = vi.spyOn(stock, 'kernelFunc');
      try {
        await expectNoLeak(async () => {
          const [fixed] = (await valuesOn('wasm', compute)) as [TensorValues];
          // the fix does the consecutive non-innermost cases itself, without the stock kernel's transpose
          expect(spy.mock.calls.length > 0).toBe(!c.handled);
          const [cpu] = (await valuesOn('cpu', compute)) as [TensorValues];
          const [stockWasm] = (await withStockKernels(() => valuesOn('wasm', compute))) as [TensorValues];
          expect(fixed.dtype).toBe('float32');
          expectValuesClose(fixed, cpu, { atol: 1e-5, rtol: 1e-5 });
          expectValuesClose(fixed, stockWasm, { atol: 1e-5, rtol: 1e-5 });
        });
      } finally {
        spy.mockRestore();
      }
    },
  );

  it('leaves int32 inputs to the stock kernel, and sums an empty input to zeros (stock returned garbage)', async () => {
    await expectNoLeak(async () => {
      const [ints] = (await valuesOn('wasm', () => tf.sum(tf.tensor2d([[1, 2], [3, 4]], [2, 2], 'int32'), 0))) as [TensorValues];
      expect(ints.dtype).toBe('int32');
      expect(Array.from(ints.values)).toEqual([4, 6]);
      const [empty] = (await valuesOn('wasm', () => tf.sum(tf.zeros([0, 3]), 0))) as [TensorValues];
      expect(empty.shape).toEqual([3]);
      expect(Array.from(empty.values)).toEqual([0, 0, 0]);
    });
  });

  it('the bias gradient of a broadcast add runs through it and matches cpu', async () => {
    const x = seededNormals(64 * 16, 2);
    const bias = seededNormals(16, 3);
    const gradient = (): tf.Tensor => tf.grad((b: tf.Tensor) => tf.sum(tf.square(tf.add(tf.tensor2d(x, [64, 16]), b))))(tf.tensor1d(bias));
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', gradient)) as [TensorValues];
      const [cpu] = (await valuesOn('cpu', gradient)) as [TensorValues];
      expectValuesClose(wasm, cpu, { atol: 1e-4, rtol: 1e-5 });
    });
  });
});
