/**
 * Gradient clipping by global norm (Pascanu et al. 2013; PyTorch's `clip_grad_norm_`): all gradients are
 * scaled by one factor so that their joint L2 norm is at most `maxNorm`. The MoE++ paper clips at 1.0.
 *
 *     norm  = √(Σ_i Σ_j g_ij²)                       over every gradient tensor i
 *     scale = min(1, maxNorm / (norm + 1e-6))        (PyTorch's epsilon)
 *     g_i  <- scale · g_i
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber } from '@moepp/tensors-core';

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
 * The global L2 norm of several tensors, computed in float32 and read back.
 *
 * @param tensors - any float tensors (not disposed)
 * @returns `√(Σ all squared elements)`; 0 for an empty list
 */
export function globalNorm(tensors: readonly tf.Tensor[]): number {
  if (tensors.length === 0) return 0;
  return tf.tidy(() => tf.sqrt(tf.addN(tensors.map((t) => tf.sum(tf.square(t))))).dataSync()[0] as number);
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
  const scale = maxNorm !== null && Number.isFinite(norm) ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
  const clipped = gradients.map((g) => (scale === 1 ? tf.clone(g) : tf.tidy(() => tf.mul(g, scale))));
  return { gradients: clipped, norm, scale };
}
