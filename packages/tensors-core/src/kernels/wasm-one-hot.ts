/**
 * Fix for wasm `OneHot` with a non-int32 dtype.
 *
 * The stock wasm kernel passes `onValue` and `offValue` to C++ as integers and writes int32 bit
 * patterns whatever the output dtype is. So `tf.oneHot(indices, 4, 1, 0, 'float32')` gives
 * `1.4e-45` (the float32 whose bits are the integer 1) where cpu gives `1`, and fractional values
 * (label smoothing: `onValue` 0.9, `offValue` 0.1) come out as 0 in every dtype.
 *
 * The fix writes the output directly on the wasm heap in JavaScript, one pass, for every dtype;
 * storing into the output's typed array converts the values exactly as the cpu kernel does
 * (an int32 output truncates 0.9 to 0, as on cpu).
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

/** The name of the wasm `OneHot` fix. */
export const WASM_ONE_HOT_FIX = 'wasm-one-hot';

/**
 * The kit's wasm `OneHot` kernel.
 *
 * @param args - input `indices` `[...S]` int32; attrs `depth`, `onValue`, `offValue`, `dtype`
 *   (float32, int32 or bool)
 * @returns `[...S, depth]` of `dtype`: `onValue` at each index in `[0, depth)`, `offValue` elsewhere
 *   (an index outside `[0, depth)` gives a row of `offValue`, as on cpu)
 * @throws Error naming the kernel for a string or complex64 dtype
 */
export function wasmOneHot(args: { inputs: tf.NamedTensorInfoMap; backend: {}; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { indices } = args.inputs as { indices: tf.TensorInfo };
  const depth = args.attrs?.depth as number;
  const onValue = (args.attrs?.onValue as number | undefined) ?? 1;
  const offValue = (args.attrs?.offValue as number | undefined) ?? 0;
  const dtype = ((args.attrs?.dtype as tf.DataType | undefined) ?? 'int32') as tf.DataType;
  if (dtype !== 'float32' && dtype !== 'int32' && dtype !== 'bool') {
    throw new Error(`OneHot: attribute 'dtype' must be float32, int32 or bool on wasm, got ${dtype}`);
  }
  const out = backend.makeOutput([...indices.shape, depth], dtype); // [...S, depth]
  // Views are taken after makeOutput: an allocation may grow (and so detach) the wasm heap.
  const values = backend.typedArrayFromHeap(out);
  const ids = backend.typedArrayFromHeap(indices);
  values.fill(offValue);
  for (let row = 0; row < ids.length; row++) {
    const index = ids[row] as number;
    if (index >= 0 && index < depth) values[row * depth + index] = onValue;
  }
  return out;
}
