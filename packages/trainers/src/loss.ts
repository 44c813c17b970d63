/**
 * The training loss of a decoder LM with MoE / MoE++ layers (moepp.md §3, paper Eq. 9):
 *
 *     L = L_ce + β · Σ_l L_b^l + w_z · Σ_l L_z^l
 *
 * - `L_ce`: mean next-token cross-entropy over the real (unmasked) tokens, from a log-softmax in float32:
 *   `ce_n = logsumexp(logits_n) − logits_n[target_n]`.
 * - `L_b^l`: layer l's load-balance loss as its router reports it (`auxLosses.loadBalance`: the
 *   heterogeneous loss of Eq. 7–8 with τ for MoE++, plain balance for a vanilla MoE), summed over MoE
 *   layers; β = 0.01 (paper).
 * - `L_z^l`: the router z-loss (ST-MoE, Zoph et al. 2022, Eq. 5; `auxLosses.zLoss`). The MoE++ paper
 *   does not use one, so its weight defaults to 0; ST-MoE uses 1e-3.
 *
 * A dense model has no MoE layers: both sums are 0. Every term is returned, unweighted, for logging.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkShape, checkShapes, softmaxCrossEntropy } from '@moepp/tensors-core';
import type { LMOutput } from '@moepp/models';

/** Weights of the auxiliary terms. */
export interface LossConfig {
  /** β, weight of the summed load-balance losses. Default 0.01 (MoE++ paper, Eq. 9). */
  readonly balanceWeight: number;
  /** Weight of the summed router z-losses. Default 0 (the MoE++ paper uses none; ST-MoE: 1e-3). */
  readonly zLossWeight: number;
}

/** Defaults of {@link LossConfig}. */
export const DEFAULT_LOSS: LossConfig = Object.freeze({ balanceWeight: 0.01, zLossWeight: 0 });

/**
 * Resolves and validates loss weights.
 *
 * @param input - any subset of the fields
 * @param op - the caller, for error messages
 * @returns the complete, frozen config
 * @throws `ConfigError` for a negative or non-finite weight
 */
export function resolveLossConfig(input: Partial<LossConfig> = {}, op = 'LossConfig'): LossConfig {
  const merged = { ...DEFAULT_LOSS, ...input };
  return Object.freeze({
    balanceWeight: checkNumber(op, 'balanceWeight', merged.balanceWeight, { min: 0 }),
    zLossWeight: checkNumber(op, 'zLossWeight', merged.zLossWeight, { min: 0 }),
  });
}

/** The terms of {@link languageModelLoss}: scalar float32 tensors owned by the caller. */
export interface LossTerms {
  /** `L_ce + β·loadBalance + w_z·zLoss`, what the gradient is taken of. */
  readonly total: tf.Scalar;
  /** Mean next-token cross-entropy over real tokens, nats. */
  readonly crossEntropy: tf.Scalar;
  /** Σ over MoE layers of the unweighted load-balance loss (0 for a dense model). */
  readonly loadBalance: tf.Scalar;
  /** Σ over MoE layers of the unweighted router z-loss (0 for a dense model). */
  readonly zLoss: tf.Scalar;
}

/**
 * Per-token cross-entropy from logits, computed as `logsumexp(logits) − logits[target]` in float32 by
 * `softmaxCrossEntropy` of `@moepp/tensors-core`: fused (one native kernel forward, one backward) with
 * native acceleration on wasm, the composite tfjs ops otherwise.
 *
 * @param logits - `[N, V]` float32
 * @param targets - `[N]` int32 target ids in `[0, V)` (not checked on the device without acceleration:
 *   validate ids on the host; with it, an id out of range throws a `RangeError` naming its row)
 * @returns `[N]` float32, nats
 * @throws `ShapeError` for mismatched shapes or dtypes
 */
