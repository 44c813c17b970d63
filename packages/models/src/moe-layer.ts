/**
 * The MoE / MoE++ feed-forward layer: a router and a pool of experts, with sparse dispatch.
 *
 *     route:     indices [N, K], gates [N, K], keep [N, K], logits [N, E]  <- router(x, previousLogits)
 *     plan:      per expert e, the (token, slot) pairs routed to it       <- planDispatch (one sort, E counts read back)
 *     experts:   y_e = E_e(x[tokens_e]) · gates[slots_e]                   one matmul chain per FFN expert,
 *                                                                          nothing at all for the zero expert
 *     combine:   y = scatter-add of all y_e into [N, D]                   one unsorted segment sum
 *
 * Compute scales with the tokens actually routed to FFN experts: that is the point of MoE++.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkShape, planDispatch, SeededRandom, ConfigError, type ExpertKind } from '@moepp/tensors-core';
import { createExpertPool, type Expert } from '@moepp/experts';
import { MoEPlusPlusRouter, type CapacityConfig, type Router, type RouterOutput } from '@moepp/routers';
import { totalExperts, type MoeSettings } from './config.js';
import type { NamedParameter } from './parameters.js';

/** Configuration of one {@link MoeLayer}: the model's MoE settings plus the layer's widths. */
export interface MoeLayerConfig extends MoeSettings {
  /** D. */
  readonly hiddenSize: number;
  /** F, the width of one FFN expert. */
  readonly intermediateSize: number;
  /** Std of the normal initialisation. Default 0.02. */
  readonly initializerRange?: number;
}

/** Options of {@link MoeLayer.forward}. */
export interface MoeForwardOptions {
  /** `[N, E]` the previous MoE++ layer's router logits (gating residual), or null for the first layer. */
  readonly previousLogits?: tf.Tensor2D | null;
  /** Training mode. Default false. */
  readonly training?: boolean;
  /** For router noise. */
  readonly rng?: SeededRandom;
  /** `[N]` float32, 1 for real tokens, 0 for padding. */
  readonly tokenMask?: tf.Tensor1D;
  /**
   * Benchmark-only: ignore the router's choice and route uniformly (as MegaBlocks'
   * `uniform_expert_assignment`), so that speed can be compared without training. `true` spreads slots
   * evenly over all experts; `{ ffnShare: r }` sends exactly the share r of the slots to FFN experts
   * (evenly), the rest evenly to the zero-computation experts. Gates are `1/K`.
   */
  readonly uniformRouting?: boolean | { readonly ffnShare: number };
}

/** What {@link MoeLayer.forward} returns. Tensors belong to the caller (run it inside `tf.tidy`). */
export interface MoeLayerOutput {
  /** `[N, D]` the layer's output (add it to the residual stream). */
  readonly output: tf.Tensor2D;
  /** `[N, E]` float32 router logits, for the next layer's gating residual and for analyses. */
  readonly logits: tf.Tensor2D;
  /** `[N, E]` float32 the router's softmax over all experts (routing scores, for analyses). */
  readonly probabilities: tf.Tensor2D;
  /** `[N, K]` int32 chosen experts. */
  readonly expertIndices: tf.Tensor2D;
  /** `[N, K]` float32 1 where the assignment was dispatched, 0 where dropped (capacity, padding). */
  readonly keepMask: tf.Tensor2D;
  /** `[N, K]` float32 gates as applied (0 where dropped). */
  readonly combineWeights: tf.Tensor2D;
  /** Unweighted aux losses from the router (e.g. `loadBalance`, `zLoss`). */
  readonly auxLosses: Readonly<Record<string, tf.Scalar>>;
  /** Routing statistics as tensors (see `@moepp/routers`). */
  readonly stats: RouterOutput['stats'];
  /** Assignments per expert in this call (host numbers, length E). */
  readonly tokensPerExpert: readonly number[];
  /** Wall time of the expert computation (dispatch, experts, combine) in this forward pass, ms. */
  readonly expertForwardMs: number;
}

/**
 * One MoE (FFN experts only) or MoE++ (FFN + zero / copy / constant experts) layer.
 */
export class MoeLayer {
  /** The layer's config, with defaults filled. */
  readonly config: MoeLayerConfig;
  /** The router. */
  readonly router: Router;
  /** The experts in the official order: FFN, constant, copy, zero. */
  readonly experts: readonly Expert[];
  /** The kind of each expert, same order. */
  readonly kinds: readonly ExpertKind[];

