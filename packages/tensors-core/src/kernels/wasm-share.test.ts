import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from '../testing.js';
import { registerKernelFixes, withStockKernels } from './index.js';
import { wasmCast, wasmIdentity, wasmTranspose } from './wasm-share.js';

beforeAll(() => {
  registerKernelFixes('wasm');
});

/** The byte offset of a tensor's data in the wasm heap. */
function memoryOffset(t: tf.Tensor): number {
  return (tf.backend() as BackendWasm).dataIdMap.get(t.dataId)?.memoryOffset ?? -1;
}

describe('wasm Identity fix', () => {
  it('is the registered wasm kernel (and Cast, Transpose)', () => {
    expect(tf.getKernel(tf.Identity, 'wasm').kernelFunc).toBe(wasmIdentity);
    expect(tf.getKernel(tf.Cast, 'wasm').kernelFunc).toBe(wasmCast);
    expect(tf.getKernel(tf.Transpose, 'wasm').kernelFunc).toBe(wasmTranspose);
  });

  it('a clone shares the data (no copy), and each side can be disposed first', async () => {
    await withBackend('wasm', async () => {
      await expectNoLeak(async () => {
        const x = tf.tensor2d([[1, 2], [3, 4]]);
        const copy = tf.clone(x);
        expect(memoryOffset(copy)).toBe(memoryOffset(x));
        const stockCopy = await withStockKernels(() => tf.clone(x));
        expect(memoryOffset(stockCopy)).not.toBe(memoryOffset(x)); // the stock kernel copied
        x.dispose();
        expect(Array.from(await copy.data())).toEqual([1, 2, 3, 4]);
        const other = tf.clone(copy);
        copy.dispose();
        expect(Array.from(await other.data())).toEqual([1, 2, 3, 4]);
        tf.dispose([other, stockCopy]);
      });
    });
  });

  it('int32 and bool clones keep their dtype and values', async () => {
    await expectNoLeak(async () => {
      const [ints, flags] = await valuesOn('wasm', () => [tf.clone(tf.tensor1d([1, -2, 3], 'int32')), tf.clone(tf.tensor1d([1, 0, 1], 'bool'))]);
      expect(ints).toMatchObject({ dtype: 'int32', shape: [3] });
      expect(Array.from((ints as TensorValues).values)).toEqual([1, -2, 3]);
      expect(Array.from((flags as TensorValues).values)).toEqual([1, 0, 1]);
    });
  });

  it('gradients that save tensors for the backward pass (matmul, mul, a variable updated between steps) match cpu', async () => {
    const xs = [1, 2, 3, 4, 5, 6];
    const run = (): tf.Tensor[] => {
      const w = tf.variable(tf.tensor2d([0.5, -1, 2, 0.25, 1, -0.5], [3, 2]));
      const loss = (): tf.Scalar => tf.sum(tf.mul(tf.matMul(tf.tensor2d(xs, [2, 3]), w), tf.sigmoid(w.sum()))) as tf.Scalar;
      const first = tf.variableGrads(loss, [w]);
      w.assign(tf.sub(w, tf.mul(first.grads[w.name] as tf.Tensor, 0.1)));
      const second = tf.variableGrads(loss, [w]);
      const out = [first.value, first.grads[w.name] as tf.Tensor, second.value, second.grads[w.name] as tf.Tensor, w.clone()];
      w.dispose();
      return out;
    };
    await expectNoLeak(async () => {
      const wasm = await valuesOn('wasm', run);
      const cpu = await valuesOn('cpu', run);
      wasm.forEach((v, i) => expectValuesClose(v, cpu[i] as TensorValues, { atol: 1e-5, rtol: 1e-5 }));
    });
  });
});

