/**
 * The core of causal self-attention as one op with its own gradient: from the rotated queries and keys
 * and the values of every head to the context with the heads side by side.
 *
 * | op | computes | composite form |
 * |---|---|---|
 * | {@link causalAttention} | `out[b, t, h] = Σ_{s<=t} softmax_s(scale·q[b, h, t]·k[b, h, s])·v[b, h, s]` (Vaswani et al. 2017, causal) | `matMul`, `mul`, `add` (mask), `softmax`, `matMul`, `transpose` |
 *
 * With native acceleration on the `wasm` backend (see {@link fusedOpsActive}) it is one kernel forward
 * and one backward (`kernels/attention.ts`): the per-head products of all heads as one list that the
 * addon runs in parallel, a native causal softmax between them, and the context written straight into
 * the `[B, T, H, hd]` layout. The attention weights `[B, H, T, T]` are saved for the backward pass, as
 * under autodiff, but no scaled or masked scores are. Otherwise (cpu, tfjs-node, wasm without OpenBLAS,
 * `MOEPP_ACCEL=off`) the op is its composite form, with tfjs's own gradients. Both give the same values
 * to float32 rounding; a masked position gets exactly zero weight on both.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, ConfigError, ShapeError } from './errors.js';
import { fusedOpsActive } from './fused.js';
import { ATTENTION_KERNELS, registerAttentionKernels } from './kernels/attention.js';

registerAttentionKernels();

const OP = 'causalAttention';

/** Added to the score of a key after the query in the composite form: its weight underflows to exactly 0. */
const MASKED = -1e9;

/**
 * The additive causal mask.
 *
 * @param seqLen - T
 * @returns `[T, T]` float32: 0 on and below the diagonal, {@link MASKED} above (a key after the query)
 */
function causalMask(seqLen: number): tf.Tensor2D {
  const values = new Float32Array(seqLen * seqLen);
  for (let query = 0; query < seqLen; query++) values.fill(MASKED, query * seqLen + query + 1, (query + 1) * seqLen);
  return tf.tensor2d(values, [seqLen, seqLen]);
}

/**
 * The composite form: the tfjs ops `CausalSelfAttention` used before this op.
 *
 * @param q - `[B, H, T, hd]`
 * @param k - `[B, H, T, hd]`
 * @param v - `[B, H, T, hd]`
 * @param scale - multiplies the scores
 * @returns `[B, T, H, hd]`
 */
function causalAttentionComposite(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, scale: number): tf.Tensor4D {
  return tf.tidy(() => {
    const seqLen = q.shape[2] as number;
    const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), scale), causalMask(seqLen)); // [B, H, T, T]
    const weights = tf.softmax(scores, -1); // [B, H, T, T], 0 above the diagonal
    const context = tf.matMul(weights, v); // [B, H, T, hd]
    const [batch, heads, , headDim] = q.shape as [number, number, number, number];
    // [B, T, H, hd]; an empty context is reshaped (tfjs's wasm Transpose divides by zero on one)
    return (context.size === 0 ? tf.reshape(context, [batch, seqLen, heads, headDim]) : tf.transpose(context, [0, 2, 1, 3])) as tf.Tensor4D;
  });
}

/**
 * The gradients of the fused forward pass in composite form, for a backward pass that runs without
 * acceleration (say, acceleration suspended between forward and backward).
 *
 * @param dOut - `[B, T, H, hd]`
 * @param q - `[B, H, T, hd]`
 * @param k - `[B, H, T, hd]`
 * @param v - `[B, H, T, hd]`
 * @param probs - `[B, H, T, T]`, the saved attention weights
 * @param scale - as in the forward pass
 * @returns `[dq, dk, dv]`, each `[B, H, T, hd]`
 */
