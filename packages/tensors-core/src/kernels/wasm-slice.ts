/**
 * Fixes for wasm `Slice`, `SplitV` and `Concat`: copy only the slice, and copy short runs with a loop.
 *
 * The stock wasm `Slice` kernel starts with `backend.readSync(x)`, which copies the WHOLE input out of
 * the wasm heap into a fresh JavaScript array, and only then copies the slice from that copy. `SplitV`
 * (`tf.split`) calls it once per piece, so splitting `[N, 2F]` into two halves (SwiGLU) copies the
 * input three times; the gradient of `tf.slice` and `tf.split` then pads or concatenates.
 *
 * The fix reads the input in place (a view of the heap taken after the output is allocated) and
 * copies runs of consecutive elements with `TypedArray.set`: the trailing dims the slice covers fully
 * are one run, copied with `copyWithin` inside the heap (see `heap.ts`). Semantics are the stock ones (`begin`, `size` with `-1`, `numOrSizeSplits` with one
 * `-1`, negative `axis`); string tensors go to the stock kernels.
 *
 * `Concat` (and the gradient of `tf.split`) copies one `subarray` per input per outer index; along a
 * short last axis (the halves of a rotary embedding, 16 floats) the views cost 3× the copy. The fix
 * copies each run with `copyWithin` too.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { copyRun, heapSlot, type HeapArray } from './heap.js';
import { requireStockKernel } from './registry.js';

type TensorInfo = tf.TensorInfo;

/** The name of the wasm `Slice` fix. */
export const WASM_SLICE_FIX = 'wasm-slice';
/** The name of the wasm `SplitV` fix. */
export const WASM_SPLIT_FIX = 'wasm-split';
/** The name of the wasm `Concat` fix. */
export const WASM_CONCAT_FIX = 'wasm-concat';


interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: {};
  attrs?: tf.NamedAttrMap;
}

/**
 * Copies the block `begin .. begin + size` of `x` (row-major, shape `xShape`) to `outBase`, within
 * one heap view. Axes after the last partial one are covered fully, so each step over the axes
 * before it copies one contiguous run.
 *
 * @param heap - the heap view (or any array holding both tensors)
 * @param xBase - first element of `x`
 * @param outBase - first element of the output (`prod(size)` elements)
 * @param xShape - the input shape
 * @param begin - start per axis (already resolved, in range)
 * @param size - extent per axis (already resolved, in range)
 */
export function sliceInto(heap: HeapArray, xBase: number, outBase: number, xShape: readonly number[], begin: readonly number[], size: readonly number[]): void {
  const rank = xShape.length;
  const total = size.reduce((p, d) => p * d, 1);
  if (rank === 0 || total === 0) {
    if (total === 1) heap[outBase] = heap[xBase] as number;
    return;
  }
  const strides = new Array<number>(rank);
  let stride = 1;
  for (let axis = rank - 1; axis >= 0; axis--) {
    strides[axis] = stride;
    stride *= xShape[axis] as number;
  }
  let runAxis = rank - 1;
  while (runAxis > 0 && begin[runAxis] === 0 && size[runAxis] === xShape[runAxis]) runAxis--;
  const runLength = (size[runAxis] as number) * (strides[runAxis] as number);
  const runStart = (begin[runAxis] as number) * (strides[runAxis] as number);
  const counter = new Array<number>(runAxis).fill(0); // position along each axis before runAxis
  for (let target = 0; target < total; target += runLength) {
    let source = xBase + runStart;
    for (let axis = 0; axis < runAxis; axis++) source += ((begin[axis] as number) + (counter[axis] as number)) * (strides[axis] as number);
    copyRun(heap, source, outBase + target, runLength);
    for (let axis = runAxis - 1; axis >= 0; axis--) {
      counter[axis] = (counter[axis] as number) + 1;
      if ((counter[axis] as number) < (size[axis] as number)) break;
      counter[axis] = 0;
    }
  }
}

