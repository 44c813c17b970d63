/**
 * Token-choice top-k routing with a linear gate: each token picks its `K` best experts.
 *
 * Two gatings:
 * - `softmax-topk`: `p = softmax(x·W)` over all `E` experts, keep the top `K` of `p`; with
 *   `normalizeTopK` the kept gates are divided by their sum (GShard top-2), without it they are the raw
 *   probabilities (Switch Transformer; MoE++ paper Eq. 1).
 * - `topk-softmax`: top `K` of the logits, softmax over those `K` only (Mixtral). This equals
 *   `softmax-topk` with `normalizeTopK`.
 */
import * as tf from '@tensorflow/tfjs';
import { checkOneOf, type ExpertKind, type SeededRandom } from '@moepp/tensors-core';
import type { CapacityConfig, CapacityPriority } from './capacity.js';
import { checkRouteInputs, createWeight, selectTopK, tidyRecord } from './common.js';
import { routerZLoss, switchLoadBalanceLoss } from './losses.js';
import { finishTokenChoice, resolveTokenChoiceConfig } from './token-choice.js';
import type { RouteOptions, Router, RouterOutput } from './types.js';

/** The gatings {@link TopKRouter} offers. */
export type TopKGating = 'softmax-topk' | 'topk-softmax';

/** The accepted {@link TopKGating} values. */
export const TOP_K_GATINGS: readonly TopKGating[] = ['softmax-topk', 'topk-softmax'];

/** Configuration of a {@link TopKRouter}. */
export interface TopKRouterConfig {
  /** `D`, the token width. */
  readonly dim: number;
  /** `E`, the number of experts. */
  readonly numExperts: number;
  /** `K`, experts per token, in `[1, E]`. Default 2. */
  readonly topK?: number;
  /** See {@link TopKGating}. Default `'softmax-topk'`. */
  readonly gating?: TopKGating;
  /**
   * `softmax-topk` only: divide the `K` kept probabilities by their sum. Default `false` (Switch keeps raw
   * probabilities; with K = 1 renormalising would make every gate 1 and cut the router's gradient).
   */
  readonly normalizeTopK?: boolean;
  /** The kind of each expert (for the FFN-per-token statistic). Default all `'ffn'`. */
  readonly expertKinds?: readonly ExpertKind[];
  /** Expert capacity. Default `{ mode: 'dropless' }`. */
  readonly capacity?: CapacityConfig;
  /** Who wins when an expert overflows. Default `'slot-major'`. */
  readonly capacityPriority?: CapacityPriority;
  /** Std of the normal initialisation of `W`. Default 0.02 (the official MoE++ `initializer_range`). */
  readonly initializerRange?: number;
  /** Generator for the initial weights. */
  readonly rng: SeededRandom;
}

/**
 * Token-choice top-k router. Weights: `{ wg: [D, E] }` (tfjs `[in, out]`; a PyTorch `Linear` weight is
 * the transpose). Aux losses: `loadBalance` ({@link switchLoadBalanceLoss}) and `zLoss`
 * ({@link routerZLoss}).
 */
export class TopKRouter implements Router {
  readonly numExperts: number;
  readonly topK: number;
  /** `D`, the token width. */
  readonly dim: number;
  /** See {@link TopKRouterConfig.gating}. */
  readonly gating: TopKGating;
  /** See {@link TopKRouterConfig.normalizeTopK}. */
  readonly normalizeTopK: boolean;
  /** The kind of each expert. */
  readonly expertKinds: readonly ExpertKind[];
  /** The validated capacity config. */
  readonly capacity: CapacityConfig;
  /** Who wins when an expert overflows. */
  readonly capacityPriority: CapacityPriority;
  readonly weights: Readonly<{
    /** `[D, E]` gate weight `W`. */
    wg: tf.Variable;
  }>;

  /**
   * @param config - see {@link TopKRouterConfig}
   * @throws ConfigError for a bad size, `topK` outside `[1, E]`, an unknown gating or capacity mode,
   *   a negative capacity factor or `expertKinds` of the wrong length
   */
  constructor(config: TopKRouterConfig) {
    const op = 'TopKRouter';
    const common = resolveTokenChoiceConfig(op, config);
    this.dim = common.dim;
    this.numExperts = common.numExperts;
    this.topK = common.topK;
    this.expertKinds = common.expertKinds;
    this.capacity = common.capacity;
    this.capacityPriority = common.capacityPriority;
    this.gating = checkOneOf(op, 'gating', config.gating ?? 'softmax-topk', TOP_K_GATINGS);
    this.normalizeTopK = config.normalizeTopK ?? false;
    this.weights = { wg: createWeight([this.dim, this.numExperts], config.rng, common.initializerRange) };
  }

  /**
   * Routes `[N, D]` tokens. See {@link Router.route}.
   *
   * @param x - `[N, D]` float32
   * @param options - `tokenMask` and `auxiliary` (false: no `loadBalance` / `zLoss`) are honoured;
   *   `training`, `rng` and `previousLogits` have no effect
   * @returns the routing decision; the caller owns its tensors
   * @throws ShapeError for a mis-shaped `x` or `tokenMask`
   */
  route(x: tf.Tensor2D, options: RouteOptions = {}): RouterOutput {
    checkRouteInputs('TopKRouter.route', x, this.dim, this.numExperts, options);
    return tidyRecord(() => {
      const logits = tf.matMul(x, this.weights.wg) as tf.Tensor2D; // [N, E] float32
      const probabilities = tf.softmax(logits) as tf.Tensor2D; // [N, E]
      const top = selectTopK(this.gating === 'topk-softmax' ? logits : probabilities, this.topK);
      const { indices: expertIndices, selection } = top; // [N, K] int32, [N, K, E] float32 one-hot (shared)
      let gates: tf.Tensor2D; // [N, K]
      if (this.gating === 'topk-softmax') {
        gates = tf.softmax(top.values) as tf.Tensor2D;
      } else {
        gates = this.normalizeTopK ? (tf.div(top.values, tf.sum(top.values, 1, true)) as tf.Tensor2D) : top.values;
      }
      const auxLosses: Record<string, tf.Scalar> =
        (options.auxiliary ?? true)
          ? {
              loadBalance: switchLoadBalanceLoss(probabilities, expertIndices, options.tokenMask, selection),
              zLoss: routerZLoss(logits, options.tokenMask),
            }
          : {};
      return finishTokenChoice(
        { logits, probabilities, expertIndices, selection, gates, auxLosses },
        {
          expertKinds: this.expertKinds,
          topK: this.topK,
          capacity: this.capacity,
          capacityPriority: this.capacityPriority,
          tokenMask: options.tokenMask,
          expertInputScale: 1,
        },
      );
    });
  }

  /** Disposes the router's variables. */
  dispose(): void {
    this.weights.wg.dispose();
  }
}
