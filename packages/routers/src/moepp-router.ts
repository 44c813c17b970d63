/**
 * The MoE++ pathway-aware router (arXiv 2410.07348, §3.2; official code `MoE++/moe_plus_plus_layer.py`,
 * `Router` and `gating`), with every switch of the official config.
 *
 *     G(x^1) = W^1 x^1                                   first MoE++ layer
 *     G(x^j) = W^j x^j + W_g^j G(x^{j-1})                later layers (gating residual, Eq. 6)
 *
 * `W` is one linear map or, with `moe_2layer_gate`, `Linear(D, 8E) → tanh → Linear(8E, E)`; `W_g` is
 * `gate_map`, an `[E, E]` linear map. The router runs in float32 (tfjs has no lower-precision floats on
 * cpu/wasm; the official code casts its router to float32 for the same stability reason).
 *
 * Then, in the official `gating` function:
 * 1. `moe_use_logits_norm`: each token's logits are divided by `std(logits) / moe_gate_norm_std`, with
 *    torch's unbiased `std` (divides by `E − 1`).
 * 2. Default gating: `p = softmax(logits)` over all `E`; take the top `K` of `p`; then either
 *    - `zeroExpertGate: 'drop-and-renormalize'` (the code): the zero experts' gates are set to 0 and the
 *      `K` gates renormalised to sum to 1 (renormalised even when no zero expert was picked), so a token
 *      that picks {FFN e, zero} gets FFN e with weight exactly 1; or
 *    - `'raw-softmax'` (the paper's Eq. 1): the raw softmax probabilities, not renormalised.
 * 3. `moe_use_mixtral_gating`: top `K` of the (normalised) logits, softmax over those `K`; no zero-expert rule.
 *
 * `moe_feature_no_mul_topk = false` (with Mixtral gating off) makes the official layer multiply the expert
 * input by `K`; this router reports it as {@link RouterOutput.expertInputScale} for the layer to apply.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkOneOf, ConfigError, describe, isZeroComputation, type ExpertKind, type SeededRandom } from '@moepp/tensors-core';
import type { CapacityConfig, CapacityPriority } from './capacity.js';
import { checkPositiveInteger, checkRouteInputs, createWeight, kindIndicator, selectTopK, tidyRecord } from './common.js';
import { heterogeneousLoadBalanceLoss, routerZLoss } from './losses.js';
import { GATE_SUM_FLOOR, hostTokenChoiceRouting } from './host-routing.js';
import { finishTokenChoice, resolveTokenChoiceConfig, type TokenChoiceDecision } from './token-choice.js';
import type { RouteOptions, Router, RouterOutput, RoutingStats } from './types.js';

/** How the default (non-Mixtral) gating treats the zero expert's gate; see the module notes. */
export type ZeroExpertGateRule = 'drop-and-renormalize' | 'raw-softmax';

/** The accepted {@link ZeroExpertGateRule} values. */
export const ZERO_EXPERT_GATE_RULES: readonly ZeroExpertGateRule[] = ['drop-and-renormalize', 'raw-softmax'];

/** The hidden width of the 2-layer gate is this many times `E` (`Linear(D, 8E)` in the official code). */
export const TWO_LAYER_GATE_WIDTH_PER_EXPERT = 8;

/**
 * Configuration of a {@link MoEPlusPlusRouter}. Defaults follow the released MoE++ 7B `config.json`;
 * each field names the official field it maps to (see {@link moeppRouterConfigFromOfficial}).
 */
