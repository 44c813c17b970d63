import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { seededNormals, checkGradients, expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from '../testing.js';
import { batchMatMulGradConfig, gatherNdGradConfig, topKGradConfig } from './gradients.js';
import { registerKernelFixes, withStockKernels } from './index.js';

const BACKENDS = ['cpu', 'wasm'] as const;


beforeAll(() => {
  registerKernelFixes('cpu');
  registerKernelFixes('wasm');
});

it('the registered gradients are the kit\'s', () => {
  expect(tf.getGradient(tf.TopK).gradFunc).toBe(topKGradConfig.gradFunc);
  expect(tf.getGradient(tf.GatherNd).gradFunc).toBe(gatherNdGradConfig.gradFunc);
  expect(tf.getGradient(tf.BatchMatMul).gradFunc).toBe(batchMatMulGradConfig.gradFunc);
});

describe('TopK gradient', () => {
  interface TopKCase {
    readonly name: string;
    readonly x: readonly number[];
    readonly shape: readonly number[];
    readonly k: number;
    readonly sorted: boolean;
  }
  const CASES: readonly TopKCase[] = [
    { name: 'rank 1', x: [0.5, -1, 3, 2, 0], shape: [5], k: 2, sorted: true },
    { name: 'ties (lowest index wins)', x: [1, 3, 3, 2, 3, 5, 5, 5, 5, 5], shape: [2, 5], k: 3, sorted: true },
    { name: 'ties, unsorted', x: [1, 3, 3, 2, 3, 5, 5, 5, 5, 5], shape: [2, 5], k: 3, sorted: false },
    { name: 'rank 3, k = L', x: Array.from(seededNormals(2 * 3 * 4, 1)), shape: [2, 3, 4], k: 4, sorted: true },
    { name: 'k = 0', x: [1, 2, 3], shape: [3], k: 0, sorted: true },
  ];

  describe.each(BACKENDS)('on %s', (backend) => {
    it.each(CASES)('$name: dy goes back to the chosen positions', async (c) => {
      const rows = c.x.length / (c.shape[c.shape.length - 1] as number);
      const dValues = seededNormals(rows * c.k, 2);
      const dShape = [...c.shape.slice(0, -1), c.k];
      await expectNoLeak(async () => {
        const [gradient, indices] = (await valuesOn(backend, () => {
          const x = tf.tensor(c.x, [...c.shape]);
          const g = tf.grad((t: tf.Tensor) => tf.topk(t, c.k, c.sorted).values)(x, tf.tensor(dValues, dShape));
          return [g, tf.topk(x, c.k, c.sorted).indices];
        })) as [TensorValues, TensorValues];
        // Reference: scatter dy into zeros at the indices the forward pass chose.
        const length = c.shape[c.shape.length - 1] as number;
        const expected = new Array<number>(c.x.length).fill(0);
        for (let i = 0; i < rows * c.k; i++) {
          const row = Math.floor(i / c.k);
          const position = row * length + (indices.values[i] as number);
          expected[position] = (expected[position] as number) + (dValues[i] as number);
        }
        expectValuesClose(gradient, { shape: [...c.shape], dtype: 'float32', values: expected });
        // The same positions as on cpu (both break ties towards the lowest index).
        const [cpuGradient] = (await valuesOn('cpu', () =>
          tf.grad((t: tf.Tensor) => tf.topk(t, c.k, c.sorted).values)(tf.tensor(c.x, [...c.shape]), tf.tensor(dValues, dShape)),
        )) as [TensorValues];
        expectValuesClose(gradient, cpuGradient);
      });
    });

    it('matches finite differences for a smooth loss of distinct values', async () => {
      const values = seededNormals(3 * 6, 3);
      await expectNoLeak(() =>
        withBackend(backend, () =>
          tf.tidy(() =>
            checkGradients((x) => tf.sum(tf.square(tf.topk(x, 2).values)), [tf.tensor(values, [3, 6])], { epsilon: 1e-3 }),
          ),
        ),
      );
    });
  });

  it('stock tfjs has no TopK gradient', async () => {
    await expectNoLeak(async () => {
      await withStockKernels(async () => {
        await expect(
          valuesOn('wasm', () => tf.grad((t: tf.Tensor) => tf.topk(t, 1).values)(tf.tensor1d([1, 2]), tf.ones([1]))),
        ).rejects.toThrow('Cannot compute gradient: gradient function not found for TopK');
      });
    });
  });
});

describe('GatherNd gradient', () => {
  interface GatherNdCase {
    readonly name: string;
    readonly paramsShape: readonly number[];
    readonly indices: readonly number[];
    readonly indicesShape: readonly number[];
  }
  const CASES: readonly GatherNdCase[] = [
    // full index: one element each; [1, 2] three times
    { name: 'elements, with duplicates', paramsShape: [3, 4], indices: [1, 2, 0, 0, 1, 2, 2, 3, 1, 2], indicesShape: [5, 2] },
    // partial index: whole rows; row 2 twice
    { name: 'rows, with duplicates', paramsShape: [3, 4], indices: [2, 0, 2], indicesShape: [3, 1] },
    // batch of index pairs into a rank-3 params: slices of length 2
    { name: 'rank-3 params, rank-3 indices', paramsShape: [2, 3, 2], indices: [0, 1, 1, 2, 0, 1, 1, 0], indicesShape: [2, 2, 2] },
  ];

  function referenceGradient(c: GatherNdCase, dy: Float32Array): number[] {
    const depth = c.indicesShape[c.indicesShape.length - 1] as number;
    const count = c.indices.length / depth;
    const sliceSize = c.paramsShape.slice(depth).reduce((p, d) => p * d, 1);
    const strides = c.paramsShape.slice(0, depth).map((_, axis) => c.paramsShape.slice(axis + 1).reduce((p, d) => p * d, 1));
    const out = new Array<number>(c.paramsShape.reduce((p, d) => p * d, 1)).fill(0);
    for (let i = 0; i < count; i++) {
      let offset = 0;
      for (let axis = 0; axis < depth; axis++) offset += (c.indices[i * depth + axis] as number) * (strides[axis] as number);
      for (let j = 0; j < sliceSize; j++) out[offset + j] = (out[offset + j] as number) + (dy[i * sliceSize + j] as number);
    }
    return out;
  }

  describe.each(BACKENDS)('on %s', (backend) => {
    it.each(CASES)('$name: scatterND of dy, duplicates summed', async (c) => {
      const depth = c.indicesShape[c.indicesShape.length - 1] as number;
      const dyShape = [...c.indicesShape.slice(0, -1), ...c.paramsShape.slice(depth)];
      const dy = seededNormals(dyShape.reduce((p, d) => p * d, 1), 4);
      const params = seededNormals(c.paramsShape.reduce((p, d) => p * d, 1), 5);
      await expectNoLeak(async () => {
        const [gradient] = (await valuesOn(backend, () =>
          tf.grad((p: tf.Tensor) => tf.gatherND(p, tf.tensor(c.indices, [...c.indicesShape], 'int32')))(
            tf.tensor(params, [...c.paramsShape]),
            tf.tensor(dy, dyShape),
          ),
        )) as [TensorValues];
        expectValuesClose(gradient, { shape: [...c.paramsShape], dtype: 'float32', values: referenceGradient(c, dy) });
      });
    });
  });

  it('stock tfjs has no GatherNd gradient', async () => {
    await expectNoLeak(async () => {
      await withStockKernels(async () => {
        await expect(
          valuesOn('wasm', () =>
            tf.grad((p: tf.Tensor) => tf.gatherND(p, tf.tensor2d([[0], [0]], [2, 1], 'int32')))(tf.ones([2, 2]), tf.ones([2, 2])),
          ),
        ).rejects.toThrow('Cannot compute gradient: gradient function not found for GatherNd');
      });
    });
  });
});

describe('BatchMatMul gradient with broadcast batch dims', () => {
  const CASES = [
    { name: 'batched x times a 2-D weight', a: [3, 5, 7], b: [7, 4] },
    { name: 'a 2-D x times a batched weight', a: [5, 7], b: [3, 7, 4] },
    { name: 'size-1 batch dims', a: [3, 1, 5, 7], b: [1, 1, 7, 4] },
  ];

  describe.each(BACKENDS)('on %s', (backend) => {
    it.each(CASES)('$name: matches finite differences', async (c) => {
      const a = seededNormals(c.a.reduce((p, d) => p * d, 1), 6);
      const b = seededNormals(c.b.reduce((p, d) => p * d, 1), 7);
      await expectNoLeak(() =>
        withBackend(backend, () =>
          tf.tidy(() => checkGradients((x, w) => tf.sum(tf.square(tf.matMul(x, w))), [tf.tensor(a, c.a), tf.tensor(b, c.b)])),
        ),
      );
    });

    it.each(CASES)('$name: equals the gradient of the explicitly tiled product', async (c) => {
      const a = seededNormals(c.a.reduce((p, d) => p * d, 1), 8);
      const b = seededNormals(c.b.reduce((p, d) => p * d, 1), 9);
      // Reference: broadcast both operands with tf.broadcastTo first (no broadcasting inside matMul).
      const outer = tf.broadcast_util.assertAndGetBroadcastShape(c.a.slice(0, -2), c.b.slice(0, -2));
      const loss = (x: tf.Tensor, w: tf.Tensor, tile: boolean): tf.Scalar =>
        tf.sum(
          tf.square(
            tile
              ? tf.matMul(tf.broadcastTo(x, [...outer, ...c.a.slice(-2)]), tf.broadcastTo(w, [...outer, ...c.b.slice(-2)]))
              : tf.matMul(x, w),
          ),
        );
      await expectNoLeak(async () => {
        const actual = await valuesOn(backend, () =>
          tf.grads((x: tf.Tensor, w: tf.Tensor) => loss(x, w, false))([tf.tensor(a, c.a), tf.tensor(b, c.b)]),
        );
        const expected = await valuesOn(backend, () =>
          tf.grads((x: tf.Tensor, w: tf.Tensor) => loss(x, w, true))([tf.tensor(a, c.a), tf.tensor(b, c.b)]),
        );
        expectValuesClose(actual[0] as TensorValues, expected[0] as TensorValues, { atol: 1e-4, rtol: 1e-4 });
        expectValuesClose(actual[1] as TensorValues, expected[1] as TensorValues, { atol: 1e-4, rtol: 1e-4 });
      });
    });
  });

  it('the stock gradient throws for a batched x times a 2-D weight', async () => {
    const gradients = (): tf.Tensor[] =>
      tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.matMul(x, w))([tf.ones([3, 5, 7]), tf.ones([7, 4])], tf.ones([3, 5, 4]));
    // tfjs never releases the tensors saved for a backward pass that throws: matMul's a and b.
    await expectNoLeak(async () => {
      await withStockKernels(async () => {
        await expect(valuesOn('cpu', gradients)).rejects.toThrow(
          "The gradient of input 'b' has shape '3,7,4', which does not match the shape of the input '7,4'",
        );
      });
    }, 2);
  });
});
