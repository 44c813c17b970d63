/**
 * Copies inside the wasm heap. Every wasm tensor lives in one `ArrayBuffer`, so a copy from one
 * tensor to another is `heap.copyWithin(to, from, end)`: a native memmove, with no view to allocate.
 * Measured here (393k floats in runs of n): JS loop ~1.7 ms whatever n; `set(subarray)` 2.5 ms for
 * n = 16, 0.2 ms for n = 192; `copyWithin` 0.7 ms for n = 16, 0.13 ms for n = 192. Runs shorter
 * than {@link SHORT_COPY} are copied with a loop.
 */
import type * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { activeAccel, SGEMM_LIST_FIELDS, type NativeAccel } from '../accel.js';

/** A typed view of the whole wasm heap for one element size. */
export type HeapArray = Float32Array | Int32Array | Uint8Array;

/** Runs shorter than this are copied element by element (a `copyWithin` call costs about 8 element copies). */
export const SHORT_COPY = 8;

/** The whole heap viewed with `info`'s element type, and `info`'s first element in that view. */
export interface HeapSlot {
  readonly heap: HeapArray;
  readonly base: number;
}

/**
 * Views the whole heap for a tensor's dtype. Call it after every allocation (the heap may grow, which
 * replaces its buffer).
 *
 * @param backend - the wasm backend
 * @param info - a float32, int32 or bool tensor
 * @returns the heap view and the tensor's element offset in it
 */
export function heapSlot(backend: BackendWasm, info: tf.TensorInfo): HeapSlot {
  const view = backend.typedArrayFromHeap(info) as HeapArray;
  const heap =
    view instanceof Float32Array
      ? new Float32Array(view.buffer)
      : view instanceof Int32Array
        ? new Int32Array(view.buffer)
        : new Uint8Array(view.buffer);
  return { heap, base: view.byteOffset / view.BYTES_PER_ELEMENT };
}

/**
 * Copies `length` elements from `from` to `to` within one heap view.
 *
 * @param heap - the heap view
 * @param from - first source element
 * @param to - first target element
 * @param length - elements to copy
 */
export function copyRun(heap: HeapArray, from: number, to: number, length: number): void {
  if (length >= SHORT_COPY) heap.copyWithin(to, from, from + length);
  else for (let j = 0; j < length; j++) heap[to + j] = heap[from + j] as number;
}

/**
 * Element offset of a float32 tensor in the wasm heap, as the native addon takes it. Reading it may
 * move the tensor's data onto the heap (an allocation), so take every offset before reading the heap
 * buffer.
 *
 * @param backend - the wasm backend
 * @param info - a float32 tensor
 * @param kernelName - names the caller in the error
 * @returns the index of the tensor's first element in a `Float32Array` over the whole heap
 * @throws Error when the tensor has no 4-byte aligned data in the heap
 */
export function floatOffset(backend: BackendWasm, info: tf.TensorInfo, kernelName: string): number {
  const memoryOffset = backend.dataIdMap.get(info.dataId)?.memoryOffset;
  if (memoryOffset === undefined || memoryOffset % 4 !== 0) {
    throw new Error(`${kernelName}: tensor of shape [${info.shape.join(', ')}] has no 4-byte aligned data in the wasm heap`);
  }
  return memoryOffset / 4;
}

/**
 * The native addon, for a kernel that only runs while acceleration is active.
 *
 * @param kernelName - names the caller in the error
 * @returns the active addon
 * @throws Error when acceleration is off (the op should have taken its composite form)
 */
export function requireAccel(kernelName: string): NativeAccel {
  const accel = activeAccel();
  if (accel === null) throw new Error(`${kernelName}: native acceleration is not active (the op should have used its composite form)`);
  return accel;
}

/** One product `C = alpha·op(A)·op(B) + beta·C` of {@link runProducts}; offsets in floats, row-major. */
export interface HeapProduct {
  readonly transposeA: boolean;
  readonly transposeB: boolean;
  /** Rows of `op(A)` and `C`. */
  readonly m: number;
  /** Columns of `op(B)` and `C`. */
  readonly n: number;
  /** Columns of `op(A)`, rows of `op(B)` (0 writes `beta·C`). */
  readonly k: number;
  readonly aOffset: number;
  readonly lda: number;
  readonly bOffset: number;
  readonly ldb: number;
  readonly cOffset: number;
  readonly ldc: number;
  /** Default 1. */
  readonly alpha?: number;
  /** Default 0 (C is overwritten). */
  readonly beta?: number;
}

/**
 * Runs independent products in one native call (`sgemmList`): the addon spreads them over its
 * threads, each product whole on one thread, which beats OpenBLAS's own threading on small products.
 * No product may write where another reads or writes (the addon checks and throws).
 *
 * @param accel - the active addon
 * @param heap - the current wasm heap buffer (read it after the last allocation)
 * @param products - the products
 */
export function runProducts(accel: NativeAccel, heap: ArrayBuffer, products: readonly HeapProduct[]): void {
  const fields = new Float64Array(products.length * SGEMM_LIST_FIELDS);
  products.forEach((p, i) => {
    fields.set(
      [p.transposeA ? 1 : 0, p.transposeB ? 1 : 0, p.m, p.n, p.k, p.alpha ?? 1, p.aOffset, p.lda, p.bOffset, p.ldb, p.beta ?? 0, p.cOffset, p.ldc],
      i * SGEMM_LIST_FIELDS,
    );
  });
  accel.sgemmList(heap, fields);
}
