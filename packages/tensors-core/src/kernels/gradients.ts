/**
 * Gradients tfjs lacks or gets wrong, for every backend (gradients are global in tfjs: one per
 * kernel name):
 * - `TopK` and `GatherNd` have none: `tf.grad` through `tf.topk(...).values` or `tf.gatherND` throws
 *   "Cannot compute gradient: gradient function not found for TopK".
 * - `BatchMatMul`'s gradient ignores broadcasting of the batch dims: `matMul(x [B, T, D], w [D, F])`
 *   throws "The gradient of input 'b' has shape '3,7,4', which does not match the shape of the input
 *   '7,4'". The kit's version sums the gradient over the broadcast dims. (`fused.matMul` computes its
 *   gradient inside the op, so it keeps that limitation.)
 */
import * as tf from '@tensorflow/tfjs';

/** The name of the `TopK` gradient fix. */
export const TOPK_GRADIENT_FIX = 'topk-gradient';
/** The name of the `GatherNd` gradient fix. */
export const GATHER_ND_GRADIENT_FIX = 'gather-nd-gradient';
/** The name of the `BatchMatMul` gradient fix. */
export const BATCH_MATMUL_GRADIENT_FIX = 'batch-matmul-gradient';

/**
 * The gradient of `topk(x, k).values` with respect to `x`: each `dValues` entry goes back to the
 * position its value was taken from; every other position gets 0. With ties, the gradient follows
 * the indices the forward pass returned (lowest index first on cpu and wasm), as in TensorFlow.
 *
 * @param dValues - `[...B, K]`, the gradient of the values output
 * @param indices - `[...B, K]` int32, the indices output of the forward pass
 * @param xShape - `[...B, L]`, the shape of the forward input
 * @returns `[...B, L]` float32
 */
export function topKGradient(dValues: tf.Tensor, indices: tf.Tensor, xShape: readonly number[]): tf.Tensor {
  return tf.tidy(() => {
    const length = xShape[xShape.length - 1] as number; // L
    const k = indices.shape[indices.shape.length - 1] as number; // K
    const rows = k === 0 ? 0 : indices.size / k; // product of the batch dims B
    if (rows === 0 || k === 0 || length === 0) return tf.zeros([...xShape], 'float32');
    const rowOffsets = tf.mul(tf.range(0, rows, 1, 'int32'), tf.scalar(length, 'int32')).reshape([rows, 1]); // [rows, 1]
    const flatIndices = tf.add(tf.reshape(indices, [rows, k]), rowOffsets).reshape([rows * k, 1]); // [rows·K, 1]
    const updates = tf.reshape(tf.cast(dValues, 'float32'), [rows * k]); // [rows·K]
    return tf.scatterND(flatIndices, updates, [rows * length]).reshape([...xShape]);
  });
}

/** The kit's gradient config for `TopK` (see {@link topKGradient}). */
export const topKGradConfig: tf.GradConfig = {
  kernelName: tf.TopK,
  inputsToSave: ['x'],
  outputsToSave: [false, true],
  gradFunc: (dys, saved) => {
    const [x, indices] = saved as [tf.Tensor, tf.Tensor];
    const dValues = Array.isArray(dys) ? (dys[0] as tf.Tensor) : dys;
    return { x: () => topKGradient(dValues, indices, x.shape) };
  },
};

/**
 * The gradient of `gatherND(params, indices)` with respect to `params`: `scatterND` of `dy` into the
 * shape of `params`, so an index gathered twice receives the sum of both gradients.
 *
 * @param dy - `[...I, ...P_tail]`, the gradient of the gathered values (`I` = `indices.shape[:-1]`)
 * @param indices - `[...I, Q]` int32
 * @param paramsShape - the shape of `params`, `[...P_head(Q), ...P_tail]`
 * @returns `paramsShape` float32
 */
export function gatherNdGradient(dy: tf.Tensor, indices: tf.Tensor, paramsShape: readonly number[]): tf.Tensor {
  return tf.tidy(() => {
    if (indices.size === 0 || dy.size === 0) return tf.zeros([...paramsShape], 'float32');
    return tf.scatterND(indices, tf.cast(dy, 'float32'), [...paramsShape]);
  });
}

/** The kit's gradient config for `GatherNd` (see {@link gatherNdGradient}). */
export const gatherNdGradConfig: tf.GradConfig = {
  kernelName: tf.GatherNd,
  inputsToSave: ['params', 'indices'],
  gradFunc: (dy, saved) => {
    const [params, indices] = saved as [tf.Tensor, tf.Tensor];
    return {
      params: () => gatherNdGradient(dy as tf.Tensor, indices, params.shape),
      indices: () => tf.zeros(indices.shape, 'float32'),
    };
  },
};

/**
 * Sums a gradient computed at the broadcast shape back to an input's shape.
 *
 * @param gradient - `[...outer, R, C]`, the gradient at the broadcast batch shape
 * @param inputShape - `[...inputOuter, R, C]`, with `inputOuter` broadcastable to `outer`
 * @returns `inputShape`
 */
function reduceToShape(gradient: tf.Tensor, inputShape: readonly number[]): tf.Tensor {
  if (gradient.shape.length === inputShape.length && gradient.shape.every((d, i) => d === inputShape[i])) return gradient;
  const axes = tf.broadcast_util.getReductionAxes([...inputShape], gradient.shape);
  const summed = axes.length > 0 ? tf.sum(gradient, axes) : gradient;
  return tf.reshape(summed, [...inputShape]);
}

/**
 * One gradient of `matMul(a, b, transposeA, transposeB)`, with broadcast batch dims summed out.
 *
 * @param input - which input's gradient: `'a'` or `'b'`
 * @param dy - `[...outer, M, N]`
 * @param a - `[...outerA, M, K]` (or `[..., K, M]` with `transposeA`)
 * @param b - `[...outerB, K, N]` (or `[..., N, K]` with `transposeB`)
 * @param transposeA - as in the forward op
 * @param transposeB - as in the forward op
 * @returns the gradient, shaped as that input
 */
export function batchMatMulGradient(
  input: 'a' | 'b',
  dy: tf.Tensor,
  a: tf.Tensor,
  b: tf.Tensor,
  transposeA: boolean,
  transposeB: boolean,
): tf.Tensor {
  return tf.tidy(() => {
    if (input === 'a') {
      const da = transposeA ? tf.matMul(b, dy, transposeB, true) : tf.matMul(dy, b, false, !transposeB);
      return reduceToShape(da, a.shape);
    }
    const db = transposeB ? tf.matMul(dy, a, true, transposeA) : tf.matMul(a, dy, !transposeA, false);
    return reduceToShape(db, b.shape);
  });
}

/** The kit's gradient config for `BatchMatMul` (see {@link batchMatMulGradient}). */
export const batchMatMulGradConfig: tf.GradConfig = {
  kernelName: tf.BatchMatMul,
  inputsToSave: ['a', 'b'],
  gradFunc: (dy, saved, attrs) => {
    const [a, b] = saved as [tf.Tensor, tf.Tensor];
    const transposeA = Boolean(attrs.transposeA);
    const transposeB = Boolean(attrs.transposeB);
    return {
      a: () => batchMatMulGradient('a', dy as tf.Tensor, a, b, transposeA, transposeB),
      b: () => batchMatMulGradient('b', dy as tf.Tensor, a, b, transposeA, transposeB),
    };
  },
};