  /**
   * @param config - widths and MoE settings
   * @param rng - draws the initial weights of the router and the experts
   * @throws `ConfigError` for invalid settings
   */
  constructor(config: MoeLayerConfig, rng: SeededRandom) {
    this.config = config;
    const pool = createExpertPool({
      dim: config.hiddenSize,
      ffnDim: config.intermediateSize,
      counts: config.experts,
      activation: 'swiglu',
      rng,
      initializerRange: config.initializerRange ?? 0.02,
    });
    this.experts = pool.experts;
    this.kinds = pool.kinds;
    const capacity: CapacityConfig =
      config.capacityFactor === null
        ? { mode: 'dropless' }
        : config.heterogeneousCapacity
          ? { mode: 'heterogeneous', capacityFactor: config.capacityFactor, tau: config.tau }
          : { mode: 'uniform', capacityFactor: config.capacityFactor };
    this.router = new MoEPlusPlusRouter({
      dim: config.hiddenSize,
      numExperts: totalExperts(config.experts),
      topK: config.topK,
      expertKinds: pool.kinds,
      twoLayerGate: config.twoLayerGate,
      useLogitsNorm: config.logitsNorm,
      gateNormStd: config.gateNormStd,
      useMixtralGating: config.mixtralGating,
      featureNoMulTopK: !config.scaleInputByTopK,
      gatingResidual: config.gatingResidual,
      zeroExpertGate: config.zeroGateRule,
      tau: config.tau,
      capacity,
      initializerRange: config.initializerRange ?? 0.02,
      rng,
    });
  }

  /** E, the number of experts. */
  get numExperts(): number {
    return this.experts.length;
  }

  /**
   * Runs the layer.
   *
   * @param x - `[N, D]` float32 token states (already normalised)
   * @param options - gating residual input, training mode, padding mask, benchmark routing
   * @returns the output and everything the router reported, see {@link MoeLayerOutput}
   * @throws `ShapeError` when x is not `[N, D]` or previousLogits not `[N, E]`
   */
  forward(x: tf.Tensor2D, options: MoeForwardOptions = {}): MoeLayerOutput {
    checkShape('MoeLayer.forward', 'x', x, [null, this.config.hiddenSize]);
    const numTokens = x.shape[0];
    const topK = this.config.topK;
    const routed = this.router.route(x, {
      training: options.training ?? false,
      previousLogits: options.previousLogits ?? null,
      ...(options.tokenMask ? { tokenMask: options.tokenMask } : {}),
      ...(options.rng ? { rng: options.rng } : {}),
    });
    let expertIndices = routed.expertIndices; // [N, K] int32
    let combineWeights = routed.combineWeights; // [N, K] float32
    let keepMask = routed.keepMask; // [N, K] float32
    if (options.uniformRouting) {
      const share = options.uniformRouting === true ? null : options.uniformRouting.ffnShare;
      expertIndices = uniformAssignment(numTokens, topK, this.kinds, share);
      combineWeights = tf.fill([numTokens, topK], 1 / topK) as tf.Tensor2D;
      keepMask = tf.onesLike(combineWeights);
    }

    const started = performance.now();
    // The official code multiplies the expert input by K unless moe_feature_no_mul_topk (the router says).
    const expertInput = routed.expertInputScale === 1 ? x : (tf.mul(x, routed.expertInputScale) as tf.Tensor2D); // [N, D]
    const plan = planDispatch(expertIndices, this.numExperts, keepMask);
    const flatGates = combineWeights.reshape([numTokens * topK]); // [N·K]
    const outputs: tf.Tensor2D[] = [];
    const destinations: tf.Tensor1D[] = [];
    this.experts.forEach((expert, e) => {
      const count = plan.counts[e] as number;
      if (count === 0 || expert.kind === 'zero') return; // a zero expert costs nothing at all
      const tokenIds = plan.tokenIds[e] as tf.Tensor1D; // [n_e] int32
      const rows = tf.gather(expertInput, tokenIds) as tf.Tensor2D; // [n_e, D]
      const gates = tf.gather(flatGates, plan.slotIds[e] as tf.Tensor1D).reshape([count, 1]); // [n_e, 1]
      outputs.push(tf.mul(expert.apply(rows), gates) as tf.Tensor2D); // [n_e, D]
      destinations.push(tokenIds);
    });
    const output =
      outputs.length === 0
        ? (tf.zerosLike(x) as tf.Tensor2D)
        : (tf.unsortedSegmentSum(
            outputs.length === 1 ? (outputs[0] as tf.Tensor2D) : tf.concat(outputs, 0),
            destinations.length === 1 ? (destinations[0] as tf.Tensor1D) : tf.concat(destinations, 0),
            numTokens,
          ) as tf.Tensor2D); // [N, D]
    // Reading one value back makes the timing include the (synchronous on cpu/wasm) kernels.
    output.dataSync();
    const expertForwardMs = performance.now() - started;

    return {
      output,
      logits: routed.logits,
      probabilities: routed.probabilities,
      expertIndices,
      keepMask,
      combineWeights,
      auxLosses: routed.auxLosses,
      stats: routed.stats,
      tokensPerExpert: plan.counts,
      expertForwardMs,
    };
  }

