/**
 * The router contract every router of this package implements, and that the MoE / MoE++ layer in
 * `@moepp/models` is written against.
 *
 * Shape legend: `N` tokens, `D` model width, `E` experts, `K` experts per token (top-k).
 */
import type * as tf from '@tensorflow/tfjs';
import type { SeededRandom } from '@moepp/tensors-core';

/** Options of one {@link Router.route} call. */
export interface RouteOptions {
  /** Training mode: turns on router noise (noisy top-k). Default `false`. */
  readonly training?: boolean;
  /**
   * `[N, E]` float32: the previous MoE++ layer's {@link RouterOutput.logits}, for the gating residual
   * (arXiv 2410.07348, Eq. 6). `null` or absent for the first MoE++ layer. Routers without a gating
   * residual ignore it.
   */
  readonly previousLogits?: tf.Tensor2D | null;
  /**
   * `[N]` float32: 1 for a real token, 0 for padding. Padding tokens are excluded from the aux losses and
   * the statistics, never take expert capacity, and are dispatched nowhere (their `keepMask` and
   * `combineWeights` are 0, so the layer's output for them is 0 and they pass on through the residual).
   */
  readonly tokenMask?: tf.Tensor1D;
  /** Generator for the router noise (noisy top-k in training). Default: the router's own generator. */
  readonly rng?: SeededRandom;
  /**
   * Compute the aux losses ({@link RouterOutput.auxLosses}). Default `true`. Pass `false` where nothing
   * will be trained on them (generation, evaluation, speed benchmarks): the router then skips the loss
   * computation and returns `auxLosses` as an empty record `{}`, which a trainer reads as "no aux loss
   * for this layer" (never as a zero loss that was computed). Everything else is computed as usual,
   * statistics included.
   */
  readonly auxiliary?: boolean;
}

/**
 * Routing statistics, as tensors that carry no gradient. Read them with {@link readRoutingStats}.
 * Padding tokens (see {@link RouteOptions.tokenMask}) are not counted.
 */
export interface RoutingStats {
  /** `[E]` float32: kept assignments per expert (after capacity). */
  readonly tokensPerExpert: tf.Tensor1D;
  /**
   * Scalar float32. Token-choice routers: assignments dropped by the expert capacity. Expert choice:
   * real tokens that no expert picked (they pass on through the residual).
   */
  readonly droppedAssignments: tf.Scalar;
  /** Scalar float32: mean over real tokens of the number of kept assignments to `ffn` experts. */
  readonly ffnExpertsPerToken: tf.Scalar;
  /** Scalar float32: mean over real tokens of the entropy (nats) of {@link RouterOutput.probabilities}. */
  readonly entropy: tf.Scalar;
}

/**
 * What a router returns for a batch of `N` tokens. Every tensor is new and owned by the caller
 * (dispose them all with {@link disposeRouterOutput}).
 */
export interface RouterOutput {
  /**
   * `[N, K]` int32: the experts each token is sent to, slot order = gate order (largest first).
   * Expert choice uses `K = E` and column `e` is expert `e`.
   */
  readonly expertIndices: tf.Tensor2D;
  /**
   * `[N, K]` float32: the gate of each assignment, differentiable w.r.t. the router weights;
   * 0 where the assignment was dropped (see `keepMask`) or the token is padding.
   */
  readonly combineWeights: tf.Tensor2D;
  /** `[N, K]` float32: 1 where the assignment survived capacity (and the token is real), else 0. */
  readonly keepMask: tf.Tensor2D;
  /**
   * `[N, E]` float32: the routing logits *before* any per-token std normalisation. For the MoE++ router
   * this is `W x + W_g · previousLogits` (Eq. 6), what the next MoE++ layer's `gate_map` consumes.
   */
  readonly logits: tf.Tensor2D;
  /** `[N, E]` float32: the router's softmax over all experts (for aux losses and analyses). */
  readonly probabilities: tf.Tensor2D;
  /**
   * Scalar aux losses, UNWEIGHTED (the trainer multiplies by its own coefficients), e.g.
   * `{ loadBalance, zLoss }`. Padding tokens are masked out. An empty record `{}` when the call passed
   * {@link RouteOptions.auxiliary} `false`: a key is present exactly when its loss was computed.
   */
  readonly auxLosses: Readonly<Record<string, tf.Scalar>>;
  /** Routing statistics; see {@link RoutingStats}. */
  readonly stats: RoutingStats;
  /**
   * The factor the layer multiplies the expert input by before the experts: `K` for the MoE++ router
   * with `moe_feature_no_mul_topk = false` and Mixtral gating off (as the official `MOELayer` does),
   * 1 otherwise.
   */
  readonly expertInputScale: number;
}

/** A router: decides which experts see which tokens, with which weights. */
export interface Router {
  /** `E`, the number of experts routed over. */
  readonly numExperts: number;
  /** `K`, assignments per token (`E` for expert choice, see its docs). */
  readonly topK: number;
  /** Trainable variables, by stable local name (e.g. `{ wg: [D, E] }`), in tfjs `[in, out]` layout. */
  readonly weights: Readonly<Record<string, tf.Variable>>;
  /**
   * Routes a batch of tokens.
   *
   * @param x - `[N, D]` float32 token representations
   * @param options - see {@link RouteOptions}
   * @returns see {@link RouterOutput}; the caller owns every tensor in it
   * @throws ShapeError when `x`, `previousLogits` or `tokenMask` has the wrong shape or dtype
   */
  route(x: tf.Tensor2D, options?: RouteOptions): RouterOutput;
  /** Disposes the router's variables. */
  dispose(): void;
}

/**
 * Disposes every tensor of a {@link RouterOutput}.
 *
 * @param output - the output to dispose
 */
export function disposeRouterOutput(output: RouterOutput): void {
  output.expertIndices.dispose();
  output.combineWeights.dispose();
  output.keepMask.dispose();
  output.logits.dispose();
  output.probabilities.dispose();
  for (const loss of Object.values(output.auxLosses)) loss.dispose();
  output.stats.tokensPerExpert.dispose();
  output.stats.droppedAssignments.dispose();
  output.stats.ffnExpertsPerToken.dispose();
  output.stats.entropy.dispose();
}
