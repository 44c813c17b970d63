import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkShape, rmsNorm } from '@moepp/tensors-core';

/**
 * RMSNorm (Zhang & Sennrich 2019), as LLaMA and the official MoE++ code use it:
 * `y = weight · x / sqrt(mean(x²) + eps)`, computed in float32.
 */
export class RmsNorm {
  /** `[D]` float32, initialised to ones. */
  readonly weight: tf.Variable;

  /**
   * @param dim - D
   * @param eps - added to the mean square (official `rms_norm_eps`, default 1e-6)
   * @throws `ConfigError` for a non-positive dim or a negative eps
   */
  constructor(
    readonly dim: number,
    readonly eps = 1e-6,
  ) {
    checkNumber('RmsNorm', 'dim', dim, { integer: true, min: 1 });
    checkNumber('RmsNorm', 'eps', eps, { min: 0 });
    this.weight = tf.tidy(() => tf.variable(tf.ones([dim]), true));
  }

  /**
   * @param x - `[..., D]`
   * @returns `[..., D]`, normalised and scaled
   * @throws `ShapeError` when the last axis is not D
   */
  apply(x: tf.Tensor): tf.Tensor {
    checkShape('RmsNorm.apply', 'x', { shape: x.shape.slice(-1) }, [this.dim]);
    // One fused kernel (and one for its gradient) with native acceleration, else square / mean /
    // rsqrt / mul (see @moepp/tensors-core's rmsNorm).
    return rmsNorm(x, this.weight, this.eps);
  }

  /** Frees the weight. */
  dispose(): void {
    this.weight.dispose();
  }
}
