/**
 * Routing statistics: kept load per expert, dropped assignments, FFN experts per token (the MoE++
 * paper's Fig. 5 quantity) and router entropy. Computed as tensors (no gradient is needed or kept:
 * they never feed a loss) and read to plain numbers with {@link readRoutingStats}.
 */
import * as tf from '@tensorflow/tfjs';
import { checkOneOf, checkShapes, type ExpertKind } from '@moepp/tensors-core';
import { kindIndicator, oneHotFloat } from './common.js';
import type { RouterOutput, RoutingStats } from './types.js';

/** Inputs of {@link computeRoutingStats}. */
export interface RoutingStatsInput {
  /** `[N, K]` int32 chosen experts (`K = E`, column e = expert e, for expert choice). */
  readonly expertIndices: tf.Tensor2D;
  /** `[N, K]` float32, 1 where the assignment was kept. */
  readonly keepMask: tf.Tensor2D;
  /** `[N, E]` float32 router softmax. */
  readonly probabilities: tf.Tensor2D;
  /** The kind of each of the `E` experts. */
  readonly expertKinds: readonly ExpertKind[];
  /** `[N]` float32, 1 = real token; padding is not counted. Optional. */
  readonly tokenMask?: tf.Tensor1D;
  /**
   * `'token'` (default): `droppedAssignments` counts assignments lost to capacity. `'expert'` (expert
   * choice): it counts real tokens that no expert picked.
   */
  readonly choice?: 'token' | 'expert';
  /**
   * `[N, K, E]` float32 one-hot of `expertIndices`, when the caller already has it (a router computes
   * it once per route call for its gates, loss and statistics). Optional: computed here otherwise.
   */
  readonly selection?: tf.Tensor3D;
}

/**
 * Computes {@link RoutingStats} for one routing decision.
 *
 * @param input - see {@link RoutingStatsInput}
 * @returns new tensors, owned by the caller
 * @throws ShapeError when the shapes disagree
 */
export function computeRoutingStats(input: RoutingStatsInput): RoutingStats {
  const numExperts = input.expertKinds.length;
  checkShapes('computeRoutingStats', {
    expertIndices: [input.expertIndices, ['N', 'K'], 'int32'],
    keepMask: [input.keepMask, ['N', 'K'], 'float32'],
    probabilities: [input.probabilities, ['N', numExperts], 'float32'],
    ...(input.tokenMask ? { tokenMask: [input.tokenMask, ['N'], 'float32'] as const } : {}),
    ...(input.selection ? { selection: [input.selection, ['N', 'K', numExperts], 'float32'] as const } : {}),
  });
  const choice = checkOneOf('computeRoutingStats', 'choice', input.choice ?? 'token', ['token', 'expert'] as const);
  return tf.tidy(() => {
    const numTokens = input.expertIndices.shape[0];
    const mask = input.tokenMask; // [N], or undefined: every token is real (fewer ops, same values)
    const realTokens = mask ? tf.maximum(tf.sum(mask), 1) : Math.max(numTokens, 1);
    const perToken = <T extends tf.Tensor>(values: T): T => (mask ? (tf.mul(values, mask.reshape([numTokens, ...values.shape.slice(1).map(() => 1)])) as T) : values);
    const kept = perToken(input.keepMask); // [N, K] real kept assignments
    const selection = input.selection ?? oneHotFloat(input.expertIndices, numExperts); // [N, K, E]
    const assignments = tf.mul(selection, tf.expandDims(kept, 2)); // [N, K, E]
    const tokensPerExpert = tf.sum(assignments, [0, 1]) as tf.Tensor1D; // [E]

    const droppedAssignments =
      choice === 'token'
        ? (tf.sum(perToken(tf.sub(1, input.keepMask))) as tf.Scalar)
        : (tf.sum(perToken(tf.cast(tf.equal(tf.sum(kept, 1), 0), 'float32'))) as tf.Scalar);

    const isFfn = kindIndicator(input.expertKinds, (kind) => kind === 'ffn'); // [E]
    const ffnExpertsPerToken = tf.div(tf.sum(tf.mul(tokensPerExpert, isFfn)), realTokens) as tf.Scalar;

    const probabilities = input.probabilities;
    const tokenEntropy = tf.neg(tf.sum(tf.mul(probabilities, tf.log(tf.maximum(probabilities, 1e-30))), 1)); // [N]
    const entropy = tf.div(tf.sum(perToken(tokenEntropy)), realTokens) as tf.Scalar;
    return { tokensPerExpert, droppedAssignments, ffnExpertsPerToken, entropy };
  });
}

/** {@link RoutingStats} as plain numbers. */
export interface RoutingStatsValues {
  /** Kept assignments per expert, length `E`. */
  readonly tokensPerExpert: number[];
  /** See {@link RoutingStats.droppedAssignments}. */
  readonly droppedAssignments: number;
  /** Mean kept FFN-expert assignments per real token. */
  readonly ffnExpertsPerToken: number;
  /** Mean router entropy per real token, in nats. */
  readonly entropy: number;
}

/**
 * Reads routing statistics to plain numbers (does not dispose them).
 *
 * @param stats - from {@link RouterOutput.stats}
 * @returns the values
 */
export async function readRoutingStats(stats: RoutingStats): Promise<RoutingStatsValues> {
  const [tokensPerExpert, dropped, ffn, entropy] = await Promise.all([
    stats.tokensPerExpert.data(),
    stats.droppedAssignments.data(),
    stats.ffnExpertsPerToken.data(),
    stats.entropy.data(),
  ]);
  return {
    tokensPerExpert: Array.from(tokensPerExpert),
    droppedAssignments: dropped[0] as number,
    ffnExpertsPerToken: ffn[0] as number,
    entropy: entropy[0] as number,
  };
}

/**
 * Synchronous {@link readRoutingStats} (fine on cpu and wasm; blocks on GPU backends).
 *
 * @param stats - from {@link RouterOutput.stats}
 * @returns the values
 */
export function readRoutingStatsSync(stats: RoutingStats): RoutingStatsValues {
  return {
    tokensPerExpert: Array.from(stats.tokensPerExpert.dataSync()),
    droppedAssignments: stats.droppedAssignments.dataSync()[0] as number,
    ffnExpertsPerToken: stats.ffnExpertsPerToken.dataSync()[0] as number,
    entropy: stats.entropy.dataSync()[0] as number,
  };
}