function causalAttentionGradientComposite(dOut: tf.Tensor, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, probs: tf.Tensor, scale: number): tf.Tensor[] {
  return tf.tidy(() => {
    const dContext = tf.transpose(dOut, [0, 2, 1, 3]); // dO: [B, H, T, hd]
    const dv = tf.matMul(probs, dContext, true, false); // Pᵀ·dO
    const dProbs = tf.matMul(dContext, v, false, true); // dP = dO·Vᵀ: [B, H, T, T]
    const dScores = tf.mul(tf.mul(probs, tf.sub(dProbs, tf.sum(tf.mul(probs, dProbs), -1, true))), scale); // scale·P⊙(dP − rowsum(P⊙dP))
    return [tf.matMul(dScores, k), tf.matMul(dScores, q, true, false), dv];
  });
}

function causalAttentionFused(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, scale: number): tf.Tensor4D {
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [query, key, value, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const [out, probs] = tf.engine().runKernel(ATTENTION_KERNELS.forward, { q: query, k: key, v: value } as unknown as tf.NamedTensorMap, {
      scale,
    }) as [tf.Tensor, tf.Tensor]; // [B, T, H, hd], [B, H, T, T]
    save([query, key, value, probs]);
    return {
      value: out,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [savedQ, savedK, savedV, savedProbs] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
        if (!fusedOpsActive()) return causalAttentionGradientComposite(dy, savedQ, savedK, savedV, savedProbs, scale);
        return tf.engine().runKernel(
          ATTENTION_KERNELS.backward,
          { dOut: dy, q: savedQ, k: savedK, v: savedV, probs: savedProbs } as unknown as tf.NamedTensorMap,
          { scale },
        ) as tf.Tensor[];
      },
    };
  });
  return op(q, k, v) as tf.Tensor4D;
}

/**
 * Causal scaled dot-product attention over every head at once, the part of self-attention between the
 * rotated projections and the output projection:
 *
 *     out[b, t, h, :] = Σ_{s<=t} softmax_s(scale·q[b, h, t]·k[b, h, s]) · v[b, h, s, :]
 *
 * A query attends to its own position and the ones before it; later keys get exactly zero weight. The
 * output has the heads interleaved, so `out.reshape([B·T, H·hd])` is the merged context with no
 * transpose. With native acceleration on wasm it runs one kernel each way (see the module notes);
 * otherwise the composite tfjs ops.
 *
 * @param q - `[B, H, T, hd]` float32, the queries (rotated, for rotary attention)
 * @param k - `[B, H, T, hd]` float32, the keys
 * @param v - `[B, H, T, hd]` float32, the values
 * @param scale - multiplies `q·k` before the softmax; default `1/√hd`
 * @returns `[B, T, H, hd]` float32, the context of every position and head
 * @throws {@link ConfigError} when a tensor is not float32 or `scale` is not a finite number
 * @throws {@link ShapeError} when `q` is not rank 4 or `k`, `v` do not have `q`'s shape
 * @see https://arxiv.org/abs/1706.03762 (Vaswani et al., Attention Is All You Need, Eq. 1)
 */
export function causalAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, scale?: number): tf.Tensor4D {
  for (const [name, tensor] of [['q', q], ['k', k], ['v', v]] as const) {
    if (tensor.dtype !== 'float32') throw new ConfigError(`${OP}: argument '${name}' must be float32, got ${tensor.dtype}`);
  }
  if (q.shape.length !== 4) throw new ShapeError(`${OP}: argument 'q' must be [B, H, T, hd], got [${q.shape.join(', ')}]`);
  for (const [name, tensor] of [['k', k], ['v', v]] as const) {
    if (tensor.shape.length !== 4 || tensor.shape.some((size, axis) => size !== q.shape[axis])) {
      throw new ShapeError(`${OP}: argument '${name}' must have the shape of q [${q.shape.join(', ')}], got [${tensor.shape.join(', ')}]`);
    }
  }
  const headDim = q.shape[3] as number;
  const factor = scale === undefined ? 1 / Math.sqrt(Math.max(headDim, 1)) : checkNumber(OP, 'scale', scale);
  return fusedOpsActive() && q.size > 0 ? causalAttentionFused(q, k, v, factor) : causalAttentionComposite(q, k, v, factor);
}
