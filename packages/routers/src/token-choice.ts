/**
 * The tail every token-choice router shares: capacity, combine weights, statistics. Internal.
 */
import * as tf from '@tensorflow/tfjs';
import type { ExpertKind } from '@moepp/tensors-core';
import { capacityKeepMask, expertCapacities, type CapacityConfig, type CapacityPriority } from './capacity.js';
import { computeRoutingStats } from './stats.js';
import type { RouterOutput } from './types.js';

/** What a token-choice router has decided before capacity. */
export interface TokenChoiceDecision {
  /** `[N, E]` float32, returned as {@link RouterOutput.logits}. */
  readonly logits: tf.Tensor2D;
  /** `[N, E]` float32 softmax over all experts. */
  readonly probabilities: tf.Tensor2D;
  /** `[N, K]` int32. */
  readonly expertIndices: tf.Tensor2D;
  /** `[N, K]` float32 gates before capacity (differentiable). */
  readonly gates: tf.Tensor2D;
  /** Unweighted aux losses. */
  readonly auxLosses: Readonly<Record<string, tf.Scalar>>;
}

/** Settings the tail needs. */
export interface TokenChoiceSettings {
  readonly expertKinds: readonly ExpertKind[];
  readonly topK: number;
  readonly capacity: CapacityConfig;
  readonly capacityPriority: CapacityPriority;
  readonly tokenMask: tf.Tensor1D | undefined;
  readonly expertInputScale: number;
}

/**
 * Applies capacity and padding to a token-choice decision and computes the statistics.
 * Call inside a tidy.
 *
 * @param decision - the router's decision
 * @param settings - capacity, kinds, mask
 * @returns the full router output
 */
export function finishTokenChoice(decision: TokenChoiceDecision, settings: TokenChoiceSettings): RouterOutput {
  const numTokens = decision.expertIndices.shape[0];
  const capacities = expertCapacities(settings.capacity, numTokens, settings.topK, settings.expertKinds);
  const keepMask = capacityKeepMask(decision.expertIndices, settings.expertKinds.length, capacities, {
    ...(settings.tokenMask ? { tokenMask: settings.tokenMask } : {}),
    priority: settings.capacityPriority,
  }); // [N, K]
  const combineWeights = tf.mul(decision.gates, keepMask) as tf.Tensor2D; // [N, K]
  const stats = computeRoutingStats({
    expertIndices: decision.expertIndices,
    keepMask,
    probabilities: decision.probabilities,
    expertKinds: settings.expertKinds,
    ...(settings.tokenMask ? { tokenMask: settings.tokenMask } : {}),
    choice: 'token',
  });
  return {
    expertIndices: decision.expertIndices,
    combineWeights,
    keepMask,
    logits: decision.logits,
    probabilities: decision.probabilities,
    auxLosses: decision.auxLosses,
    stats,
    expertInputScale: settings.expertInputScale,
  };
}
