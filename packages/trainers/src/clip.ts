/**
 * Gradient clipping by global norm (Pascanu et al. 2013; PyTorch's `clip_grad_norm_`): all gradients are
 * scaled by one factor so that their joint L2 norm is at most `maxNorm`. The MoE++ paper clips at 1.0.
 *
 *     norm  = √(Σ_i Σ_j g_ij²)                       over every gradient tensor i
 *     scale = min(1, maxNorm / (norm + 1e-6))        (PyTorch's epsilon)
 *     g_i  <- scale · g_i
 *
 * The trainer measures the norm ({@link globalNorm}), takes the factor ({@link clipScale}) and hands it
 * to the AdamW update, which scales each gradient as it reads it; {@link clipByGlobalNorm} returns the
 * scaled gradients as tensors, for code that needs them.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, sumOfSquares } from '@moepp/tensors-core';

/** What {@link clipByGlobalNorm} returns. */
export interface ClippedGradients {
  /** The scaled gradients, in the input order; new tensors owned by the caller. */
  readonly gradients: tf.Tensor[];
  /** The global norm before clipping (what training logs report). Non-finite if a gradient is. */
  readonly norm: number;
  /** The factor applied: 1 when no clipping was needed, when clipping is off or when the norm is not finite. */
  readonly scale: number;
}

/**
 * The global L2 norm of several tensors, read back: `sumOfSquares` of `@moepp/tensors-core` (one native
 * pass accumulated in float64 when fused ops are active, float32 tfjs ops otherwise), then `√`.
 *
 * @param tensors - float32 tensors (not disposed)
 * @returns `√(Σ all squared elements)`; 0 for an empty list
 * @throws `ConfigError` for a tensor that is not float32
 */
export function globalNorm(tensors: readonly tf.Tensor[]): number {
  if (tensors.length === 0) return 0;
  return Math.sqrt(tf.tidy(() => sumOfSquares(tensors).dataSync()[0] as number));
}

/**
 * The clipping factor for a global norm: `min(1, maxNorm / (norm + 1e-6))`, or 1 when clipping is off
 * or the norm is not finite. Pass it to `AdamW.applyGradients` as `gradientScale` to clip without a
 * pass of its own over the gradients.
 *
 * @param norm - the global norm (see {@link globalNorm})
 * @param maxNorm - the largest allowed global norm (> 0), or `null` for no clipping
 * @returns the factor, in (0, 1]
 * @throws `ConfigError` when `maxNorm` is not a number > 0 or null
 */
export function clipScale(norm: number, maxNorm: number | null): number {
  if (maxNorm !== null) checkNumber('clipScale', 'maxNorm', maxNorm, { greaterThan: 0 });
  return maxNorm !== null && Number.isFinite(norm) ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
}

/**
 * Clips gradients by their global norm.
 *
 * @param gradients - the gradients (not disposed)
 * @param maxNorm - the largest allowed global norm (> 0), or `null` to only measure the norm
 * @returns the scaled gradients (new tensors), the pre-clip norm and the scale applied. A non-finite norm
 *   is returned as is with scale 1 (the gradients are copied unscaled; a trainer should stop on it)
 * @throws `ConfigError` when `maxNorm` is not a number > 0 or null
 */
export function clipByGlobalNorm(gradients: readonly tf.Tensor[], maxNorm: number | null): ClippedGradients {
  if (maxNorm !== null) checkNumber('clipByGlobalNorm', 'maxNorm', maxNorm, { greaterThan: 0 });
  const norm = globalNorm(gradients);
  const scale = clipScale(norm, maxNorm);
  const clipped = gradients.map((g) => (scale === 1 ? tf.clone(g) : tf.tidy(() => tf.mul(g, scale))));
  return { gradients: clipped, norm, scale };
}
