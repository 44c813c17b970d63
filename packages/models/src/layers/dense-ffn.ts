import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkShape, randomNormal, type SeededRandom } from '@moepp/tensors-core';

/**
 * The dense LLaMA MLP of a non-MoE block: `down(silu(x·gate) ⊙ (x·up))`, no biases, as the official
 * `MLP` class (`gate_proj`, `up_proj`, `down_proj`). Weights are tfjs `[in, out]`.
 */
export class DenseFfn {
  /** `[D, F]`, the official `gate_proj` transposed. */
  readonly gateProj: tf.Variable;
  /** `[D, F]`, the official `up_proj` transposed. */
  readonly upProj: tf.Variable;
  /** `[F, D]`, the official `down_proj` transposed. */
  readonly downProj: tf.Variable;

  /**
   * @param dim - D
   * @param ffnDim - F
   * @param rng - draws the initial weights (normal, std `initializerRange`)
   * @param initializerRange - the std (official `initializer_range`, default 0.02)
   * @throws `ConfigError` for non-positive sizes
   */
  constructor(
    readonly dim: number,
    readonly ffnDim: number,
    rng: SeededRandom,
    initializerRange = 0.02,
  ) {
    checkNumber('DenseFfn', 'dim', dim, { integer: true, min: 1 });
    checkNumber('DenseFfn', 'ffnDim', ffnDim, { integer: true, min: 1 });
    this.gateProj = tf.tidy(() => tf.variable(randomNormal([dim, ffnDim], rng, initializerRange), true));
    this.upProj = tf.tidy(() => tf.variable(randomNormal([dim, ffnDim], rng, initializerRange), true));
    this.downProj = tf.tidy(() => tf.variable(randomNormal([ffnDim, dim], rng, initializerRange), true));
  }

  /**
   * @param x - `[N, D]`
   * @returns `[N, D]`
   * @throws `ShapeError` when x is not `[N, D]`
   */
  apply(x: tf.Tensor2D): tf.Tensor2D {
    checkShape('DenseFfn.apply', 'x', x, [null, this.dim]);
    return tf.tidy(() => {
      const gate = tf.matMul(x, this.gateProj); // [N, F]
      const up = tf.matMul(x, this.upProj); // [N, F]
      return tf.matMul(tf.mul(tf.mul(gate, tf.sigmoid(gate)), up), this.downProj) as tf.Tensor2D;
    });
  }

  /** Forward FLOPs per token: three `D×F` matmuls plus the elementwise SwiGLU (~4F). */
  flopsPerToken(): number {
    return 3 * 2 * this.dim * this.ffnDim + 4 * this.ffnDim;
  }

  /** The three weights. */
  get variables(): tf.Variable[] {
    return [this.gateProj, this.upProj, this.downProj];
  }

  /** Frees the weights. */
  dispose(): void {
    tf.dispose(this.variables);
  }
}
