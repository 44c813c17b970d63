import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { seededNormals, expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from '../testing.js';
import { registerKernelFixes, withStockKernels } from './index.js';
import { sliceInto, wasmConcat, wasmSlice, wasmSplitV } from './wasm-slice.js';

beforeAll(() => {
  registerKernelFixes('wasm');
});


const sizeOf = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);

interface SliceCase {
  readonly name: string;
  readonly shape: readonly number[];
  readonly begin: number[];
  readonly size: number[];
}

const SLICES: readonly SliceCase[] = [
  { name: '1-D', shape: [10], begin: [3], size: [4] },
  { name: 'rows (one run)', shape: [6, 5], begin: [2, 0], size: [3, 5] },
  { name: 'columns', shape: [6, 40], begin: [1, 7], size: [4, 20] },
  { name: 'short columns', shape: [6, 5], begin: [0, 1], size: [6, 2] },
  { name: '3-D middle block', shape: [3, 4, 5], begin: [1, 1, 0], size: [2, 2, 5] },
  { name: '3-D inner block', shape: [3, 4, 5], begin: [0, 1, 2], size: [3, 3, 2] },
  { name: 'size -1 to the end', shape: [4, 6], begin: [1, 2], size: [-1, -1] },
  { name: 'rank 5', shape: [2, 3, 2, 3, 4], begin: [1, 0, 1, 1, 1], size: [1, 3, 1, 2, 2] },
  { name: 'empty', shape: [4, 6], begin: [1, 2], size: [0, 3] },
];

describe('wasm Slice fix', () => {
  it('is the registered wasm kernel (and SplitV too)', () => {
    expect(tf.getKernel(tf.Slice, 'wasm').kernelFunc).toBe(wasmSlice);
    expect(tf.getKernel(tf.SplitV, 'wasm').kernelFunc).toBe(wasmSplitV);
  });

  it.each(SLICES.flatMap((c) => (['float32', 'int32', 'bool'] as const).map((dtype) => ({ ...c, dtype }))))(
    '$name, $dtype: matches cpu and the stock wasm kernel',
    async (c) => {
      const values = seededNormals(sizeOf(c.shape), 1).map((v) => (c.dtype === 'float32' ? v : Math.round(v * 3)));
      const compute = (): tf.Tensor => tf.slice(tf.tensor(values, [...c.shape], c.dtype), c.begin, c.size);
      await expectNoLeak(async () => {
        const [fixed] = (await valuesOn('wasm', compute)) as [TensorValues];
        const [cpu] = (await valuesOn('cpu', compute)) as [TensorValues];
        const [stock] = (await withStockKernels(() => valuesOn('wasm', compute))) as [TensorValues];
        expect(fixed.dtype).toBe(c.dtype);
        expectValuesClose(fixed, cpu, { atol: 0, rtol: 0 });
        expectValuesClose(fixed, stock, { atol: 0, rtol: 0 });
      });
    },
  );

  it('throws the op error for a slice out of range', async () => {
    await withBackend('wasm', () => {
      expect(() => tf.tidy(() => tf.slice(tf.zeros([3, 4]), [2, 0], [2, 4]))).toThrow(/slice/i);
    });
  });

  it('sliceInto reads only the slice (a plain-array check against hand values)', () => {
    const heap = Float32Array.from({ length: 40 }, (_, i) => (i < 24 ? i : -1)); // x [2, 3, 4] at 0, output at 30
    sliceInto(heap, 0, 30, [2, 3, 4], [1, 1, 1], [1, 2, 2]);
    expect(Array.from(heap.subarray(30, 34))).toEqual([17, 18, 21, 22]);
    expect(Array.from(heap.subarray(34))).toEqual([-1, -1, -1, -1, -1, -1]); // nothing past the output
    // long runs (copyWithin) as well as short ones (a loop)
    const wide = Float32Array.from({ length: 2 * 20 + 20 }, (_, i) => i); // x [2, 20] at 0, output at 40
    sliceInto(wide, 0, 40, [2, 20], [0, 5], [2, 10]);
    expect(Array.from(wide.subarray(40, 60))).toEqual([5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34]);
  });
});