export interface MoEPlusPlusRouterConfig {
  /** `D` (`hidden_size`). */
  readonly dim: number;
  /** `E`, all experts of the layer, FFN and zero-computation (`num_experts[0]`). */
  readonly numExperts: number;
  /** `K`, in `[1, E]` (`MOE_TOP_K`, a constant 2 in the official code). Default 2. */
  readonly topK?: number;
  /**
   * The kind of each expert. The official layout is `[ffn × (E−4), constant × 2, copy, zero]`
   * (pass `ExpertPool.kinds` from `@moepp/experts`). Drives the zero-expert gate rule, the heterogeneous
   * loss and capacity, and the FFN-per-token statistic. Default all `'ffn'`.
   */
  readonly expertKinds?: readonly ExpertKind[];
  /** `moe_2layer_gate`: `W` is `Linear(D, 8E) → tanh → Linear(8E, E)`. Default `false` (7B config; the `MOE` class default is `true`). */
  readonly twoLayerGate?: boolean;
  /** `moe_use_logits_norm`: per-token logit std normalisation. Default `true` (7B config). */
  readonly useLogitsNorm?: boolean;
  /** `moe_gate_norm_std`: the target std of the normalised logits, > 0. Default 1.0. */
  readonly gateNormStd?: number;
  /** `moe_use_mixtral_gating`: top-K of the logits, then softmax over K. Default `false`. */
  readonly useMixtralGating?: boolean;
  /**
   * `moe_feature_no_mul_topk`: when `false` (and Mixtral gating off), the expert input is multiplied by `K`
   * ({@link RouterOutput.expertInputScale}). Default `true` (7B config; the `MOE` class default is `false`).
   */
  readonly featureNoMulTopK?: boolean;
  /** Create `gate_map` and add the gating residual when `previousLogits` is given (Eq. 6). Default `true`. */
  readonly gatingResidual?: boolean;
  /** See {@link ZeroExpertGateRule}. Default `'drop-and-renormalize'` (the official code). */
  readonly zeroExpertGate?: ZeroExpertGateRule;
  /** `τ >= 0` of the heterogeneous load-balance loss (Eq. 7). Default 0.75 (the paper). */
  readonly tau?: number;
  /** Expert capacity. Default `{ mode: 'dropless' }` (the official inference code). */
  readonly capacity?: CapacityConfig;
  /** Who wins when an expert overflows. Default `'slot-major'`. */
  readonly capacityPriority?: CapacityPriority;
  /** `initializer_range`: std of the normal initialisation of every router weight. Default 0.02. */
  readonly initializerRange?: number;
  /**
   * Compute the routing tail (logits norm, softmax, top-k, gates, aux losses) as one host-side op with
   * its own gradient ({@link hostTokenChoiceRouting}) instead of ~200 tfjs kernels per layer (forward
   * and backward). Same values to float32 rounding. Used when there is no `tokenMask` and
   * `useMixtralGating` is off; the composite form otherwise. Default true.
   */
  readonly hostRouting?: boolean;
  /** Generator for the initial weights. */
  readonly rng: SeededRandom;
}

/** The router weights of {@link MoEPlusPlusRouter}, tfjs `[in, out]` (PyTorch `Linear` weights are the transposes). */
export interface MoEPlusPlusRouterWeights {
  /** `[D, E]` one-layer gate (`gate.wg.weight`ᵀ). */
  readonly wg?: tf.Variable;
  /** `[D, 8E]` first layer of the 2-layer gate (`gate.wg.0.weight`ᵀ). */
  readonly wg0?: tf.Variable;
  /** `[8E, E]` second layer of the 2-layer gate (`gate.wg.2.weight`ᵀ). */
  readonly wg2?: tf.Variable;
  /** `[E, E]` `W_g` of Eq. 6 (`gate.gate_map.weight`ᵀ): `logits += previousLogits · gateMap`. */
  readonly gateMap?: tf.Variable;
}

/**
 * The MoE++ router. Aux losses: `loadBalance` ({@link heterogeneousLoadBalanceLoss} with `τ`, on the
 * routing softmax) and `zLoss` ({@link routerZLoss} on the logits entering the softmax, i.e. after
 * normalisation).
 */
export class MoEPlusPlusRouter implements Router {
  readonly numExperts: number;
  readonly topK: number;
  /** `D`, the token width. */
  readonly dim: number;
  /** The kind of each expert. */
  readonly expertKinds: readonly ExpertKind[];
  /** `moe_2layer_gate`. */
  readonly twoLayerGate: boolean;
  /** `moe_use_logits_norm`. */
  readonly useLogitsNorm: boolean;
  /** `moe_gate_norm_std`. */
  readonly gateNormStd: number;
  /** `moe_use_mixtral_gating`. */
  readonly useMixtralGating: boolean;
  /** `moe_feature_no_mul_topk`. */
  readonly featureNoMulTopK: boolean;
  /** Whether `gate_map` exists and the gating residual is added. */
  readonly gatingResidual: boolean;
  /** See {@link ZeroExpertGateRule}. */
  readonly zeroExpertGate: ZeroExpertGateRule;
  /** `τ` of the heterogeneous load-balance loss. */
  readonly tau: number;
  /** The validated capacity config. */
  readonly capacity: CapacityConfig;
  /** Who wins when an expert overflows. */
  readonly capacityPriority: CapacityPriority;
  /** Whether the routing tail runs as the host-side op (see {@link MoEPlusPlusRouterConfig.hostRouting}). */
  readonly hostRouting: boolean;
  /** `K` when the expert input is multiplied by `K` (see {@link RouterOutput.expertInputScale}), else 1. */
  readonly expertInputScale: number;
  readonly weights: Readonly<MoEPlusPlusRouterWeights & Record<string, tf.Variable>>;