describe('wasm Cast and Transpose fixes', () => {
  it('a same-dtype cast shares the data; casts to bool give x != 0; other casts convert as the stock kernel does', async () => {
    await withBackend('wasm', async () => {
      await expectNoLeak(async () => {
        const x = tf.tensor1d([1.5, -2.7, 3]);
        const same = tf.cast(x, 'float32');
        expect(memoryOffset(same)).toBe(memoryOffset(x));
        const ints = tf.cast(x, 'int32');
        const stockInts = await withStockKernels(() => tf.cast(x, 'int32'));
        expect(ints.dtype).toBe('int32');
        expect(Array.from(await ints.data())).toEqual(Array.from(await stockInts.data()));
        const flags = tf.tidy(() => tf.cast(tf.tensor1d([0, 2, -1, 256], 'int32'), 'bool'));
        expect(Array.from(await flags.data())).toEqual([0, 1, 1, 1]);
        const floatFlags = tf.tidy(() => tf.cast(tf.tensor1d([0, 0.5, -3, NaN]), 'bool'));
        expect(Array.from(await floatFlags.data())).toEqual([0, 1, 1, 1]);
        // the stock kernel kept the low byte of each value
        const stockFlags = await withStockKernels(() => tf.tidy(() => tf.cast(tf.tensor1d([2, 256], 'int32'), 'bool')));
        expect(Array.from(await stockFlags.data())).toEqual([2, 0]);
        tf.dispose([x, same, ints, stockInts, flags, floatFlags, stockFlags]);
      });
    });
  });

  it.each([
    { shape: [4, 3], perm: [0, 1], shares: true },
    { shape: [1, 4, 3], perm: [1, 0, 2], shares: true },
    { shape: [2, 1, 3], perm: [1, 0, 2], shares: true },
    { shape: [4, 3], perm: [1, 0], shares: false },
    { shape: [2, 3, 4], perm: [0, 2, 1], shares: false },
    { shape: [2, 1, 3, 1], perm: [3, 0, 1, 2], shares: true },
    // real transposes of every kind the native pass handles (runs of the kept trailing axes, or single elements)
    { shape: [2, 5, 3, 4], perm: [0, 2, 1, 3], shares: false },
    { shape: [3, 4, 5, 2], perm: [2, 0, 3, 1], shares: false },
    { shape: [2, 3, 4, 5], perm: [3, 2, 1, 0], shares: false },
    { shape: [2, 3, 2, 2, 3], perm: [1, 0, 2, 3, 4], shares: false },
    { shape: [3, 0, 2], perm: [2, 1, 0], shares: false },
  ])('transpose $shape by $perm: matches cpu and the stock kernel (shares data: $shares)', async ({ shape, perm, shares }) => {
    const values = Array.from({ length: shape.reduce((p, d) => p * d, 1) }, (_, i) => i * 1.5 - 3);
    await expectNoLeak(async () => {
      await withBackend('wasm', async () => {
        const ints = tf.tensor(values.map(Math.round), shape, 'int32');
        const transposedInts = tf.transpose(ints, perm);
        const stockInts = await withStockKernels(() => tf.transpose(ints, perm));
        expect(transposedInts.dtype).toBe('int32');
        expect(Array.from(await transposedInts.data())).toEqual(Array.from(await stockInts.data()));
        tf.dispose([ints, transposedInts, stockInts]);
        const x = tf.tensor(values, shape);
        const out = tf.transpose(x, perm);
        expect(memoryOffset(out) === memoryOffset(x)).toBe(shares);
        const stock = await withStockKernels(() => tf.transpose(x, perm));
        expect(out.shape).toEqual(stock.shape);
        expect(Array.from(await out.data())).toEqual(Array.from(await stock.data()));
        tf.dispose([x, out, stock]);
      });
      const [cpu] = (await valuesOn('cpu', () => tf.transpose(tf.tensor(values, shape), perm))) as [TensorValues];
      const [wasm] = (await valuesOn('wasm', () => tf.transpose(tf.tensor(values, shape), perm))) as [TensorValues];
      expectValuesClose(wasm, cpu, { atol: 0, rtol: 0 });
    });
  });
});
