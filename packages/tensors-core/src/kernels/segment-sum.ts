/**
 * Fix for `UnsortedSegmentSum` on cpu and wasm, and a cheaper gradient for it.
 *
 * `tf.unsortedSegmentSum(x, segmentIds, numSegments)` adds the rows of `x` into `numSegments` rows:
 * `out[s] = Σ_{i: segmentIds[i] = s} x[i]`. It is the scatter-add of a sparse MoE layer and the
 * gradient of `tf.gather`, so every training step of an MoE layer runs it.
 *
 * - Stock cpu builds, for every segment, a mask over all of `x` and sums it: O(numSegments·N·D)
 *   (38 s for a case a plain loop does in 0.5 ms).
 * - Stock wasm has no `UnsortedSegmentSum` kernel at all, so `tf.unsortedSegmentSum` and the
 *   gradient of `tf.gather` throw "Kernel 'UnsortedSegmentSum' not registered for backend 'wasm'".
 *
 * The fix is one O(N·D) pass on both backends, reading and writing the backend's memory directly
 * (on wasm through `typedArrayFromHeap` / `makeOutput`, as the wasm backend's own JS kernels do; for
 * float32 on wasm with native acceleration active, the addon's `segmentSum` makes the same pass in C).
 *
 * Out-of-range segment ids (negative, or `>= numSegments`) are ignored: their rows add to no
 * segment, and their gradient is zero. This is TensorFlow's rule for negative ids and what its GPU
 * kernel and the stock tfjs cpu kernel do for too-large ids (TensorFlow's CPU kernel raises an error
 * for those instead). The stock gradient (`_GatherDropNegatives`) drops only negative ids and throws
 * on too-large ones; the kit's gradient drops both and does two passes over `[N, D]` instead of four.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { activeAccel } from '../accel.js';
import { floatOffset } from './heap.js';

type TensorInfo = tf.TensorInfo;
type NumericArray = Float32Array | Int32Array;

/** The name of the `UnsortedSegmentSum` kernel fix (cpu and wasm). */
export const UNSORTED_SEGMENT_SUM_FIX = 'unsorted-segment-sum';
/** The name of the `UnsortedSegmentSum` gradient fix (all backends). */
export const UNSORTED_SEGMENT_SUM_GRADIENT_FIX = 'unsorted-segment-sum-gradient';

/** How `x` splits into rows: one row per segment id. */
interface SegmentLayout {
  /** Number of segment ids, `N` (the product of `segmentIds`' shape). */
  readonly rows: number;
  /** Elements per row, `D` (the product of `x`'s remaining dims). */
  readonly rowSize: number;
  /** `[numSegments, ...x.shape.slice(segmentIds.rank)]`. */
  readonly outShape: number[];
}

function layoutOf(x: TensorInfo, segmentIds: TensorInfo, numSegments: number): SegmentLayout {
  const idsRank = segmentIds.shape.length;
  const isPrefix = idsRank <= x.shape.length && segmentIds.shape.every((d, i) => d === x.shape[i]);
  if (!isPrefix) {
    throw new Error(
      `UnsortedSegmentSum: argument 'segmentIds' must have shape [${x.shape.slice(0, Math.max(idsRank, 1)).join(', ')}] ` +
        `(a prefix of x's shape [${x.shape.join(', ')}]), got [${segmentIds.shape.join(', ')}]`,
    );
  }
  if (!Number.isInteger(numSegments) || numSegments < 0) {
    throw new Error(`UnsortedSegmentSum: attribute 'numSegments' must be an integer >= 0, got ${numSegments}`);
  }
  if (x.dtype !== 'float32' && x.dtype !== 'int32') {
    throw new Error(`UnsortedSegmentSum: argument 'x' must have dtype float32 or int32, got ${x.dtype}`);
  }
  const inner = x.shape.slice(idsRank);
  const rows = segmentIds.shape.reduce((p, d) => p * d, 1);
  const rowSize = inner.reduce((p, d) => p * d, 1);
  return { rows, rowSize, outShape: [numSegments, ...inner] };
}

/**
 * The one-pass segment sum on plain arrays: `out[s·D + j] = Σ_{i: ids[i] = s} x[i·D + j]`.
 * Ids outside `[0, numSegments)` are skipped.
 *
 * @param out - `[numSegments·D]`, overwritten (zeroed first)
 * @param x - `[N·D]`
 * @param segmentIds - `[N]` integers
 * @param numSegments - the number of output rows
 * @param rowSize - `D`
 */
export function segmentSumInto(
  out: NumericArray,
  x: ArrayLike<number>,
  segmentIds: ArrayLike<number>,
  numSegments: number,
  rowSize: number,
): void {
  out.fill(0);
  const rows = segmentIds.length;
  for (let row = 0; row < rows; row++) {
    const segment = segmentIds[row] as number;
    if (!(segment >= 0 && segment < numSegments)) continue;
    const source = row * rowSize;
    const target = segment * rowSize;
    for (let j = 0; j < rowSize; j++) out[target + j] = (out[target + j] as number) + (x[source + j] as number);
  }
}

/** What the kit needs of tfjs's cpu backend (`MathBackendCPU`), without depending on its package. */
interface CpuBackendLike {
  data: { get(dataId: object): { values?: unknown } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): TensorInfo;
}

interface SegmentSumArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: {};
  attrs?: tf.NamedAttrMap;
}