  /**
   * @param config - see {@link MoEPlusPlusRouterConfig}
   * @throws ConfigError for a bad size, `topK` outside `[1, E]`, a negative `tau` or capacity factor,
   *   a non-positive `gateNormStd`, logit normalisation with `E = 1` (the unbiased std needs 2 experts),
   *   an unknown zero-expert gate rule or capacity mode, `expertKinds` of the wrong length
   */
  constructor(config: MoEPlusPlusRouterConfig) {
    const op = 'MoEPlusPlusRouter';
    const common = resolveTokenChoiceConfig(op, config);
    this.dim = common.dim;
    this.numExperts = common.numExperts;
    this.topK = common.topK;
    this.expertKinds = common.expertKinds;
    this.capacity = common.capacity;
    this.capacityPriority = common.capacityPriority;
    const std = common.initializerRange;
    this.twoLayerGate = checkBoolean(op, 'twoLayerGate', config.twoLayerGate ?? false);
    this.useLogitsNorm = checkBoolean(op, 'useLogitsNorm', config.useLogitsNorm ?? true);
    this.gateNormStd = checkNumber(op, 'gateNormStd', config.gateNormStd ?? 1, { greaterThan: 0 });
    if (this.useLogitsNorm && this.numExperts < 2) {
      throw new ConfigError(`${op}: 'useLogitsNorm' needs numExperts >= 2 (unbiased std over experts), got numExperts ${this.numExperts}`);
    }
    this.useMixtralGating = checkBoolean(op, 'useMixtralGating', config.useMixtralGating ?? false);
    this.featureNoMulTopK = checkBoolean(op, 'featureNoMulTopK', config.featureNoMulTopK ?? true);
    this.gatingResidual = checkBoolean(op, 'gatingResidual', config.gatingResidual ?? true);
    this.zeroExpertGate = checkOneOf(op, 'zeroExpertGate', config.zeroExpertGate ?? 'drop-and-renormalize', ZERO_EXPERT_GATE_RULES);
    this.tau = checkNumber(op, 'tau', config.tau ?? 0.75, { min: 0 });
    this.hostRouting = checkBoolean(op, 'hostRouting', config.hostRouting ?? true);
    this.expertInputScale = !this.useMixtralGating && !this.featureNoMulTopK ? this.topK : 1;

    const hidden = TWO_LAYER_GATE_WIDTH_PER_EXPERT * this.numExperts;
    const weights: Record<string, tf.Variable> = this.twoLayerGate
      ? { wg0: createWeight([this.dim, hidden], config.rng, std), wg2: createWeight([hidden, this.numExperts], config.rng, std) }
      : { wg: createWeight([this.dim, this.numExperts], config.rng, std) };
    if (this.gatingResidual) weights.gateMap = createWeight([this.numExperts, this.numExperts], config.rng, std);
    this.weights = weights;
  }

  /**
   * The logits `G(x)` of Eq. 6, before any normalisation.
   *
   * @param x - `[N, D]` float32
   * @param previousLogits - `[N, E]` the previous MoE++ layer's logits, or null
   * @returns `[N, E]` float32
   */
  private gateLogits(x: tf.Tensor2D, previousLogits: tf.Tensor2D | null | undefined): tf.Tensor2D {
    const { wg, wg0, wg2, gateMap } = this.weights;
    let logits: tf.Tensor2D; // [N, E]
    if (this.twoLayerGate) {
      const hidden = tf.tanh(tf.matMul(x, wg0 as tf.Variable)); // [N, 8E]
      logits = tf.matMul(hidden, wg2 as tf.Variable);
    } else {
      logits = tf.matMul(x, wg as tf.Variable);
    }
    if (gateMap && previousLogits) logits = tf.add(logits, tf.matMul(previousLogits, gateMap)); // + W_g · G(x^{j-1})
    return logits;
  }

