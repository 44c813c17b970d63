import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from '../testing.js';
import { registerKernelFixes, withStockKernels } from './index.js';
import { wasmOneHot } from './wasm-one-hot.js';

beforeAll(() => {
  registerKernelFixes('wasm');
});

interface OneHotCase {
  readonly name: string;
  readonly indices: readonly number[];
  readonly shape: readonly number[];
  readonly depth: number;
  readonly on: number;
  readonly off: number;
  readonly dtype: 'float32' | 'int32' | 'bool';
}

const CASES: readonly OneHotCase[] = [
  { name: 'float32, 1/0', indices: [0, 2, 1, 3], shape: [4], depth: 4, on: 1, off: 0, dtype: 'float32' },
  { name: 'float32, label smoothing 0.9/0.1', indices: [0, 2, 1], shape: [3], depth: 3, on: 0.9, off: 0.1, dtype: 'float32' },
  { name: 'float32, negative values', indices: [1, 0], shape: [2], depth: 2, on: -2.5, off: 0.5, dtype: 'float32' },
  { name: 'float32, out-of-range indices give a row of offValue', indices: [-1, 5, 1], shape: [3], depth: 3, on: 1, off: 0, dtype: 'float32' },
  { name: 'float32, rank-2 indices', indices: [0, 1, 2, 2, 1, 0], shape: [2, 3], depth: 3, on: 1, off: 0, dtype: 'float32' },
  { name: 'int32, 1/0', indices: [0, 2, 1, 3], shape: [4], depth: 5, on: 1, off: 0, dtype: 'int32' },
  { name: 'int32, 0.9/0.1 truncates as on cpu', indices: [0, 2], shape: [2], depth: 3, on: 0.9, off: 0.1, dtype: 'int32' },
  { name: 'int32, 7/-1', indices: [1, 0], shape: [2], depth: 2, on: 7, off: -1, dtype: 'int32' },
  { name: 'bool', indices: [1, 0, 2], shape: [3], depth: 3, on: 1, off: 0, dtype: 'bool' },
  { name: 'no indices', indices: [], shape: [0], depth: 3, on: 1, off: 0, dtype: 'float32' },
];

describe('wasm OneHot fix', () => {
  it('is the registered wasm kernel', () => {
    expect(tf.getKernel(tf.OneHot, 'wasm').kernelFunc).toBe(wasmOneHot);
  });

  it.each(CASES)('$name: matches cpu', async (c) => {
    const compute = (): tf.Tensor => tf.oneHot(tf.tensor(c.indices, [...c.shape], 'int32'), c.depth, c.on, c.off, c.dtype);
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', compute)) as [TensorValues];
      const [cpu] = (await valuesOn('cpu', compute)) as [TensorValues];
      expect(wasm.dtype).toBe(c.dtype);
      expect(cpu.dtype).toBe(c.dtype);
      expectValuesClose(wasm, cpu, { atol: 0, rtol: 0 });
    });
  });

  it('stock wasm gives int32 bit patterns for float32 and drops fractional values', async () => {
    await expectNoLeak(async () => {
      await withStockKernels(async () => {
        const [ones] = (await valuesOn('wasm', () => tf.oneHot(tf.tensor1d([1], 'int32'), 2, 1, 0, 'float32'))) as [TensorValues];
        expect(Array.from(ones.values)).toEqual([0, 1.401298464324817e-45]);
        const [smooth] = (await valuesOn('wasm', () =>
          tf.oneHot(tf.tensor1d([1], 'int32'), 2, 0.9, 0.1, 'float32'),
        )) as [TensorValues];
        expect(Array.from(smooth.values)).toEqual([0, 0]);
      });
    });
  });

  it('gives the same cross-entropy gradient as cpu when labels are one-hot float32', async () => {
    const logits = [0.2, -1, 0.5, 2, 0.1, -0.3];
    const labels = [2, 0];
    const gradient = (): tf.Tensor =>
      tf.grad((x: tf.Tensor) =>
        tf.losses.softmaxCrossEntropy(tf.oneHot(tf.tensor1d(labels, 'int32'), 3, 0.9, 0.05, 'float32'), x),
      )(tf.tensor2d(logits, [2, 3]));
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', gradient)) as [TensorValues];
      const [cpu] = (await valuesOn('cpu', gradient)) as [TensorValues];
      expectValuesClose(wasm, cpu, { atol: 1e-6, rtol: 1e-5 });
    });
  });

  it('rejects dtypes other than float32, int32 and bool, naming the kernel', async () => {
    await withBackend('wasm', () => {
      const indices = { dataId: {}, shape: [1], dtype: 'int32' as const };
      expect(() =>
        wasmOneHot({ inputs: { indices }, backend: tf.backend(), attrs: { depth: 2, onValue: 1, offValue: 0, dtype: 'string' } }),
      ).toThrow("OneHot: attribute 'dtype' must be float32, int32 or bool on wasm, got string");
    });
  });
});
