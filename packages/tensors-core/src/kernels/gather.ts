/**
 * Fix for `GatherV2` on cpu and wasm: copy whole slices.
 *
 * `tf.gather(x, tokenIds)` picks the rows routed to one expert, so an MoE step runs it once per
 * expert forward, and again (on the gates) per expert backward. The stock kernels work element by
 * element: the wasm one through a strided C++ loop (about 13 ms to gather 256 rows of 256 floats,
 * where copying the rows takes 0.05 ms), the cpu one allocating index arrays for every element.
 *
 * The fix copies each contiguous slice (`x.shape[axis + 1:]`) at once, reading and writing the
 * backends' memory directly: on cpu with one `TypedArray.set` (or a plain loop for short slices), on
 * wasm with one `copyWithin` inside the heap (see `heap.ts`). Semantics are
 * the stock ones: `axis` and `batchDims` as in `tf.gather`, and an index outside `[0, x.shape[axis])`
 * throws the stock error. String tensors go to the stock kernel.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { copyRun, heapSlot, type HeapArray } from './heap.js';
import { requireStockKernel } from './registry.js';

type TensorInfo = tf.TensorInfo;
type NumericArray = Float32Array | Int32Array | Uint8Array;

/** The name of the `GatherV2` kernel fix (cpu and wasm). */
export const GATHER_FIX = 'gather';

/** The flattened view of one gather: `x` as `[batch, outer, dim, slice]`, indices as `[batch, perBatch]`. */
interface GatherLayout {
  readonly batchSize: number;
  readonly outerSize: number;
  readonly dimSize: number;
  readonly sliceSize: number;
  readonly indicesPerBatch: number;
  readonly outputShape: number[];
}

function layoutOf(x: TensorInfo, indices: TensorInfo, attrs: tf.NamedAttrMap | undefined): GatherLayout {
  const axis = tf.util.parseAxisParam((attrs?.axis as number | undefined) ?? 0, x.shape)[0] as number;
  const batchDims = (attrs?.batchDims as number | undefined) ?? 0;
  const info = tf.backend_util.segment_util.collectGatherOpShapeInfo(x, indices, axis, batchDims);
  const indicesSize = indices.shape.reduce((p, d) => p * d, 1);
  return {
    batchSize: info.batchSize,
    outerSize: info.outerSize,
    dimSize: info.dimSize,
    sliceSize: info.sliceSize,
    indicesPerBatch: info.batchSize === 0 ? 0 : indicesSize / info.batchSize,
    outputShape: info.outputShape,
  };
}

function checkIndices(indices: ArrayLike<number>, dimSize: number): void {
  for (let i = 0; i < indices.length; i++) {
    const index = indices[i] as number;
    if (!(index >= 0 && index <= dimSize - 1)) {
      throw new Error(`GatherV2: the index value ${index} is not in [0, ${dimSize - 1}]`);
    }
  }
}

/**
 * The slice-copying gather on plain arrays:
 * `out[b, o, i, :] = x[b, o, indices[b, i], :]` with `x` viewed as `[batch, outer, dim, slice]`.
 *
 * @param out - `[batch·outer·perBatch·slice]`, overwritten
 * @param x - `[batch·outer·dim·slice]`
 * @param indices - `[batch·perBatch]`, each in `[0, dim)` (not checked here)
 * @param layout - the sizes
 */
function gatherInto(out: NumericArray, x: NumericArray, indices: ArrayLike<number>, layout: GatherLayout): void {
  const { batchSize, outerSize, dimSize, sliceSize, indicesPerBatch } = layout;
  for (let b = 0; b < batchSize; b++) {
    for (let o = 0; o < outerSize; o++) {
      const sourceBase = (b * outerSize + o) * dimSize;
      const targetBase = (b * outerSize + o) * indicesPerBatch;
      for (let i = 0; i < indicesPerBatch; i++) {
        const source = (sourceBase + (indices[b * indicesPerBatch + i] as number)) * sliceSize;
        const target = (targetBase + i) * sliceSize;
        if (sliceSize >= 16) out.set(x.subarray(source, source + sliceSize), target);
        else for (let j = 0; j < sliceSize; j++) out[target + j] = x[source + j] as number;
      }
    }
  }
}