function unpack(args: SegmentSumArgs): { x: TensorInfo; segmentIds: TensorInfo; numSegments: number } {
  const { x, segmentIds } = args.inputs as { x: TensorInfo; segmentIds: TensorInfo };
  return { x, segmentIds, numSegments: args.attrs?.numSegments as number };
}

/**
 * The kit's cpu `UnsortedSegmentSum` kernel: one O(N·D) pass.
 *
 * @param args - inputs `x` `[...S, ...R]` (float32 or int32) and `segmentIds` `[...S]` int32; attr `numSegments`
 * @returns `[numSegments, ...R]`, dtype of `x`
 * @throws Error naming the kernel when `segmentIds`' shape is not a prefix of `x`'s, `numSegments`
 *   is not a whole number >= 0, or `x` is not float32 / int32
 */
export function cpuUnsortedSegmentSum(args: SegmentSumArgs): TensorInfo {
  const { x, segmentIds, numSegments } = unpack(args);
  const backend = args.backend as CpuBackendLike;
  const { rowSize, outShape } = layoutOf(x, segmentIds, numSegments);
  const xValues = backend.data.get(x.dataId).values as NumericArray;
  const ids = backend.data.get(segmentIds.dataId).values as ArrayLike<number>;
  const out = x.dtype === 'int32' ? new Int32Array(numSegments * rowSize) : new Float32Array(numSegments * rowSize);
  segmentSumInto(out, xValues, ids, numSegments, rowSize);
  return backend.makeTensorInfo(outShape, x.dtype, out);
}

/**
 * The kit's wasm `UnsortedSegmentSum` kernel (stock wasm has none): one O(N·D) pass over the wasm heap.
 *
 * @param args - inputs `x` `[...S, ...R]` (float32 or int32) and `segmentIds` `[...S]` int32; attr `numSegments`
 * @returns `[numSegments, ...R]`, dtype of `x`
 * @throws Error as {@link cpuUnsortedSegmentSum}
 */
export function wasmUnsortedSegmentSum(args: SegmentSumArgs): TensorInfo {
  const { x, segmentIds, numSegments } = unpack(args);
  const backend = args.backend as BackendWasm;
  const { rowSize, outShape } = layoutOf(x, segmentIds, numSegments);
  const out = backend.makeOutput(outShape, x.dtype);
  const accel = activeAccel();
  const rows = segmentIds.shape.reduce((p, d) => p * d, 1);
  if (accel !== null && x.dtype === 'float32' && rows * rowSize > 0 && numSegments > 0) {
    // The same pass in C (about 10× the JS loop); offsets are taken after makeOutput, as below.
    try {
      const heap = (backend.typedArrayFromHeap(out) as Float32Array).buffer as ArrayBuffer;
      accel.segmentSum(heap, floatOffset(backend, x, 'UnsortedSegmentSum'), floatOffset(backend, segmentIds, 'UnsortedSegmentSum'), floatOffset(backend, out, 'UnsortedSegmentSum'), rows, rowSize, numSegments);
    } catch (error) {
      backend.disposeData(out.dataId);
      throw error;
    }
    return out;
  }
  // Views are taken after makeOutput: an allocation may grow (and so detach) the wasm heap.
  const outValues = backend.typedArrayFromHeap(out) as NumericArray;
  const xValues = backend.typedArrayFromHeap(x) as NumericArray;
  const ids = backend.typedArrayFromHeap(segmentIds) as ArrayLike<number>;
  segmentSumInto(outValues, xValues, ids, numSegments, rowSize);
  return out;
}

/**
 * The gradient of `unsortedSegmentSum` with respect to `x`: gather `dy` at each id, zero where the id
 * is out of range.
 *
 * @param dy - `[numSegments, ...R]` float32
 * @param segmentIds - `[...S]` int32
 * @param numSegments - the forward op's `numSegments`
 * @returns `[...S, ...R]` float32
 */
export function segmentSumGradient(dy: tf.Tensor, segmentIds: tf.Tensor, numSegments: number): tf.Tensor {
  return tf.tidy(() => {
    const inner = dy.shape.slice(1);
    if (numSegments === 0 || segmentIds.size === 0) return tf.zeros([...segmentIds.shape, ...inner], 'float32');
    const clipped = tf.minimum(tf.maximum(segmentIds, tf.scalar(0, 'int32')), tf.scalar(numSegments - 1, 'int32')); // [...S]
    const gathered = tf.gather(dy, clipped); // [...S, ...R]
    const inRange = tf.logicalAnd(
      tf.greaterEqual(segmentIds, tf.scalar(0, 'int32')),
      tf.less(segmentIds, tf.scalar(numSegments, 'int32')),
    ); // [...S] bool
    const mask = tf.reshape(tf.cast(inRange, 'float32'), [...segmentIds.shape, ...inner.map(() => 1)]); // [...S, 1, ...]
    return tf.mul(gathered, mask);
  });
}

/** The kit's gradient config for `UnsortedSegmentSum` (see {@link segmentSumGradient}). */
export const unsortedSegmentSumGradConfig: tf.GradConfig = {
  kernelName: tf.UnsortedSegmentSum,
  inputsToSave: ['segmentIds'],
  gradFunc: (dy, saved, attrs) => {
    const [segmentIds] = saved as [tf.Tensor];
    const numSegments = attrs.numSegments as number;
    return {
      x: () => segmentSumGradient(dy as tf.Tensor, segmentIds, numSegments),
      segmentIds: () => tf.zeros(segmentIds.shape, 'float32'),
    };
  },
};