  /**
   * Routes `[N, D]` tokens. See {@link Router.route} and the module notes.
   *
   * @param x - `[N, D]` float32
   * @param options - `previousLogits` `[N, E]` (gating residual; ignored when `gatingResidual` is off),
   *   `tokenMask` and `auxiliary` (false: no `loadBalance` / `zLoss`) are honoured; `training` and
   *   `rng` have no effect (no noise)
   * @returns the routing decision; `logits` are `G(x)` before normalisation, for the next layer
   * @throws ShapeError for a mis-shaped `x`, `previousLogits` or `tokenMask`
   */
  route(x: tf.Tensor2D, options: RouteOptions = {}): RouterOutput {
    checkRouteInputs('MoEPlusPlusRouter.route', x, this.dim, this.numExperts, options);
    return tidyRecord(() => {
      const logits = this.gateLogits(x, options.previousLogits); // [N, E] G(x)
      const auxiliary = options.auxiliary ?? true;
      const decision =
        this.hostRouting && !this.useMixtralGating && options.tokenMask === undefined
          ? this.routeOnHost(logits, auxiliary)
          : this.routeComposite(logits, auxiliary, options.tokenMask);
      return finishTokenChoice(decision, {
        expertKinds: this.expertKinds,
        topK: this.topK,
        capacity: this.capacity,
        capacityPriority: this.capacityPriority,
        tokenMask: options.tokenMask,
        expertInputScale: this.expertInputScale,
      });
    });
  }

  /** The routing tail as one host-side op (see {@link hostTokenChoiceRouting}); no token mask, no Mixtral gating. */
  private routeOnHost(logits: tf.Tensor2D, auxiliary: boolean): TokenChoiceDecision {
    const routed = hostTokenChoiceRouting(logits, {
      topK: this.topK,
      gateNormStd: this.useLogitsNorm ? this.gateNormStd : null,
      dropExperts: this.zeroExpertGate === 'drop-and-renormalize' ? this.expertKinds.map((kind) => kind === 'zero') : null,
      balanceWeights: this.expertKinds.map((kind) => (isZeroComputation(kind) ? this.tau : 1)),
    });
    // Dropless (and no token mask here): every assignment is kept, so the statistics are host numbers too.
    const numTokens = logits.shape[0];
    const counts = routed.assignmentsPerExpert;
    const stats: RoutingStats | undefined =
      this.capacity.mode === 'dropless'
        ? {
            tokensPerExpert: tf.tensor1d([...counts], 'float32'),
            droppedAssignments: tf.scalar(0),
            ffnExpertsPerToken: tf.scalar(this.expertKinds.reduce((sum, kind, e) => sum + (kind === 'ffn' ? (counts[e] as number) : 0), 0) / numTokens),
            entropy: tf.scalar(routed.meanEntropy),
          }
        : undefined;
    return {
      logits,
      probabilities: routed.probabilities,
      expertIndices: routed.expertIndices,
      selection: routed.selection,
      gates: routed.gates,
      auxLosses: auxiliary ? { loadBalance: routed.loadBalance, zLoss: routed.zLoss } : {},
      ...(stats ? { stats } : {}),
    };
  }

  /** The routing tail as tfjs ops (the reference form; the only one for a token mask or Mixtral gating). */
  private routeComposite(logits: tf.Tensor2D, auxiliary: boolean, tokenMask: tf.Tensor1D | undefined): TokenChoiceDecision {
    let routingLogits = logits; // [N, E] what enters the softmax / top-k
    if (this.useLogitsNorm) {
      // torch's logits.std(dim=1) is unbiased (divides by E − 1). The floor on the variance only
      // matters for constant logits (e.g. an all-zero padding row), where torch would divide by 0.
      const mean = tf.mean(logits, 1, true);
      const variance = tf.div(tf.sum(tf.square(tf.sub(logits, mean)), 1, true), this.numExperts - 1); // [N, 1]
      const std = tf.sqrt(tf.maximum(variance, 1e-24));
      routingLogits = tf.div(logits, tf.div(std, this.gateNormStd));
    }
    const probabilities = tf.softmax(routingLogits) as tf.Tensor2D; // [N, E]

    // `selection` [N, K, E] float32, the one-hot of expertIndices, is computed once and shared by the
    // gate gather, the zero-expert rule, the load-balance loss and the statistics.
    const top = selectTopK(this.useMixtralGating ? routingLogits : probabilities, this.topK);
    const { indices: expertIndices, selection } = top; // [N, K] int32, [N, K, E] float32
    let gates: tf.Tensor2D; // [N, K]
    if (this.useMixtralGating) {
      gates = tf.softmax(top.values) as tf.Tensor2D;
    } else {
      gates = top.values;
      if (this.zeroExpertGate === 'drop-and-renormalize') {
        const isZeroExpert = kindIndicator(this.expertKinds, (kind) => kind === 'zero'); // [E]
        const pickedZero = tf.sum(tf.mul(selection, isZeroExpert), 2); // [N, K]
        gates = tf.mul(gates, tf.sub(1, pickedZero));
        // A token whose K picks are all zero experts would divide 0 by 0 (NaN in torch); it gets gates 0.
        // Dividing by 1 there (not by a tiny floor) keeps the gradient finite too: d(a/b)/db = −a/b²
        // is 0/0 in float32 for a = 0, b = 1e-30.
        const sum = tf.sum(gates, 1, true); // [N, 1]
        gates = tf.div(gates, tf.where(tf.greaterEqual(sum, GATE_SUM_FLOOR), sum, tf.onesLike(sum)));
      }
    }
    const auxLosses: Record<string, tf.Scalar> = auxiliary
      ? {
          loadBalance: heterogeneousLoadBalanceLoss(probabilities, expertIndices, this.expertKinds, this.tau, tokenMask, selection),
          zLoss: routerZLoss(routingLogits, tokenMask),
        }
      : {};
    return { logits, probabilities, expertIndices, selection, gates, auxLosses };
  }

