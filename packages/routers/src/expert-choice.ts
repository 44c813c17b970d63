/**
 * Expert-choice routing (Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing", §3.1):
 * experts pick tokens instead of tokens picking experts.
 *
 *     S = Softmax(X·W_g)            [N, E] token-to-expert affinities (softmax over experts)
 *     G, I = TopK(Sᵀ, C)            each expert takes its C highest-scoring tokens
 *     C = ceil(c · N / E)           c = capacity factor, the average number of experts per token
 *
 * **Output layout.** To fit the token-choice {@link RouterOutput} record, the router reports `K = E`
 * slots per token: slot `e` is expert `e` (`expertIndices[n, e] = e`), `keepMask[n, e] = 1` when
 * expert `e` picked token `n`, and `combineWeights[n, e] = S[n, e]` there, 0 elsewhere. A token can be
 * picked by any number of experts, including none (it then passes on through the residual).
 *
 * **Causality caveat.** Each expert ranks all `N` tokens of the batch, so whether token `t` is routed
 * depends on tokens after `t`. In a causal decoder this leaks future tokens into the present during
 * training, and the routing cannot be reproduced token by token at generation time. Use it for
 * encoders, or accept the leak knowingly.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, type ExpertKind, type SeededRandom } from '@moepp/tensors-core';
import {
  checkExpertKinds,
  checkPositiveInteger,
  checkRouteInputs,
  createWeight,
  detach,
  oneHotFloat,
  tidyRecord,
} from './common.js';
import { routerZLoss } from './losses.js';
import { computeRoutingStats } from './stats.js';
import type { RouteOptions, Router, RouterOutput } from './types.js';

/** Configuration of an {@link ExpertChoiceRouter}. */
export interface ExpertChoiceRouterConfig {
  /** `D`, the token width. */
  readonly dim: number;
  /** `E`, the number of experts. */
  readonly numExperts: number;
  /**
   * `c >= 0`: each expert takes `C = min(N, ceil(c·N/E))` tokens, so a token sees `c` experts on average.
   * 0 is a value (no token is routed). Default 2 (the paper's EC-CF2).
   */
  readonly capacityFactor?: number;
  /** The kind of each expert (for the FFN-per-token statistic). Default all `'ffn'`. */
  readonly expertKinds?: readonly ExpertKind[];
  /** Std of the normal initialisation of `W_g`. Default 0.02. */
  readonly initializerRange?: number;
  /** Generator for the initial weights. */
  readonly rng: SeededRandom;
}

/**
 * Expert-choice router (see the module notes for the output layout and the causality caveat).
 * Weights `{ wg: [D, E] }`. Aux losses: `zLoss` only (expert choice is balanced by construction).
 * `topK` is `E`.
 */
export class ExpertChoiceRouter implements Router {
  readonly numExperts: number;
  /** `E`: one slot per expert (see the module notes). */
  readonly topK: number;
  /** `D`, the token width. */
  readonly dim: number;
  /** `c`, see {@link ExpertChoiceRouterConfig.capacityFactor}. */
  readonly capacityFactor: number;
  /** The kind of each expert. */
  readonly expertKinds: readonly ExpertKind[];
  readonly weights: Readonly<{
    /** `[D, E]` gate weight `W_g`. */
    wg: tf.Variable;
  }>;

  /**
   * @param config - see {@link ExpertChoiceRouterConfig}
   * @throws ConfigError for a bad size, a negative capacity factor or `expertKinds` of the wrong length
   */
  constructor(config: ExpertChoiceRouterConfig) {
    const op = 'ExpertChoiceRouter';
    this.dim = checkPositiveInteger(op, 'dim', config.dim);
    this.numExperts = checkPositiveInteger(op, 'numExperts', config.numExperts);
    this.topK = this.numExperts;
    this.capacityFactor = checkNumber(op, 'capacityFactor', config.capacityFactor ?? 2, { min: 0 });
    this.expertKinds = checkExpertKinds(op, config.expertKinds, this.numExperts);
    const std = checkNumber(op, 'initializerRange', config.initializerRange ?? 0.02, { min: 0 });
    this.weights = { wg: createWeight([this.dim, this.numExperts], config.rng, std) };
  }

  /**
   * The number of tokens each expert takes from a batch of `numTokens`.
   *
   * @param numTokens - `N`
   * @returns `C = min(N, ceil(c·N/E))`
   */
  expertCapacity(numTokens: number): number {
    return Math.min(numTokens, Math.ceil((this.capacityFactor * numTokens) / this.numExperts));
  }

  /**
   * Routes `[N, D]` tokens. See {@link Router.route} and the module notes.
   *
   * @param x - `[N, D]` float32
   * @param options - `tokenMask` (padding is picked last and never kept) and `auxiliary` (false: no
   *   `zLoss`) are honoured; the rest is ignored
   * @returns the routing decision with `K = E`; the caller owns its tensors
   * @throws ShapeError for a mis-shaped `x` or `tokenMask`
   */
  route(x: tf.Tensor2D, options: RouteOptions = {}): RouterOutput {
    const numTokens = checkRouteInputs('ExpertChoiceRouter.route', x, this.dim, this.numExperts, options);
    const capacity = this.expertCapacity(numTokens);
    return tidyRecord(() => {
      const logits = tf.matMul(x, this.weights.wg) as tf.Tensor2D; // [N, E]
      const probabilities = tf.softmax(logits) as tf.Tensor2D; // [N, E] S
      const realTokens = options.tokenMask ?? (tf.ones([numTokens]) as tf.Tensor1D); // [N]

      let picked: tf.Tensor2D; // [N, E] 1 where expert e picked token n
      if (capacity === 0) {
        picked = tf.zeros([numTokens, this.numExperts]);
      } else {
        // Padding scores -1 (below every probability), so experts take it only when out of real tokens.
        const scores = tf.sub(tf.mul(detach(probabilities), tf.expandDims(realTokens, 1)), tf.expandDims(tf.sub(1, realTokens), 1)); // [N, E]
        const chosenTokens = tf.topk(tf.transpose(scores), capacity).indices; // [E, C] int32
        const chosen = tf.sum(oneHotFloat(chosenTokens, numTokens), 1); // [E, N]
        picked = tf.mul(tf.transpose(chosen), tf.expandDims(realTokens, 1)) as tf.Tensor2D;
      }
      const expertIndices = tf.tile(tf.expandDims(tf.range(0, this.numExperts, 1, 'int32'), 0), [numTokens, 1]) as tf.Tensor2D; // [N, E]
      const combineWeights = tf.mul(probabilities, picked) as tf.Tensor2D; // [N, E] G
      const stats = computeRoutingStats({
        expertIndices,
        keepMask: picked,
        probabilities,
        expertKinds: this.expertKinds,
        ...(options.tokenMask ? { tokenMask: options.tokenMask } : {}),
        choice: 'expert',
      });
      return {
        expertIndices,
        combineWeights,
        keepMask: picked,
        logits,
        probabilities,
        auxLosses: (options.auxiliary ?? true) ? { zLoss: routerZLoss(logits, options.tokenMask) } : ({} as Record<string, tf.Scalar>),
        stats,
        expertInputScale: 1,
      };
    });
  }

  /** Disposes the router's variables. */
  dispose(): void {
    this.weights.wg.dispose();
  }
}
