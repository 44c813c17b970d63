import * as tf from '@tensorflow/tfjs';
import { causalAttention, checkNumber, checkShape, ConfigError, randomNormal, rotaryEmbedding, type SeededRandom } from '@moepp/tensors-core';

/**
 * Rotary position tables for head width `hd`, LLaMA's `rotate_half` convention (the official MoE++
 * code's): `inv_freq_i = theta^(-2i/hd)`, `emb = [freqs, freqs]`, `q' = q·cos + rotate_half(q)·sin`.
 *
 * @param seqLen - T
 * @param headDim - hd (even)
 * @param theta - the base (official `rope_theta`, default 10000)
 * @returns `cos` and `sin`, each `[T, hd]` float32
 */
export function rotaryTables(seqLen: number, headDim: number, theta = 10000): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  const half = headDim / 2;
  const cos = new Float32Array(seqLen * headDim);
  const sin = new Float32Array(seqLen * headDim);
  for (let t = 0; t < seqLen; t++) {
    for (let i = 0; i < half; i++) {
      const angle = t * Math.pow(theta, (-2 * i) / headDim);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[t * headDim + i] = c;
      cos[t * headDim + i + half] = c;
      sin[t * headDim + i] = s;
      sin[t * headDim + i + half] = s;
    }
  }
  return { cos: tf.tensor2d(cos, [seqLen, headDim]), sin: tf.tensor2d(sin, [seqLen, headDim]) };
}

/**
 * Applies rotary embeddings, composite form (`CausalSelfAttention` runs the fused `rotaryEmbedding`
 * of `@moepp/tensors-core`, which computes the same values from the first halves of these tables).
 *
 * @param x - `[B, H, T, hd]`
 * @param cos - `[T, hd]`
 * @param sin - `[T, hd]`
 * @returns `[B, H, T, hd]`
 */
