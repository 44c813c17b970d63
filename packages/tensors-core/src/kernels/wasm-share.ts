/**
 * Fixes for wasm `Identity`, `Cast` to the same dtype and no-op `Transpose`: share the data instead
 * of copying it.
 *
 * tfjs saves the inputs and outputs a gradient needs through `Identity` (`engine.clone`), so in a
 * training step every matmul operand, activation and saved intermediate goes through it once. The
 * stock wasm kernel allocates a new buffer and copies the tensor into it (about 1.4 ms per million
 * floats here, and as much heap again); the cpu kernel shares the data and increments its reference
 * count. Tensor data is immutable in tfjs (no wasm kernel writes into its inputs, and a variable's
 * `assign` swaps its data rather than writing into it), so sharing is what cpu, tfjs-node and the
 * wasm backend's own `Reshape` do.
 *
 * The fix does the same on wasm. The same copy hides in two more places a training step visits
 * hundreds of times: the gradient of every saved tensor is a `Cast` of `dy` to float32 (a float32
 * `dy` already), and a `Transpose` whose permutation only moves size-1 axes (or none) calls the
 * copying `Identity` directly. String tensors, real casts and real transposes go to the stock kernels.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { activeAccel, type NativeAccel } from '../accel.js';
import { floatOffset } from './heap.js';
import { requireStockKernel } from './registry.js';

/** The name of the wasm `Identity` fix. */
export const WASM_IDENTITY_FIX = 'wasm-identity';
/** The name of the wasm `Cast` fix (same-dtype casts). */
export const WASM_CAST_FIX = 'wasm-cast';
/** The name of the wasm `Transpose` fix (no-op permutations). */
export const WASM_TRANSPOSE_FIX = 'wasm-transpose';

interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: {};
  attrs?: tf.NamedAttrMap;
}

/** A tensor info sharing `x`'s data, with its reference count incremented. */
function share(backend: BackendWasm, x: tf.TensorInfo, shape: readonly number[]): tf.TensorInfo {
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: [...shape], dtype: x.dtype };
}

/**
 * The kit's wasm `Identity` kernel.
 *
 * @param args - input `x`
 * @returns a tensor info sharing `x`'s data (its reference count incremented)
 */
export function wasmIdentity(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  if (x.dtype === 'string') return requireStockKernel(tf.Identity, 'wasm').kernelFunc(args) as tf.TensorInfo;
  return share(args.backend as BackendWasm, x, x.shape);
}

/**
 * The kit's wasm `Cast` kernel: a cast to the dtype `x` already has shares the data, and a cast to
 * bool gives `x != 0` (the stock kernel stored the low byte: 256 became false).
 *
 * @param args - input `x`; attr `dtype`
 * @returns `x` as `dtype`
 */
export function wasmCast(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const dtype = args.attrs?.dtype as tf.DataType | undefined;
  const backend = args.backend as BackendWasm;
  if (x.dtype !== 'string' && dtype === x.dtype) return share(backend, x, x.shape);
  if (dtype === 'bool' && (x.dtype === 'float32' || x.dtype === 'int32')) {
    // The stock kernel copies the values into bytes (256 -> false, 2 -> 2); a bool is x != 0.
    const out = backend.makeOutput([...x.shape], 'bool');
    // Views are taken after makeOutput: an allocation may grow (and so detach) the wasm heap.
    const target = backend.typedArrayFromHeap(out) as Uint8Array;
    const source = backend.typedArrayFromHeap(x) as Float32Array | Int32Array;
    for (let i = 0; i < source.length; i++) target[i] = source[i] !== 0 ? 1 : 0;
    return out;
  }
  return requireStockKernel(tf.Cast, 'wasm').kernelFunc(args) as tf.TensorInfo;
}

/**
 * The kit's wasm `Transpose` kernel: a permutation that keeps the order of the axes longer than 1
 * (a reshape in disguise) shares the data; with native acceleration, a real one of float32 / int32
 * data is one native pass that copies the trailing axes the permutation keeps as runs (the stock kernel
 * takes about 11 ns per element, e.g. 5 ms for attention's `[8, 128, 18, 32]` → `[8, 18, 128, 32]`).
 *
 * @param args - input `x`; attr `perm`
 * @returns `x` transposed by `perm`
 */
export function wasmTranspose(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  const perm = (args.attrs?.perm as number[] | undefined) ?? x.shape.map((_, i) => x.shape.length - 1 - i);
  const moved = perm.filter((axis) => (x.shape[axis] as number) !== 1);
  const keepsOrder = moved.every((axis, i) => i === 0 || axis > (moved[i - 1] as number));
  if (x.dtype === 'string' || perm.length !== x.shape.length || !keepsOrder) {
    const accel = activeAccel();
    if (accel !== null && (x.dtype === 'float32' || x.dtype === 'int32') && perm.length === x.shape.length && perm.length <= 8) {
      return nativeTranspose(accel, args.backend as BackendWasm, x, perm);
    }
    return requireStockKernel(tf.Transpose, 'wasm').kernelFunc(args) as tf.TensorInfo;
  }
  return share(args.backend as BackendWasm, x, perm.map((axis) => x.shape[axis] as number));
}

/**
 * A real transpose by the native addon.
 *
 * @param accel - the active addon
 * @param backend - the wasm backend
 * @param x - float32 or int32
 * @param perm - the permutation (rank <= 8)
 * @returns x transposed
 */
function nativeTranspose(accel: NativeAccel, backend: BackendWasm, x: tf.TensorInfo, perm: readonly number[]): tf.TensorInfo {
  const out = backend.makeOutput(perm.map((axis) => x.shape[axis] as number), x.dtype);
  try {
    if (x.shape.every((d) => d > 0)) {
      // offsets after makeOutput (an allocation may grow the heap); int32 elements are 4 bytes too
      const heap = (backend.typedArrayFromHeap(out) as Float32Array | Int32Array).buffer as ArrayBuffer;
      accel.transpose(heap, floatOffset(backend, x, 'Transpose'), floatOffset(backend, out, 'Transpose'), new Float64Array([...x.shape, ...perm]));
    }
  } catch (error) {
    backend.disposeData(out.dataId);
    throw error;
  }
  return out;
}