/** One slice on the wasm heap (string tensors excluded by the callers). */
function sliceOnHeap(backend: BackendWasm, x: TensorInfo, begin: readonly number[], size: readonly number[]): TensorInfo {
  const out = backend.makeOutput([...size], x.dtype);
  if (size.some((d) => d === 0)) return out;
  // Views are taken after makeOutput: an allocation may grow (and so replace) the wasm heap.
  const source = heapSlot(backend, x);
  sliceInto(source.heap, source.base, heapSlot(backend, out).base, x.shape, begin, size);
  return out;
}

/**
 * The kit's wasm `Slice` kernel.
 *
 * @param args - input `x`; attrs `begin` and `size` (numbers or lists, `-1` = to the end)
 * @returns the slice, dtype of `x`
 */
export function wasmSlice(args: KernelArgs): TensorInfo {
  const { x } = args.inputs as { x: TensorInfo };
  if (x.dtype === 'string') return requireStockKernel(tf.Slice, 'wasm').kernelFunc(args) as TensorInfo;
  const [begin, size] = tf.slice_util.parseSliceParams(
    x as tf.Tensor,
    args.attrs?.begin as number | number[],
    args.attrs?.size as number | number[] | undefined,
  ) as [number[], number[]];
  tf.slice_util.assertParamsValid(x as tf.Tensor, begin, size);
  return sliceOnHeap(args.backend as BackendWasm, x, begin, size);
}

/**
 * The kit's wasm `SplitV` kernel.
 *
 * @param args - input `x`; attrs `numOrSizeSplits` (a count, or sizes with at most one `-1`) and `axis`
 * @returns the pieces along `axis`, dtype of `x`
 */
export function wasmSplitV(args: KernelArgs): TensorInfo[] {
  const { x } = args.inputs as { x: TensorInfo };
  if (x.dtype === 'string') return requireStockKernel(tf.SplitV, 'wasm').kernelFunc(args) as TensorInfo[];
  const axis = tf.util.parseAxisParam((args.attrs?.axis as number | undefined) ?? 0, x.shape)[0] as number;
  const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, args.attrs?.numOrSizeSplits as number | number[], axis);
  const backend = args.backend as BackendWasm;
  const begin = new Array<number>(x.shape.length).fill(0);
  const pieces: TensorInfo[] = [];
  try {
    for (const pieceSize of sizes) {
      const size = [...x.shape];
      size[axis] = pieceSize;
      pieces.push(sliceOnHeap(backend, x, begin, size));
      begin[axis] = (begin[axis] as number) + pieceSize;
    }
  } catch (error) {
    for (const piece of pieces) backend.disposeData(piece.dataId);
    throw error;
  }
  return pieces;
}

/**
 * The kit's wasm `Concat` kernel.
 *
 * @param args - inputs: the tensors (same dtype, same shape but along `axis`); attr `axis`
 * @returns the concatenation along `axis`
 */
export function wasmConcat(args: KernelArgs): TensorInfo {
  const tensors = Object.values(args.inputs) as TensorInfo[];
  const first = tensors[0];
  if (first === undefined || first.dtype === 'string') return requireStockKernel(tf.Concat, 'wasm').kernelFunc(args) as TensorInfo;
  const axis = tf.util.parseAxisParam((args.attrs?.axis as number | undefined) ?? 0, first.shape)[0] as number;
  tf.backend_util.assertParamsConsistent(
    tensors.map((t) => t.shape),
    axis,
  );
  const outShape = tf.backend_util.computeOutShape(
    tensors.map((t) => t.shape),
    axis,
  );
  const sizeOf = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);
  const parts = tensors.filter((t) => sizeOf(t.shape) > 0);
  const backend = args.backend as BackendWasm;
  const out = backend.makeOutput(outShape, first.dtype);
  if (parts.length === 0) return out;
  // Views are taken after makeOutput: an allocation may grow (and so replace) the wasm heap.
  const { heap, base: outBase } = heapSlot(backend, out);
  const outer = sizeOf(outShape.slice(0, axis));
  const rowLength = sizeOf(outShape.slice(axis));
  let column = 0;
  for (const part of parts) {
    const partBase = heapSlot(backend, part).base;
    const run = sizeOf(part.shape.slice(axis));
    for (let row = 0; row < outer; row++) copyRun(heap, partBase + row * run, outBase + row * rowLength + column, run);
    column += run;
  }
  return out;
}