export function tokenCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D): tf.Tensor1D {
  checkShapes('tokenCrossEntropy', { logits: [logits, ['N', 'V'], 'float32'], targets: [targets, ['N'], 'int32'] });
  return softmaxCrossEntropy(logits, targets);
}

/**
 * Mean next-token cross-entropy over the real tokens.
 *
 * @param logits - `[B, T, V]` float32
 * @param targets - `[B, T]` int32
 * @param tokenMask - `[B, T]` float32, 1 for tokens that count, 0 for ignored ones; default all 1
 * @returns scalar float32: `Σ mask·ce / max(Σ mask, 1)`
 * @throws `ShapeError` for mismatched shapes or dtypes
 */
export function crossEntropyLoss(logits: tf.Tensor3D, targets: tf.Tensor2D, tokenMask?: tf.Tensor2D): tf.Scalar {
  checkShapes('crossEntropyLoss', {
    logits: [logits, ['B', 'T', 'V'], 'float32'],
    targets: [targets, ['B', 'T'], 'int32'],
    ...(tokenMask ? { tokenMask: [tokenMask, ['B', 'T'], 'float32'] as const } : {}),
  });
  const [batch, seqLen, vocabSize] = logits.shape;
  const numTokens = batch * seqLen;
  return tf.tidy(() => {
    const losses = tokenCrossEntropy(logits.reshape([numTokens, vocabSize]), targets.reshape([numTokens])); // [N]
    if (!tokenMask) return tf.mean(losses) as tf.Scalar;
    const mask = tokenMask.reshape([numTokens]); // [N]
    return tf.div(tf.sum(tf.mul(losses, mask)), tf.maximum(tf.sum(mask), 1)) as tf.Scalar;
  });
}

/** The part of a model's output the loss reads: logits and each MoE layer's aux losses. */
export type LossInput = {
  /** `[B, T, V]` float32 next-token logits. */
  readonly logits: LMOutput['logits'];
  /** Per MoE layer, its unweighted aux losses (`loadBalance`, `zLoss`; other keys are ignored). */
  readonly moeLayers: readonly {
    /** Scalar float32 losses by name. */
    readonly auxLosses: Readonly<Record<string, tf.Scalar>>;
  }[];
};

/**
 * The full training loss and its terms.
 *
 * @param output - the model's output (`logits [B, T, V]`, `moeLayers[].auxLosses`)
 * @param targets - `[B, T]` int32 next-token targets
 * @param config - loss weights (β, z-loss weight)
 * @param tokenMask - `[B, T]` float32 mask for the cross-entropy (pass the same mask to the model's
 *   forward so that the aux losses ignore those tokens too); default all 1
 * @returns the total and each unweighted term, scalar float32 tensors owned by the caller
 * @throws `ShapeError` for mismatched shapes or dtypes
 */
export function languageModelLoss(
  output: LossInput,
  targets: tf.Tensor2D,
  config: LossConfig = DEFAULT_LOSS,
  tokenMask?: tf.Tensor2D,
): LossTerms {
  checkShape('languageModelLoss', 'targets', targets, [output.logits.shape[0], output.logits.shape[1]], 'int32');
  const crossEntropy = crossEntropyLoss(output.logits, targets, tokenMask);
  const [loadBalance, zLoss] = tf.tidy(() => {
    const sumOf = (key: string): tf.Scalar => {
      const terms = output.moeLayers.flatMap((layer) => (layer.auxLosses[key] ? [layer.auxLosses[key] as tf.Scalar] : []));
      return terms.length === 0 ? tf.scalar(0) : (tf.addN(terms) as tf.Scalar);
    };
    return [sumOf('loadBalance'), sumOf('zLoss')];
  }) as [tf.Scalar, tf.Scalar];
  const total = tf.tidy(
    () => tf.add(tf.add(crossEntropy, tf.mul(loadBalance, config.balanceWeight)), tf.mul(zLoss, config.zLossWeight)) as tf.Scalar,
  );
  return { total, crossEntropy, loadBalance, zLoss };
}