/**
 * {@link gatherInto} within one heap view: `x` and the output are element offsets into `heap`, and each
 * slice is one `copyWithin` (see `heap.ts`).
 */
function gatherOnHeap(heap: HeapArray, xBase: number, outBase: number, indices: ArrayLike<number>, layout: GatherLayout): void {
  const { batchSize, outerSize, dimSize, sliceSize, indicesPerBatch } = layout;
  for (let b = 0; b < batchSize; b++) {
    for (let o = 0; o < outerSize; o++) {
      const sourceBase = (b * outerSize + o) * dimSize;
      const targetBase = (b * outerSize + o) * indicesPerBatch;
      for (let i = 0; i < indicesPerBatch; i++) {
        const source = (sourceBase + (indices[b * indicesPerBatch + i] as number)) * sliceSize;
        copyRun(heap, xBase + source, outBase + (targetBase + i) * sliceSize, sliceSize);
      }
    }
  }
}

interface GatherArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: {};
  attrs?: tf.NamedAttrMap;
}

/** What the kit needs of tfjs's cpu backend (`MathBackendCPU`), without depending on its package. */
interface CpuBackendLike {
  data: { get(dataId: object): { values?: unknown } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): TensorInfo;
}

function isSupported(x: TensorInfo): boolean {
  return x.dtype === 'float32' || x.dtype === 'int32' || x.dtype === 'bool';
}

/**
 * The kit's cpu `GatherV2` kernel.
 *
 * @param args - inputs `x` `[...X]` and `indices` `[...I]` int32; attrs `axis`, `batchDims`
 * @returns `[...X[:axis], ...I[batchDims:], ...X[axis + 1:]]`, dtype of `x`
 * @throws Error `GatherV2: the index value <i> is not in [0, <n - 1>]` for an out-of-range index
 */
export function cpuGather(args: GatherArgs): TensorInfo {
  const { x, indices } = args.inputs as { x: TensorInfo; indices: TensorInfo };
  if (!isSupported(x)) return requireStockKernel(tf.GatherV2, 'cpu').kernelFunc(args) as TensorInfo;
  const backend = args.backend as CpuBackendLike;
  const layout = layoutOf(x, indices, args.attrs);
  const indexValues = backend.data.get(indices.dataId).values as ArrayLike<number>;
  checkIndices(indexValues, layout.dimSize);
  const xValues = backend.data.get(x.dataId).values as NumericArray;
  const size = layout.outputShape.reduce((p, d) => p * d, 1);
  const out = x.dtype === 'float32' ? new Float32Array(size) : x.dtype === 'int32' ? new Int32Array(size) : new Uint8Array(size);
  gatherInto(out, xValues, indexValues, layout);
  return backend.makeTensorInfo(layout.outputShape, x.dtype, out);
}

/**
 * The kit's wasm `GatherV2` kernel.
 *
 * @param args - inputs `x` `[...X]` and `indices` `[...I]` int32; attrs `axis`, `batchDims`
 * @returns `[...X[:axis], ...I[batchDims:], ...X[axis + 1:]]`, dtype of `x`
 * @throws Error `GatherV2: the index value <i> is not in [0, <n - 1>]` for an out-of-range index
 */
export function wasmGather(args: GatherArgs): TensorInfo {
  const { x, indices } = args.inputs as { x: TensorInfo; indices: TensorInfo };
  if (!isSupported(x)) return requireStockKernel(tf.GatherV2, 'wasm').kernelFunc(args) as TensorInfo;
  const backend = args.backend as BackendWasm;
  const layout = layoutOf(x, indices, args.attrs);
  checkIndices(backend.typedArrayFromHeap(indices), layout.dimSize);
  const out = backend.makeOutput(layout.outputShape, x.dtype);
  if (layout.outputShape.some((d) => d === 0)) return out;
  // Views are taken after makeOutput: an allocation may grow (and so replace) the wasm heap.
  const { heap, base: xBase } = heapSlot(backend, x);
  gatherOnHeap(heap, xBase, heapSlot(backend, out).base, backend.typedArrayFromHeap(indices), layout);
  return out;
}
