import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { seededNormals, expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from '../testing.js';
import { registerKernelFixes, withStockKernels } from './index.js';
import { cpuUnsortedSegmentSum, unsortedSegmentSumGradConfig, wasmUnsortedSegmentSum } from './segment-sum.js';

const BACKENDS = ['cpu', 'wasm'] as const;


/** A plain-loop segment sum: rows of `x` (`[N, D]` flattened) added into `numSegments` rows. */
function referenceSegmentSum(x: ArrayLike<number>, ids: readonly number[], numSegments: number, rowSize: number): number[] {
  const out = new Array<number>(numSegments * rowSize).fill(0);
  ids.forEach((segment, row) => {
    if (segment < 0 || segment >= numSegments) return;
    for (let j = 0; j < rowSize; j++) out[segment * rowSize + j] = (out[segment * rowSize + j] as number) + (x[row * rowSize + j] as number);
  });
  return out;
}

interface SegmentCase {
  readonly name: string;
  readonly xShape: readonly number[];
  /** Segment ids, flattened; their shape is `xShape.slice(0, idsRank)`. */
  readonly ids: readonly number[];
  readonly idsRank: number;
  readonly numSegments: number;
  /** The stock cpu kernel gets this case right (it sums over axis 0 only, and ignores no ids it should keep). */
  readonly stockCpuAgrees: boolean;
}

const CASES: readonly SegmentCase[] = [
  { name: 'repeated segments', xShape: [6, 3], ids: [0, 2, 0, 1, 2, 0], idsRank: 1, numSegments: 3, stockCpuAgrees: true },
  { name: 'empty segments', xShape: [4, 2], ids: [4, 0, 4, 4], idsRank: 1, numSegments: 6, stockCpuAgrees: true },
  { name: 'out-of-range ids are ignored', xShape: [5, 2], ids: [0, -1, 3, 1, 7], idsRank: 1, numSegments: 3, stockCpuAgrees: true },
  { name: 'rank-1 x', xShape: [5], ids: [1, 1, 0, 2, 1], idsRank: 1, numSegments: 3, stockCpuAgrees: true },
  { name: 'rank-3 x', xShape: [4, 2, 3], ids: [1, 0, 1, 1], idsRank: 1, numSegments: 2, stockCpuAgrees: true },
  { name: 'rank-2 segment ids', xShape: [2, 3, 2], ids: [0, 1, 0, 2, 2, 0], idsRank: 2, numSegments: 3, stockCpuAgrees: false },
  { name: 'no rows', xShape: [0, 3], ids: [], idsRank: 1, numSegments: 2, stockCpuAgrees: false },
  { name: 'zero segments', xShape: [3, 2], ids: [0, 1, 0], idsRank: 1, numSegments: 0, stockCpuAgrees: false },
];

/** The ids as a tensor; typed Tensor1D because tfjs's op signature says so, though the kernel takes any prefix rank. */
function segmentIds(c: SegmentCase, idsShape: number[]): tf.Tensor1D {
  return tf.tensor(c.ids, idsShape, 'int32') as unknown as tf.Tensor1D;
}

function inputs(c: SegmentCase, seed: number): { x: Float32Array; idsShape: number[]; rowSize: number } {
  const size = c.xShape.reduce((p, d) => p * d, 1);
  const idsShape = c.xShape.slice(0, c.idsRank);
  const rowSize = c.xShape.slice(c.idsRank).reduce((p, d) => p * d, 1);
  return { x: seededNormals(size, seed), idsShape, rowSize };
}

beforeAll(() => {
  registerKernelFixes('cpu');
  registerKernelFixes('wasm');
});

describe('UnsortedSegmentSum fix', () => {
  it('is the registered kernel on cpu and wasm, and its gradient is the kit\'s', () => {
    expect(tf.getKernel(tf.UnsortedSegmentSum, 'cpu').kernelFunc).toBe(cpuUnsortedSegmentSum);
    expect(tf.getKernel(tf.UnsortedSegmentSum, 'wasm').kernelFunc).toBe(wasmUnsortedSegmentSum);
    expect(tf.getGradient(tf.UnsortedSegmentSum).gradFunc).toBe(unsortedSegmentSumGradConfig.gradFunc);
  });

  it('stock wasm has no UnsortedSegmentSum kernel', async () => {
    await withStockKernels(() =>
      withBackend('wasm', async () => {
        expect(tf.getKernel(tf.UnsortedSegmentSum, 'wasm')).toBeUndefined();
        await expectNoLeak(() => {
          expect(() =>
            tf.tidy(() => tf.unsortedSegmentSum(tf.ones([3, 2]), tf.tensor1d([0, 1, 0], 'int32'), 2)),
          ).toThrow("Kernel 'UnsortedSegmentSum' not registered for backend 'wasm'");
        });
      }),
    );
  });

  describe.each(BACKENDS)('on %s', (backend) => {
    it.each(CASES)('$name: values match a plain loop (and stock cpu)', async (c) => {
      const { x, idsShape, rowSize } = inputs(c, 1);
      const compute = (): tf.Tensor =>
        tf.unsortedSegmentSum(tf.tensor(x, [...c.xShape]), segmentIds(c, idsShape), c.numSegments);
      await expectNoLeak(async () => {
        const [actual] = (await valuesOn(backend, compute)) as [TensorValues];
        const expected: TensorValues = {
          shape: [c.numSegments, ...c.xShape.slice(c.idsRank)],
          dtype: 'float32',
          values: referenceSegmentSum(x, c.ids, c.numSegments, rowSize),
        };
        expect(actual.dtype).toBe('float32');
        expectValuesClose(actual, expected);
        if (c.stockCpuAgrees) {
          const [stock] = (await withStockKernels(() => valuesOn('cpu', compute))) as [TensorValues];
          expectValuesClose(actual, stock);
        }
      });
    });

    it.each(CASES)('$name: gradient is dy gathered at each in-range id, 0 elsewhere', async (c) => {
      const { x, idsShape, rowSize } = inputs(c, 2);
      const outSize = c.numSegments * rowSize;
      const weights = seededNormals(outSize, 3);
      const outShape = [c.numSegments, ...c.xShape.slice(c.idsRank)];
      const gradient = (): tf.Tensor =>
        tf.grad((t: tf.Tensor) =>
          tf.sum(tf.mul(tf.unsortedSegmentSum(t, segmentIds(c, idsShape), c.numSegments), tf.tensor(weights, outShape))),
        )(tf.tensor(x, [...c.xShape]));
      await expectNoLeak(async () => {
        const [actual] = (await valuesOn(backend, gradient)) as [TensorValues];
        const expected = c.ids.flatMap((segment) =>
          Array.from({ length: rowSize }, (_, j) =>
            segment >= 0 && segment < c.numSegments ? (weights[segment * rowSize + j] as number) : 0,
          ),
        );
        expectValuesClose(actual, { shape: [...c.xShape], dtype: 'float32', values: expected });
      });
    });
  });

  it('keeps int32 values int32', async () => {
    for (const backend of BACKENDS) {
      await expectNoLeak(async () => {
        const [actual] = (await valuesOn(backend, () =>
          tf.unsortedSegmentSum(tf.tensor1d([1, 2, 3, 4], 'int32'), tf.tensor1d([1, 0, 1, 5], 'int32'), 2),
        )) as [TensorValues];
        expect(actual.dtype).toBe('int32');
        expectValuesClose(actual, { shape: [2], dtype: 'int32', values: [2, 4] });
      });
    }
  });

  it('the stock gradient throws on ids >= numSegments; the kit\'s gives them 0', async () => {
    const gradient = (): tf.Tensor =>
      tf.grad((t: tf.Tensor) => tf.sum(tf.unsortedSegmentSum(t, tf.tensor1d([0, 5, 1], 'int32'), 2)))(tf.ones([3, 2]));
    await expectNoLeak(async () => {
      const [fixed] = (await valuesOn('cpu', gradient)) as [TensorValues];
      expectValuesClose(fixed, { shape: [3, 2], dtype: 'float32', values: [1, 1, 0, 0, 1, 1] });
    });
    // When the backward pass throws, tfjs never releases the tensors saved for it: here the segment
    // ids (the only op on the tape, given an explicit dy).
    const stockGradient = (): tf.Tensor =>
      tf.grad((t: tf.Tensor) => tf.unsortedSegmentSum(t, tf.tensor1d([0, 5, 1], 'int32'), 2))(tf.ones([3, 2]), tf.ones([2, 2]));
    await expectNoLeak(async () => {
      await withStockKernels(async () => {
        await expect(valuesOn('cpu', stockGradient)).rejects.toThrow('GatherV2: the index value 5 is not in [0, 1]');
      });
    }, 1);
  });

  it('names the op, the argument and both shapes when segmentIds is not a prefix of x', async () => {
    for (const backend of BACKENDS) {
      await expectNoLeak(() =>
        withBackend(backend, () => {
          expect(() =>
            tf.tidy(() => tf.unsortedSegmentSum(tf.ones([4, 2]), tf.tensor1d([0, 1, 0], 'int32'), 2)),
          ).toThrow("UnsortedSegmentSum: argument 'segmentIds' must have shape [4] (a prefix of x's shape [4, 2]), got [3]");
        }),
      );
    }
  });
});

describe('gather gradient (UnsortedSegmentSum in the backward pass)', () => {
  const params = seededNormals(5 * 3, 4);
  const indices = [4, 0, 4, 2, 4, 1]; // 4 three times, 3 never
  const weights = seededNormals(indices.length * 3, 5);
  const gradient = (): tf.Tensor =>
    tf.grad((p: tf.Tensor) => tf.sum(tf.mul(tf.gather(p, tf.tensor1d(indices, 'int32')), tf.tensor(weights, [indices.length, 3]))))(
      tf.tensor(params, [5, 3]),
    );

  it('works on wasm and sums duplicate indices, as on cpu', async () => {
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', gradient)) as [TensorValues];
      const [cpu] = (await withStockKernels(() => valuesOn('cpu', gradient))) as [TensorValues];
      const expected = referenceSegmentSum(weights, indices, 5, 3);
      expectValuesClose(wasm, { shape: [5, 3], dtype: 'float32', values: expected });
      expectValuesClose(wasm, cpu);
    });
  });

  it('throws on stock wasm', async () => {
    const gatherOnly = (): tf.Tensor =>
      tf.grad((p: tf.Tensor) => tf.gather(p, tf.tensor1d(indices, 'int32')))(tf.tensor(params, [5, 3]), tf.ones([indices.length, 3]));
    // tfjs never releases the tensors saved for a backward pass that throws: gather's params and indices.
    await expectNoLeak(async () => {
      await withStockKernels(async () => {
        await expect(valuesOn('wasm', gatherOnly)).rejects.toThrow("Kernel 'UnsortedSegmentSum' not registered for backend 'wasm'");
      });
    }, 2);
  });
});