  /** Disposes the router's variables. */
  dispose(): void {
    for (const variable of Object.values(this.weights)) variable.dispose();
  }
}

function checkBoolean(op: string, argument: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new ConfigError(`${op}: '${argument}' must be a boolean, got ${describe(value)}`);
  return value;
}

/** The router fields of an official MoE++ `config.json` (other fields are ignored). */
export interface OfficialMoEPlusPlusConfig {
  /** `D`. */
  readonly hidden_size: number;
  /** A list in the official config (`num_experts[0]` is used), or a number. */
  readonly num_experts: number | readonly number[];
  /** → {@link MoEPlusPlusRouterConfig.twoLayerGate}. */
  readonly moe_2layer_gate?: boolean;
  /** → {@link MoEPlusPlusRouterConfig.useLogitsNorm}. */
  readonly moe_use_logits_norm?: boolean;
  /** → {@link MoEPlusPlusRouterConfig.gateNormStd}. */
  readonly moe_gate_norm_std?: number;
  /** → {@link MoEPlusPlusRouterConfig.useMixtralGating}. */
  readonly moe_use_mixtral_gating?: boolean;
  /** → {@link MoEPlusPlusRouterConfig.featureNoMulTopK}. */
  readonly moe_feature_no_mul_topk?: boolean;
  /** → {@link MoEPlusPlusRouterConfig.initializerRange}. */
  readonly initializer_range?: number;
}

/**
 * Maps the router fields of an official MoE++ `config.json` to a {@link MoEPlusPlusRouterConfig}
 * (without `rng` and `expertKinds`, which the caller adds). Absent fields keep this package's defaults.
 *
 * @param official - the parsed `config.json`
 * @returns the matching config fields
 * @throws ConfigError when `hidden_size` or `num_experts` is missing or malformed
 */
export function moeppRouterConfigFromOfficial(
  official: OfficialMoEPlusPlusConfig,
): Omit<MoEPlusPlusRouterConfig, 'rng' | 'expertKinds'> {
  const op = 'moeppRouterConfigFromOfficial';
  const numExperts = Array.isArray(official.num_experts) ? official.num_experts[0] : official.num_experts;
  return {
    dim: checkPositiveInteger(op, 'hidden_size', official.hidden_size),
    numExperts: checkPositiveInteger(op, 'num_experts', numExperts),
    ...(official.moe_2layer_gate !== undefined ? { twoLayerGate: official.moe_2layer_gate } : {}),
    ...(official.moe_use_logits_norm !== undefined ? { useLogitsNorm: official.moe_use_logits_norm } : {}),
    ...(official.moe_gate_norm_std !== undefined ? { gateNormStd: official.moe_gate_norm_std } : {}),
    ...(official.moe_use_mixtral_gating !== undefined ? { useMixtralGating: official.moe_use_mixtral_gating } : {}),
    ...(official.moe_feature_no_mul_topk !== undefined ? { featureNoMulTopK: official.moe_feature_no_mul_topk } : {}),
    ...(official.initializer_range !== undefined ? { initializerRange: official.initializer_range } : {}),
  };
}