describe('wasm SplitV fix', () => {
  const SPLITS = [
    { name: 'SwiGLU halves along the last axis', shape: [7, 10], splits: 2 as number | number[], axis: -1 },
    { name: 'sizes with -1 along axis 0', shape: [9, 3], splits: [2, -1, 3], axis: 0 },
    { name: 'middle axis of 3-D', shape: [2, 6, 4], splits: [1, 2, 3], axis: 1 },
    { name: 'a zero-sized piece', shape: [4, 6], splits: [0, 6], axis: 1 },
  ];

  it.each(SPLITS)('$name: matches cpu and the stock wasm kernel', async (c) => {
    const values = seededNormals(sizeOf(c.shape), 2);
    const compute = (): tf.Tensor[] => tf.split(tf.tensor(values, c.shape), c.splits, c.axis);
    await expectNoLeak(async () => {
      const fixed = await valuesOn('wasm', compute);
      const cpu = await valuesOn('cpu', compute);
      const stock = await withStockKernels(() => valuesOn('wasm', compute));
      expect(fixed.length).toBe(cpu.length);
      fixed.forEach((piece, i) => {
        expectValuesClose(piece, cpu[i] as TensorValues, { atol: 0, rtol: 0 });
        expectValuesClose(piece, stock[i] as TensorValues, { atol: 0, rtol: 0 });
      });
    });
  });

  it('gradients through split and slice match cpu', async () => {
    const values = seededNormals(6 * 8, 3);
    const weights = seededNormals(6 * 4, 4);
    const gradient = (): tf.Tensor =>
      tf.grad((x: tf.Tensor) => {
        const [a, b] = tf.split(x, 2, 1) as [tf.Tensor, tf.Tensor];
        const sliced = tf.slice(x, [1, 2], [4, 4]);
        return tf.sum(tf.mul(tf.add(tf.mul(a, tf.sigmoid(b)), tf.pad(sliced, [[1, 1], [0, 0]])), tf.tensor2d(weights, [6, 4])));
      })(tf.tensor2d(values, [6, 8]));
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', gradient)) as [TensorValues];
      const [cpu] = (await valuesOn('cpu', gradient)) as [TensorValues];
      expectValuesClose(wasm, cpu, { atol: 1e-5, rtol: 1e-5 });
    });
  });
});

describe('wasm Concat fix', () => {
  it('is the registered wasm kernel', () => {
    expect(tf.getKernel(tf.Concat, 'wasm').kernelFunc).toBe(wasmConcat);
  });

  const CONCATS = [
    { name: 'rotary halves along a short last axis', shapes: [[2, 3, 16], [2, 3, 16]], axis: -1 },
    { name: 'long rows along axis 0', shapes: [[3, 100], [5, 100], [1, 100]], axis: 0 },
    { name: 'mixed widths along axis 1', shapes: [[4, 70], [4, 3], [4, 0], [4, 65]], axis: 1 },
    { name: 'one non-empty input', shapes: [[0, 5], [3, 5]], axis: 0 },
    { name: 'all empty', shapes: [[0, 5], [0, 5]], axis: 0 },
    { name: 'rank 1', shapes: [[3], [4]], axis: 0 },
  ];

  it.each(CONCATS.flatMap((c) => (['float32', 'int32', 'bool'] as const).map((dtype) => ({ ...c, dtype }))))(
    '$name, $dtype: matches cpu and the stock kernel',
    async (c) => {
      const inputs = c.shapes.map((shape, i) => Array.from(seededNormals(sizeOf(shape), 10 + i)).map((v) => (c.dtype === 'float32' ? v : v > 0 ? 1 : 0)));
      const compute = (): tf.Tensor => tf.concat(c.shapes.map((shape, i) => tf.tensor(inputs[i] as number[], shape, c.dtype)), c.axis);
      await expectNoLeak(async () => {
        const [fixed] = (await valuesOn('wasm', compute)) as [TensorValues];
        const [cpu] = (await valuesOn('cpu', compute)) as [TensorValues];
        const [stock] = (await withStockKernels(() => valuesOn('wasm', compute))) as [TensorValues];
        expect(fixed.dtype).toBe(c.dtype);
        expectValuesClose(fixed, cpu, { atol: 0, rtol: 0 });
        expectValuesClose(fixed, stock, { atol: 0, rtol: 0 });
      });
    },
  );
});
