/**
 * What every token-choice router shares: the common part of its config (validated once, here) and the
 * tail of its route call (capacity, combine weights, statistics). Internal.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkOneOf, type ExpertKind } from '@moepp/tensors-core';
import {
  capacityKeepMask,
  checkCapacityConfig,
  CAPACITY_PRIORITIES,
  expertCapacities,
  type CapacityConfig,
  type CapacityPriority,
} from './capacity.js';
import { checkExpertKinds, checkPositiveInteger, checkTopK } from './common.js';
import { computeRoutingStats } from './stats.js';
import type { RouterOutput, RoutingStats } from './types.js';

/** The config fields every token-choice router has, as given (see e.g. `TopKRouterConfig`). */
export interface TokenChoiceConfigInput {
  readonly dim: number;
  readonly numExperts: number;
  readonly topK?: number;
  readonly expertKinds?: readonly ExpertKind[];
  readonly capacity?: CapacityConfig;
  readonly capacityPriority?: CapacityPriority;
  readonly initializerRange?: number;
}

/** {@link TokenChoiceConfigInput} validated, defaults filled. */
export interface TokenChoiceConfig {
  /** `D`. */
  readonly dim: number;
  /** `E`. */
  readonly numExperts: number;
  /** `K` in `[1, E]`, default 2. */
  readonly topK: number;
  /** One kind per expert, default all `'ffn'`. */
  readonly expertKinds: readonly ExpertKind[];
  /** Default `{ mode: 'dropless' }`. */
  readonly capacity: CapacityConfig;
  /** Default `'slot-major'`. */
  readonly capacityPriority: CapacityPriority;
  /** Std of the normal initialisation of the router weights, >= 0, default 0.02. */
  readonly initializerRange: number;
}

/**
 * Validates the fields every token-choice router shares and fills their defaults.
 *
 * @param op - the router's name for errors, e.g. `'TopKRouter'`
 * @param config - the config given
 * @returns the validated fields
 * @throws ConfigError for a bad size, `topK` outside `[1, E]`, `expertKinds` of the wrong length, an
 *   unknown capacity mode or priority, a negative capacity factor or `initializerRange`
 */
export function resolveTokenChoiceConfig(op: string, config: TokenChoiceConfigInput): TokenChoiceConfig {
  const dim = checkPositiveInteger(op, 'dim', config.dim);
  const numExperts = checkPositiveInteger(op, 'numExperts', config.numExperts);
  return {
    dim,
    numExperts,
    topK: checkTopK(op, config.topK ?? 2, numExperts),
    expertKinds: checkExpertKinds(op, config.expertKinds, numExperts),
    capacity: checkCapacityConfig(op, config.capacity),
    capacityPriority: checkOneOf(op, 'capacityPriority', config.capacityPriority ?? 'slot-major', CAPACITY_PRIORITIES),
    initializerRange: checkNumber(op, 'initializerRange', config.initializerRange ?? 0.02, { min: 0 }),
  };
}

/** What a token-choice router has decided before capacity. */
export interface TokenChoiceDecision {
  /** `[N, E]` float32, returned as {@link RouterOutput.logits}. */
  readonly logits: tf.Tensor2D;
  /** `[N, E]` float32 softmax over all experts. */
  readonly probabilities: tf.Tensor2D;
  /** `[N, K]` int32. */
  readonly expertIndices: tf.Tensor2D;
  /** `[N, K, E]` float32 one-hot of `expertIndices` (from `selectTopK`), shared with the statistics. */
  readonly selection: tf.Tensor3D;
  /** `[N, K]` float32 gates before capacity (differentiable). */
  readonly gates: tf.Tensor2D;
  /** Unweighted aux losses, `{}` when the route call asked for none (`auxiliary: false`). */
  readonly auxLosses: Readonly<Record<string, tf.Scalar>>;
  /**
   * The routing statistics when the router already has them (computed on the host); only valid when
   * nothing is dropped (dropless, no token mask). Otherwise they are computed from the keep mask.
   */
  readonly stats?: RoutingStats;
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
  const stats = decision.stats ?? computeRoutingStats({
    expertIndices: decision.expertIndices,
    keepMask,
    probabilities: decision.probabilities,
    expertKinds: settings.expertKinds,
    ...(settings.tokenMask ? { tokenMask: settings.tokenMask } : {}),
    choice: 'token',
    selection: decision.selection,
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