export function applyRotary(x: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor4D {
  return tf.tidy(() => {
    const half = x.shape[3] / 2;
    const [x1, x2] = tf.split(x, [half, half], 3); // each [B, H, T, hd/2]
    const rotated = tf.concat([tf.neg(x2 as tf.Tensor), x1 as tf.Tensor], 3); // rotate_half(x)
    return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
  });
}

/** Configuration of {@link CausalSelfAttention}. */
export interface AttentionConfig {
  /** D, the model width (`hidden_size`). */
  readonly hiddenSize: number;
  /** H, the number of heads (`num_attention_heads`); must divide D, and D/H must be even. */
  readonly numHeads: number;
  /** Rotary base (`rope_theta`). Default 10000. */
  readonly ropeTheta?: number;
  /** Std of the normal initialisation (`initializer_range`). Default 0.02. */
  readonly initializerRange?: number;
}

/**
 * Causal multi-head self-attention with rotary positions and no biases (LLaMA / MoE++ `Attention`,
 * with `num_key_value_heads = num_attention_heads`). Weights are tfjs `[in, out]`; the official
 * `q_proj.weight` etc. are their transposes.
 *
 * The forward pass is one QKV product, the fused `rotaryEmbedding` of q and k, the fused
 * `causalAttention` of `@moepp/tensors-core` (scores, causal softmax and weighted values of every head,
 * with the heads merged), and the output product; with native acceleration the two fused ops are one
 * kernel each way.
 */
export class CausalSelfAttention {
  /** `[D, D]` query projection. */
  readonly qProj: tf.Variable;
  /** `[D, D]` key projection. */
  readonly kProj: tf.Variable;
  /** `[D, D]` value projection. */
  readonly vProj: tf.Variable;
  /** `[D, D]` output projection. */
  readonly oProj: tf.Variable;
  /** hd = D / H. */
  readonly headDim: number;
  private readonly ropeTheta: number;
  private tables: { seqLen: number; cos: tf.Tensor2D; sin: tf.Tensor2D } | null = null; // cos, sin: [T, hd/2]

  /**
   * @param config - widths and heads, see {@link AttentionConfig}
   * @param rng - draws the initial weights
   * @throws `ConfigError` when H does not divide D or D/H is odd
   */
  constructor(
    readonly config: AttentionConfig,
    rng: SeededRandom,
  ) {
    const op = 'CausalSelfAttention';
    const d = checkNumber(op, 'hiddenSize', config.hiddenSize, { integer: true, min: 2 });
    const h = checkNumber(op, 'numHeads', config.numHeads, { integer: true, min: 1 });
    if (d % h !== 0 || (d / h) % 2 !== 0) {
      throw new ConfigError(`${op}: 'numHeads' must divide hiddenSize ${d} into an even head width, got ${h}`);
    }
    this.headDim = d / h;
    this.ropeTheta = checkNumber(op, 'ropeTheta', config.ropeTheta ?? 10000, { greaterThan: 0 });
    const std = checkNumber(op, 'initializerRange', config.initializerRange ?? 0.02, { min: 0 });
    const init = () => tf.tidy(() => tf.variable(randomNormal([d, d], rng, std), true));
    this.qProj = init();
    this.kProj = init();
    this.vProj = init();
    this.oProj = init();
  }

  private tablesFor(seqLen: number) {
    if (this.tables?.seqLen !== seqLen) {
      if (this.tables) tf.dispose([this.tables.cos, this.tables.sin]);
      // [T, hd/2]: the two halves of rotaryTables' [T, hd] rows are equal; rotaryEmbedding takes one.
      const [cos, sin] = tf.tidy(() => {
        const full = rotaryTables(seqLen, this.headDim, this.ropeTheta);
        return [full.cos, full.sin].map((table) => table.slice([0, 0], [seqLen, this.headDim / 2])) as [tf.Tensor2D, tf.Tensor2D];
      });
      // Kept: the tables outlive any tf.tidy the first call happens in.
      this.tables = { seqLen, cos: tf.keep(cos), sin: tf.keep(sin) };
    }
    return this.tables;
  }

  /**
   * @param x - `[B, T, D]` float32
   * @returns `[B, T, D]`
   * @throws `ShapeError` when the last axis is not D
   */
  apply(x: tf.Tensor3D): tf.Tensor3D {
    checkShape('CausalSelfAttention.apply', 'x', x, [null, null, this.config.hiddenSize]);
    const [batch, seqLen, width] = x.shape;
    const heads = this.config.numHeads;
    const { cos, sin } = this.tablesFor(seqLen);
    return tf.tidy(() => {
      const flat = x.reshape([batch * seqLen, width]); // [B·T, D]
      // One product for the three projections: columns [0, D) are q, [D, 2D) k, [2D, 3D) v.
      const qkvWeight = tf.concat([this.qProj, this.kProj, this.vProj], 1); // [D, 3D]
      const qkv = tf.matMul(flat, qkvWeight) // [B·T, 3D]
        .reshape([batch, seqLen, 3 * heads, this.headDim]) // [B, T, 3H, hd]: heads of q, then k, then v
        .transpose([0, 2, 1, 3]) as tf.Tensor4D; // [B, 3H, T, hd]
      const [queryKey, v] = tf.split(qkv, [2 * heads, heads], 1) as [tf.Tensor4D, tf.Tensor4D]; // [B, 2H, T, hd], [B, H, T, hd]
      // The rotation depends on the position only, so q and k are rotated as one tensor.
      const [q, k] = tf.split(rotaryEmbedding(queryKey, cos, sin), 2, 1) as [tf.Tensor4D, tf.Tensor4D]; // each [B, H, T, hd]
      // softmax(q·kᵀ/√hd) over the keys up to each query, times v: [B, T, H, hd], heads side by side
      const context = causalAttention(q, k, v).reshape([batch * seqLen, width]); // [B·T, D]: heads merged
      return tf.matMul(context, this.oProj).reshape([batch, seqLen, width]) as tf.Tensor3D;
    });
  }

  /** The four projections, `[in, out]`. */
  get variables(): tf.Variable[] {
    return [this.qProj, this.kProj, this.vProj, this.oProj];
  }

  /** Frees the weights and the cached position tables. */
  dispose(): void {
    tf.dispose(this.variables);
    if (this.tables) tf.dispose([this.tables.cos, this.tables.sin]);
    this.tables = null;
  }
}