  /**
   * The layer's parameters under the official names, relative to `prefix` (e.g. `model.layers.0.mlp.moe`):
   * `gate.wg.weight` (or `gate.wg.0.weight` / `gate.wg.2.weight`), `gate.gate_map.weight`,
   * `experts.experts.{e}.up_proj.weight` / `down_proj.weight`, `experts.experts.{c}.constant`, `experts.experts.{c}.wg.weight`.
   *
   * @param prefix - the layer's name prefix
   * @returns the named parameters
   */
  parameters(prefix: string): NamedParameter[] {
    const out: NamedParameter[] = [];
    for (const [local, variable] of Object.entries(this.router.weights)) {
      out.push({ name: `${prefix}.gate.${ROUTER_NAMES[local] ?? local}`, variable, transposed: variable.shape.length === 2 });
    }
    this.experts.forEach((expert, e) => {
      for (const [local, variable] of Object.entries(expert.weights)) {
        out.push({
          name: `${prefix}.experts.experts.${e}.${EXPERT_NAMES[local] ?? local}`,
          variable,
          transposed: variable.shape.length === 2,
        });
      }
    });
    return out;
  }

  /** Frees the router's and the experts' weights. */
  dispose(): void {
    this.router.dispose();
    this.experts.forEach((expert) => expert.dispose());
  }
}

/** The kit's local weight names -> the official PyTorch module paths. */
const ROUTER_NAMES: Readonly<Record<string, string>> = {
  wg: 'wg.weight',
  wg0: 'wg.0.weight',
  wg2: 'wg.2.weight',
  gateMap: 'gate_map.weight',
};
const EXPERT_NAMES: Readonly<Record<string, string>> = {
  upProj: 'up_proj.weight',
  downProj: 'down_proj.weight',
  constant: 'constant',
  wg: 'wg.weight',
};

/**
 * A fixed, balanced assignment for speed benchmarks: slot `s = n·K + k` goes to an FFN expert for the
 * share `ffnShare` of slots (spread evenly, Bresenham-style) and to a zero-computation expert otherwise,
 * round-robin within each group.
 *
 * @param numTokens - N
 * @param topK - K
 * @param kinds - the kind of each expert
 * @param ffnShare - the share of slots for FFN experts, or null to spread over all experts evenly
 * @returns `[N, K]` int32
 */
export function uniformAssignment(
  numTokens: number,
  topK: number,
  kinds: readonly ExpertKind[],
  ffnShare: number | null,
): tf.Tensor2D {
  const ffn = kinds.flatMap((k, i) => (k === 'ffn' ? [i] : []));
  const other = kinds.flatMap((k, i) => (k === 'ffn' ? [] : [i]));
  const values = new Int32Array(numTokens * topK);
  if (ffnShare === null) {
    for (let s = 0; s < values.length; s++) values[s] = s % kinds.length;
  } else {
    checkNumber('uniformAssignment', 'ffnShare', ffnShare, { min: 0, max: 1 });
    if (ffnShare < 1 && other.length === 0) {
      throw new ConfigError(`uniformAssignment: 'ffnShare' ${ffnShare} < 1 needs zero-computation experts, the layer has none`);
    }
    let ffnNext = 0;
    let otherNext = 0;
    for (let s = 0; s < values.length; s++) {
      const toFfn = Math.floor((s + 1) * ffnShare) > Math.floor(s * ffnShare);
      values[s] = toFfn ? (ffn[ffnNext++ % ffn.length] as number) : (other[otherNext++ % other.length] as number);
    }
  }
  return tf.tensor2d(values, [numTokens, topK], 'int32');
}
