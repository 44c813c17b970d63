import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { seededNormals, expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from '../testing.js';
import { cpuGather, wasmGather } from './gather.js';
import { registerKernelFixes, withStockKernels } from './index.js';

const BACKENDS = ['cpu', 'wasm'] as const;


interface GatherCase {
  readonly name: string;
  readonly xShape: readonly number[];
  readonly indices: readonly number[];
  readonly indicesShape: readonly number[];
  readonly axis: number;
  readonly batchDims: number;
  readonly dtype: 'float32' | 'int32' | 'bool';
}

const CASES: readonly GatherCase[] = [
  { name: 'rows (MoE dispatch), duplicates', xShape: [6, 20], indices: [5, 0, 5, 2], indicesShape: [4], axis: 0, batchDims: 0, dtype: 'float32' },
  { name: 'short rows', xShape: [6, 3], indices: [1, 1, 4], indicesShape: [3], axis: 0, batchDims: 0, dtype: 'float32' },
  { name: 'rank-1 x (gates)', xShape: [8], indices: [7, 0, 3, 3], indicesShape: [4], axis: 0, batchDims: 0, dtype: 'float32' },
  { name: 'axis 1', xShape: [3, 5, 4], indices: [4, 0], indicesShape: [2], axis: 1, batchDims: 0, dtype: 'float32' },
  { name: 'last axis', xShape: [3, 5], indices: [2, 2, 1], indicesShape: [3], axis: -1, batchDims: 0, dtype: 'float32' },
  { name: 'rank-2 indices', xShape: [5, 17], indices: [0, 1, 4, 3, 3, 2], indicesShape: [2, 3], axis: 0, batchDims: 0, dtype: 'float32' },
  { name: 'batchDims 1', xShape: [2, 4, 3], indices: [3, 0, 1, 1], indicesShape: [2, 2], axis: 1, batchDims: 1, dtype: 'float32' },
  { name: 'int32', xShape: [4, 2], indices: [3, 1], indicesShape: [2], axis: 0, batchDims: 0, dtype: 'int32' },
  { name: 'bool', xShape: [4, 2], indices: [0, 3], indicesShape: [2], axis: 0, batchDims: 0, dtype: 'bool' },
  { name: 'no indices', xShape: [4, 2], indices: [], indicesShape: [0], axis: 0, batchDims: 0, dtype: 'float32' },
];

function xValues(c: GatherCase): number[] {
  const size = c.xShape.reduce((p, d) => p * d, 1);
  const values = Array.from(seededNormals(size, 1));
  if (c.dtype === 'int32') return values.map((v) => Math.round(v * 10));
  if (c.dtype === 'bool') return values.map((v) => (v > 0 ? 1 : 0));
  return values;
}

beforeAll(() => {
  registerKernelFixes('cpu');
  registerKernelFixes('wasm');
});

describe('GatherV2 fix', () => {
  it('is the registered kernel on cpu and wasm', () => {
    expect(tf.getKernel(tf.GatherV2, 'cpu').kernelFunc).toBe(cpuGather);
    expect(tf.getKernel(tf.GatherV2, 'wasm').kernelFunc).toBe(wasmGather);
  });

  describe.each(BACKENDS)('on %s', (backend) => {
    it.each(CASES)('$name: values and dtype match stock cpu', async (c) => {
      const values = xValues(c);
      const compute = (): tf.Tensor =>
        tf.gather(tf.tensor(values, [...c.xShape], c.dtype), tf.tensor(c.indices, [...c.indicesShape], 'int32'), c.axis, c.batchDims);
      await expectNoLeak(async () => {
        const [actual] = (await valuesOn(backend, compute)) as [TensorValues];
        const [stock] = (await withStockKernels(() => valuesOn('cpu', compute))) as [TensorValues];
        expect(actual.dtype).toBe(c.dtype);
        expectValuesClose(actual, stock, { atol: 0, rtol: 0 });
      });
    });

    it('throws the stock error for an out-of-range index', async () => {
      await expectNoLeak(() =>
        withBackend(backend, () => {
          expect(() => tf.tidy(() => tf.gather(tf.ones([3, 2]), tf.tensor1d([0, 3], 'int32')))).toThrow(
            'GatherV2: the index value 3 is not in [0, 2]',
          );
          expect(() => tf.tidy(() => tf.gather(tf.ones([3, 2]), tf.tensor1d([-1], 'int32')))).toThrow(
            'GatherV2: the index value -1 is not in [0, 2]',
          );
        }),
      );
    });

    it('gradient matches stock cpu (duplicates summed)', async () => {
      const params = seededNormals(6 * 20, 2);
      const dy = seededNormals(4 * 20, 3);
      const gradient = (): tf.Tensor =>
        tf.grad((p: tf.Tensor) => tf.gather(p, tf.tensor1d([5, 0, 5, 2], 'int32')))(tf.tensor(params, [6, 20]), tf.tensor(dy, [4, 20]));
      await expectNoLeak(async () => {
        const [actual] = (await valuesOn(backend, gradient)) as [TensorValues];
        const [stock] = (await withStockKernels(() => valuesOn('cpu', gradient))) as [TensorValues];
        expectValuesClose(actual, stock);
      });
    });
  });
});
